"""Snapshots: a Hub-ready immutable folder that datasets.load_dataset loads, with a manifest
written last, verified byte for byte, never overwritten."""

import json
import os
import re

import pyarrow.parquet as pq
import pytest

from catalog.snapshots import create_snapshot, find_snapshot
from schemas import token_codec as codec
from schemas.errors import (SnapshotError, SnapshotExistsError, SnapshotVerificationError,
                            UnknownSnapshotError)
from schemas.snapshot import (MANIFEST_NAME, SNAPSHOT_ROW_SCHEMA, manifest_sha256,
                              snapshot_problems, verify_snapshot)


@pytest.fixture
def snap(filled_catalog):
    cat, tables, config = filled_catalog
    info = create_snapshot(cat, "s1", config.id, progress=False)
    return cat, tables, config, info


def test_round_trip_through_datasets(snap):
    import datasets
    from PIL import Image

    cat, tables, config, info = snap
    ds = datasets.load_dataset(str(info.path), split="train")
    assert ds.num_rows == info.num_rows == tables["rewards"].num_rows
    assert isinstance(ds.features["image"], datasets.Image)
    row = ds[0]
    assert isinstance(row["image"], Image.Image) and row["image"].size == (32, 32)
    # every row equals what the catalog holds, joined
    expected = cat.sql(  # the stored summaries decoded in SQL: another path than the snapshot's
        "SELECT w.response_id, r.token_ids, w.advantage, w.reward, "
        f"{codec.sql_per_token('student_logprobs')} AS student_logprobs, "
        f"{codec.sql_per_token('teacher_logprobs')} AS teacher_logprobs, q.answer, "
        "im.bytes FROM rewards w JOIN responses r USING (response_id) JOIN questions q "
        "USING (question_id) JOIN images im USING (image_id) JOIN token_stats ts "
        "ON ts.stats_id = w.token_stats_id").to_pylist()
    by_id = {e["response_id"]: e for e in expected}
    plain = ds.cast_column("image", datasets.Image(decode=False))
    for got in plain:
        e = by_id[got["response_id"]]
        assert got["completion_ids"] == e["token_ids"]
        assert got["advantage"] == pytest.approx(e["advantage"])
        assert got["reward"] == pytest.approx(e["reward"])
        assert got["student_logprobs"] == pytest.approx(e["student_logprobs"])
        assert got["teacher_logprobs"] == pytest.approx(e["teacher_logprobs"])
        assert got["answer"] == e["answer"] and got["image"]["bytes"] == e["bytes"]
    # groups are contiguous, as GRPO batching wants
    groups = plain["group_id"]
    assert sum(1 for a, b in zip(groups, groups[1:]) if a != b) == len(set(groups)) - 1


def test_layout_manifest_and_card(snap):
    cat, tables, config, info = snap
    files = sorted(p.relative_to(info.path).as_posix() for p in info.path.rglob("*") if p.is_file())
    assert len(files) == 3 and files[0] == "README.md" and files[2] == MANIFEST_NAME
    shard = files[1]
    assert re.fullmatch(r"data/train-[0-9a-f]{12}-00000-of-00001\.parquet", shard)
    manifest = json.loads((info.path / MANIFEST_NAME).read_text())
    assert manifest["catalog_version"] == info.catalog_version == cat.current_version() - 1
    assert manifest["reward_config_id"] == config.id
    assert manifest["configs"]["reward_config"]["w_acc"] == config.w_acc
    assert manifest["row_counts"] == {"train": tables["rewards"].num_rows}
    assert set(manifest["files"]) == {"README.md", shard}
    assert pq.read_schema(info.path / shard).remove_metadata() \
        .equals(SNAPSHOT_ROW_SCHEMA.remove_metadata())
    card = (info.path / "README.md").read_text()
    assert card.startswith("---\nconfigs:") and "dtype: image" in card and "num_examples: " in card
    assert f"path: data/train-{shard.split('-')[1]}-*.parquet" in card
    assert {oct((info.path / f).stat().st_mode & 0o777) for f in files} == {"0o444"}


def test_snapshot_is_registered_for_lineage(snap):
    cat, _, config, info = snap
    rows = cat.sql("SELECT name, catalog_version, reward_config_id, manifest_sha256, num_rows "
                   "FROM snapshots").to_pylist()
    assert rows == [{"name": "s1", "catalog_version": info.catalog_version,
                     "reward_config_id": config.id, "manifest_sha256": manifest_sha256(info.path),
                     "num_rows": info.num_rows}]


def test_verify_names_a_changed_byte(snap):
    _, _, _, info = snap
    verify_snapshot(info.path)
    target = next((info.path / "data").glob("*.parquet"))
    os.chmod(target, 0o644)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(SnapshotVerificationError,
                       match=rf"data/{target.name}: changed \(sha256"):
        verify_snapshot(info.path)


def test_verify_names_missing_extra_and_incomplete(snap):
    _, _, _, info = snap
    os.chmod(info.path, 0o755)
    (info.path / "README.md").unlink()
    (info.path / "data" / "stray.parquet").write_bytes(b"x")
    problems = snapshot_problems(info.path)
    assert problems == ["README.md: missing", "data/stray.parquet: not in the manifest"]
    (info.path / MANIFEST_NAME).unlink()
    with pytest.raises(SnapshotVerificationError, match="manifest.json: missing - the snapshot is incomplete"):
        verify_snapshot(info.path)


def test_existing_snapshot_is_never_overwritten(snap):
    cat, tables, config, info = snap
    before = (info.path / MANIFEST_NAME).read_bytes()
    again = create_snapshot(cat, "s1", config.id, progress=False)  # same request: returned as is
    assert not again.created and again.manifest_sha256 == info.manifest_sha256
    with pytest.raises(SnapshotExistsError, match="never overwritten"):
        create_snapshot(cat, "s1", config.id, version=info.catalog_version - 1, progress=False)
    with pytest.raises(SnapshotExistsError):
        create_snapshot(cat, "s1", config.id, iteration=0, progress=False)
    assert (info.path / MANIFEST_NAME).read_bytes() == before
    assert cat.count("snapshots") == 1


def test_snapshot_of_an_old_version_and_an_iteration(filled_catalog):
    from masters.synthetic_gendata import synthetic_gendata

    cat, tables, config = filled_catalog
    v_first = cat.current_version()
    later, _ = synthetic_gendata(num_questions=6, responses_per_source=4, iteration=1, seed=3)
    with cat.commit("iteration 1") as tx:
        for name, table in later.items():
            tx.append(name, table)
    old = create_snapshot(cat, "old", config.id, version=v_first, progress=False)
    new = create_snapshot(cat, "new", config.id, progress=False)
    only1 = create_snapshot(cat, "it1", config.id, iteration=1, progress=False)
    assert old.num_rows == tables["rewards"].num_rows
    assert new.num_rows == tables["rewards"].num_rows + later["rewards"].num_rows
    assert only1.num_rows == later["rewards"].num_rows
    assert set(pq.read_table(only1.path / "data").column("iteration").to_pylist()) == {1}


def test_sharded_files_and_bad_requests(filled_catalog):
    cat, tables, config = filled_catalog
    info = create_snapshot(cat, "sharded", config.id, rows_per_file=10, progress=False)
    n = tables["rewards"].num_rows
    shards = sorted(p.name for p in (info.path / "data").iterdir())
    assert len(shards) == -(-n // 10) and shards[-1].endswith(f"-of-{len(shards):05d}.parquet")
    assert pq.read_table(info.path / "data").num_rows == n
    with pytest.raises(SnapshotError, match="known reward configs: " + config.id):
        create_snapshot(cat, "x", "nope", progress=False)
    with pytest.raises(SnapshotError, match="invalid snapshot name"):
        create_snapshot(cat, "../escape", config.id, progress=False)
    with pytest.raises(SnapshotError, match="nothing to snapshot"):
        create_snapshot(cat, "empty", config.id, iteration=42, progress=False)
    assert not any(p.name.startswith(".") for p in info.path.parent.iterdir())  # no partial left


def test_find_snapshot_lists_known_names(snap):
    cat, _, _, info = snap
    assert find_snapshot(cat, "s1") == info.path
    with pytest.raises(UnknownSnapshotError, match="s1"):
        find_snapshot(cat, "s2")


def test_failed_write_leaves_no_folder(filled_catalog, monkeypatch):
    import catalog.snapshots as snapshots

    cat, _, config = filled_catalog

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(snapshots, "render_card", broken)
    with pytest.raises(SnapshotError, match="cannot write the snapshot to .*broken: disk full"):
        create_snapshot(cat, "broken", config.id, progress=False)
    root = snapshots.snapshot_root(cat)
    assert sorted(p.name for p in root.iterdir()) == []
    assert cat.count("snapshots") == 0


def test_names_are_unique_per_catalog_across_roots(snap, tmp_path):
    cat, _, config, info = snap
    with pytest.raises(SnapshotExistsError, match="already has a snapshot named 's1'"):
        create_snapshot(cat, "s1", config.id, root=tmp_path / "elsewhere", progress=False)
    assert not (tmp_path / "elsewhere" / "s1").exists()
    other = create_snapshot(cat, "s2", config.id, root=tmp_path / "elsewhere", progress=False)
    paths = {r["name"]: r["path"] for r in cat.sql("SELECT name, path FROM snapshots").to_pylist()}
    assert paths == {"s1": str(info.path.absolute()), "s2": str(other.path.absolute())}


def test_verify_refuses_malformed_manifests(snap):
    _, _, _, info = snap
    os.chmod(info.path / MANIFEST_NAME, 0o644)
    doc = json.loads((info.path / MANIFEST_NAME).read_text())
    doc["files"]["../outside.txt"] = {"sha256": "0" * 64, "bytes": 1}
    doc["files"]["README.md"] = {"bytes": 3}
    (info.path / MANIFEST_NAME).write_text(json.dumps(doc))
    problems = snapshot_problems(info.path)
    assert "../outside.txt: manifest names a file outside the snapshot folder" in problems
    assert "README.md: manifest entry lacks sha256/bytes" in problems


def test_an_edited_manifest_is_caught_against_the_record(snap):
    _, _, _, info = snap
    os.chmod(info.path / MANIFEST_NAME, 0o644)
    doc = json.loads((info.path / MANIFEST_NAME).read_text())
    doc["row_counts"]["train"] += 1
    (info.path / MANIFEST_NAME).write_text(json.dumps(doc))
    verify_snapshot(info.path)  # self-consistent on its own...
    with pytest.raises(SnapshotVerificationError, match="manifest.json: changed"):
        verify_snapshot(info.path, expected_manifest_sha256=info.manifest_sha256)  # ...not vs the record


def test_snapshots_named_alike_never_share_a_datasets_cache(tmp_path):
    """`datasets` caches a local folder by its name and data-file pattern; the per-snapshot shard
    token keeps two snapshots called alike (two catalogs, two runs) apart."""
    import datasets

    from catalog import Catalog
    from masters.synthetic_gendata import synthetic_gendata

    loaded = []
    for seed in (1, 2):
        tables, config = synthetic_gendata(num_questions=3, seed=seed)
        with Catalog.open(tmp_path / f"cat{seed}") as cat:
            with cat.commit("gen") as tx:
                for name, table in tables.items():
                    tx.append(name, table)
            info = create_snapshot(cat, "iter0", config.id, progress=False)
        loaded.append(sorted(datasets.load_dataset(str(info.path), split="train")["response_id"]))
        assert loaded[-1] == sorted(tables["rewards"].column("response_id").to_pylist())
    assert loaded[0] != loaded[1]
