"""`masters publish` / `masters import` end to end against a local Hub-compatible HTTP server
(tests/hub_server.py on 127.0.0.1, `HF_ENDPOINT`, `HF_HUB_DISABLE_XET=1`): what the server
received, byte for byte, the commit messages, re-publishing, branches, errors, and the import."""

import os
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from hub_server import FakeHub  # noqa: E402

ALICE, BOB = "tok-alice-5ecret", "tok-bob-5ecret"


@pytest.fixture
def hub():
    with FakeHub({ALICE: "alice", BOB: "bob"}) as h:
        yield h


@pytest.fixture
def published_catalog(filled_catalog):
    from catalog.snapshots import create_snapshot

    cat, tables, config = filled_catalog
    snap = create_snapshot(cat, "gd1", config.id, progress=False)
    path = Path(cat.config.uri.split(":", 1)[1]).parent
    cat.close()  # the CLI opens it in its own process
    return path, config, snap


def masters(hub, tmp_path, *args, token=ALICE):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_ENDPOINT": hub.url, "HF_HUB_DISABLE_XET": "1",
           "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(tmp_path / "hf-home")}
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_DATASETS_OFFLINE"):
        env.pop(var, None)
    if token:
        env["HF_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "masters.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)


def _local_export(catalog, name, out, **kw):
    from catalog import Catalog
    from catalog.hub_export import export_for_hub

    with Catalog.open_read_only(catalog) as cat:
        export_for_hub(cat, name, out, **kw)
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_publish_then_import_round_trip(hub, published_catalog, tmp_path):
    catalog, config, snap = published_catalog
    proc = masters(hub, tmp_path, "--catalog", str(catalog), "publish", "gd1", "--repo", "alice/gen-data",
                   "--with-token-stats")
    assert proc.returncode == 0, proc.stderr[-3000:]
    received = hub.files("alice/gen-data")
    assert received == _local_export(catalog, "gd1", tmp_path / "local", with_token_stats=True)  # every byte
    assert {"README.md", "masters.yaml", "data/questions/train-00000-of-00001.parquet",
            "data/token_stats/train-00000-of-00001.parquet", "data/training/train-00000-of-00001.parquet"} <= set(received)
    commits = hub.commits("alice/gen-data")
    assert len(commits) == 2  # the repo's initial commit, then one commit for the publish
    assert commits[-1].summary.startswith(f"Publish Gen-Data snapshot gd1 (catalog version {snap.catalog_version}")
    assert snap.manifest_sha256 in commits[-1].description

    again = masters(hub, tmp_path, "--catalog", str(catalog), "publish", "gd1", "--repo", "alice/gen-data",
                    "--with-token-stats")
    assert again.returncode == 0 and "nothing to publish" in again.stdout
    assert len(hub.commits("alice/gen-data")) == 2  # no empty commit
    lighter = masters(hub, tmp_path, "--catalog", str(catalog), "publish", "gd1", "--repo", "alice/gen-data")
    assert lighter.returncode == 0 and "commit" in lighter.stdout  # same snapshot, other content: published
    assert len(hub.commits("alice/gen-data")) == 3 and "data/token_stats/train-00000-of-00001.parquet" not in \
        hub.files("alice/gen-data")
    assert masters(hub, tmp_path, "--catalog", str(catalog), "publish", "gd1", "--repo", "alice/gen-data",
                   "--with-token-stats").returncode == 0  # and back, for the import below

    other = tmp_path / "other"
    imp = masters(hub, tmp_path, "--catalog", str(other), "import", "alice/gen-data")
    assert imp.returncode == 0, imp.stderr[-3000:]
    from catalog import Catalog

    q = "SELECT reward_id, response_id, reward, advantage FROM rewards WHERE reward_config_id = $rc ORDER BY 1"
    with Catalog.open_read_only(catalog) as a, Catalog.open_read_only(other) as b:
        assert b.sql(q, params={"rc": config.id}) == a.sql(q, params={"rc": config.id})
        for table in ("responses", "token_stats", "verdicts", "questions", "images"):
            key = {"responses": "response_id", "token_stats": "stats_id", "verdicts": "verdict_id",
                   "questions": "question_id", "images": "image_id"}[table]
            sql = f"SELECT * FROM {table} ORDER BY {key}"
            mine, imported = a.sql(sql), b.sql(sql)
            assert imported.num_rows > 0
            assert imported == mine.filter(pc.is_in(mine.column(key), imported.column(key))), table
    # the token is nowhere: not in what the Hub stores, the outputs, the catalogs or the request log
    blobs = [*received.values(), proc.stdout.encode(), proc.stderr.encode(), imp.stdout.encode(), imp.stderr.encode()]
    blobs += [p.read_bytes() for d in (catalog, other) for p in d.rglob("*") if p.is_file()]
    assert not any(ALICE.encode() in b for b in blobs)


def test_new_snapshot_replaces_main_or_goes_to_a_branch(hub, published_catalog, tmp_path):
    from catalog import Catalog
    from catalog.snapshots import create_snapshot
    from masters.rescore import rescore

    catalog, config, snap = published_catalog
    assert masters(hub, tmp_path, "--catalog", str(catalog), "publish", "gd1", "--repo", "alice/gd",
                   "--with-token-stats").returncode == 0
    with Catalog.open(catalog) as cat:  # re-score with new weights: a second snapshot of the same data
        new = config.model_copy(update={"w_distill": 0.25})
        rescore(cat, new)
        create_snapshot(cat, "gd2", new.id, progress=False)
    proc = masters(hub, tmp_path, "--catalog", str(catalog), "publish", "gd2", "--repo", "alice/gd")
    assert proc.returncode == 0, proc.stderr[-2000:]
    main = hub.files("alice/gd")
    assert main == _local_export(catalog, "gd2", tmp_path / "l2")  # replaced whole: no stale token_stats
    assert not any(p.startswith("data/token_stats/") for p in main)
    assert len(hub.commits("alice/gd")) == 3
    branch = masters(hub, tmp_path, "--catalog", str(catalog), "publish", "gd1", "--repo", "alice/gd",
                     "--revision", "first-weights")
    assert branch.returncode == 0, branch.stderr[-2000:]
    assert hub.files("alice/gd", revision="first-weights") == _local_export(catalog, "gd1", tmp_path / "l1")
    assert hub.files("alice/gd") == main  # main untouched


def test_publish_errors_are_clear_and_leave_nothing_half_done(hub, published_catalog, tmp_path):
    catalog, _, _ = published_catalog
    args = ["--catalog", str(catalog), "publish", "gd1", "--repo"]
    none = masters(hub, tmp_path, *args, "alice/x", token=None)
    assert none.returncode == 2 and "no Hugging Face token" in none.stderr
    bad = masters(hub, tmp_path, *args, "alice/x", token="tok-nobody-5ecret")
    assert bad.returncode == 2 and "token was refused" in bad.stderr and "tok-nobody-5ecret" not in bad.stderr
    theirs = masters(hub, tmp_path, *args, "bob/x")
    assert theirs.returncode == 2 and "may not write there" in theirs.stderr and ALICE not in theirs.stderr
    assert ("dataset", "bob/x") not in hub.repos
    hub.fail_next("commit", status=0)  # the connection drops mid-commit
    dropped = masters(hub, tmp_path, *args, "alice/gd")
    assert dropped.returncode == 2 and "run the same command again" in dropped.stderr and ALICE not in dropped.stderr
    assert hub.files("alice/gd") == {}  # the repo exists but holds nothing half-published
    retry = masters(hub, tmp_path, *args, "alice/gd")
    assert retry.returncode == 0 and "masters.yaml" in hub.files("alice/gd")


def test_only_the_files_the_export_wrote_are_published_and_none_holds_a_local_path(hub, published_catalog, tmp_path):
    """A file left in the export folder (notes naming the catalog's folder, say) stays on this
    machine; what the Hub receives names no folder of it."""
    from catalog.hub_export import read_meta

    catalog, _, _ = published_catalog
    out = tmp_path / "export"
    _local_export(catalog, "gd1", out, with_token_stats=True)
    (out / "notes.txt").write_text(f"the catalog lives in {catalog}")
    (out / "data" / "scratch").mkdir()
    (out / "data" / "scratch" / "mine.txt").write_text(str(tmp_path))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0",
           "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(tmp_path / "hf-home"), "HF_TOKEN": ALICE}
    code = "import sys; from catalog.publish import publish_folder; publish_folder(sys.argv[1], sys.argv[2], endpoint=sys.argv[3])"
    proc = subprocess.run([sys.executable, "-c", code, str(out), "alice/only", hub.url], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    received = hub.files("alice/only")
    assert set(received) == set(read_meta(out)["files"]) | {"masters.yaml"}
    import pyarrow as pa
    import pyarrow.parquet as pq

    for name, data in received.items():  # every value, Parquet cells decoded
        texts = [data.decode("utf-8", "replace")] if not name.endswith(".parquet") else [
            str(v) for row in pq.read_table(pa.BufferReader(data)).to_pylist() for v in row.values()]
        assert not any(str(tmp_path) in t for t in texts), name
