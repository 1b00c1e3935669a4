"""Nothing of this machine is published: no snapshot manifest, card, Hub export file or Parquet
cell holds the folder the catalog lives in, the home folder, a checkpoint's local path or a
password of the catalog's connection string; and an iteration's config hash names its models by
content, so the same run from another folder has the same hash. Checked on the values of every
file (JSON, YAML, Markdown, every string of every Parquet column and its metadata), not on
key names."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from catalog import Catalog
from catalog.hub_export import export_for_hub, read_meta
from catalog.snapshots import create_snapshot
from masters.synthetic_gendata import synthetic_gendata
from schemas.errors import SnapshotError

PASSWORD = "pg-s3cret-never-published"


def _strings(value) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def strings_of(folder: Path) -> Iterator[tuple[str, str]]:
    """(file, text) for every file under ``folder``: Parquet as the strings of every cell (at any
    depth) and of its metadata; any other file as its text."""
    for f in sorted(folder.rglob("*")):
        if not f.is_file():
            continue
        rel = str(f.relative_to(folder))
        if f.suffix == ".parquet":
            meta = pq.read_schema(f).metadata or {}
            for k, v in meta.items():
                yield rel, (k + b"=" + v).decode("utf-8", "replace")
            for row in pq.read_table(f).to_pylist():
                for s in _strings(row):
                    yield rel, s
        else:
            yield rel, f.read_bytes().decode("utf-8", "replace")


def assert_nothing_of(folders: list[Path], forbidden: list[str]) -> int:
    seen = 0
    for folder in folders:
        for rel, text in strings_of(folder):
            seen += 1
            for word in forbidden:
                assert word not in text, f"{folder.name}/{rel} holds {word!r}: ...{text[max(0, text.find(word) - 80):][:200]}"
    return seen


def _fill(cat: Catalog, checkpoints: Path) -> str:
    """One synthetic iteration whose models rows name checkpoint folders under ``checkpoints``, as
    registration writes them; returns the reward config id."""
    tables, config = synthetic_gendata(num_questions=3, responses_per_source=3)
    models = tables["models"]
    paths = [str(checkpoints / n) for n in models.column("name").to_pylist()]
    import pyarrow as pa

    tables["models"] = models.set_column(models.schema.get_field_index("path"), "path", pa.array(paths))
    with cat.commit("synthetic", stage="generate", iteration=0) as tx:
        for name, table in tables.items():
            tx.append(name, table)
    assert sorted(cat.sql("SELECT path FROM models").column(0).to_pylist()) == sorted(paths)  # local, in the catalog
    return config.id


def test_an_embedded_catalogs_snapshot_and_export_hold_no_local_path(tmp_path):
    with Catalog.open(tmp_path / "cat") as cat:
        rc = _fill(cat, tmp_path / "checkpoints")
        snap = create_snapshot(cat, "local", rc, progress=False)
        res = export_for_hub(cat, "local", tmp_path / "export", with_token_stats=True)
    assert snap.path.is_relative_to(tmp_path) and res.folder.is_relative_to(tmp_path)
    seen = assert_nothing_of([snap.path, res.folder], [str(tmp_path), str(Path.home()) + "/", "checkpoints/"])
    assert seen > 1000  # every cell was looked at
    manifest = json.loads((snap.path / "manifest.json").read_text())
    assert manifest["configs"]["catalog_kind"] == "ducklake"
    meta = read_meta(res.folder)
    assert meta["catalog_kind"] == "ducklake"
    assert set(pq.read_table(res.folder / "data" / "models").column("path").to_pylist()) == {""}


def test_a_password_in_the_catalog_uri_is_published_nowhere(pg_catalog, tmp_path):
    """A real PostgreSQL catalog (trust authentication: the password is accepted and unused) whose
    connection string holds a password: the snapshot, its export and the errors that name the
    catalog never show it."""
    config = pg_catalog.model_copy(update={"uri": pg_catalog.uri + f" password={PASSWORD}"})
    with Catalog.open(config) as cat:
        rc = _fill(cat, tmp_path / "checkpoints")
        snap = create_snapshot(cat, "team", rc, progress=False)
        res = export_for_hub(cat, "team", tmp_path / "export", with_token_stats=True)
        with Catalog.open(tmp_path / "elsewhere") as other:
            foreign = create_snapshot(other, "foreign", _fill(other, tmp_path / "other"), root=tmp_path / "fs",
                                      progress=False)
        with pytest.raises(SnapshotError, match="not cut from this catalog") as err:
            export_for_hub(cat, foreign.path, tmp_path / "x")
    assert PASSWORD not in str(err.value) and "password=***" in str(err.value)
    assert_nothing_of([snap.path, res.folder], [PASSWORD, str(tmp_path), str(Path.home()) + "/"])
    assert json.loads((snap.path / "manifest.json").read_text())["configs"]["catalog_kind"] == "ducklake:postgres"
    assert read_meta(res.folder)["catalog_kind"] == "ducklake:postgres"


@pytest.mark.parametrize("uri,kind", [
    ("ducklake:/home/me/runs/cat/catalog.ducklake", "ducklake"),
    ("ducklake:sqlite:/shared/meta.sqlite", "ducklake:sqlite"),
    ("ducklake:postgres:dbname=lake host=db user=me password=secret", "ducklake:postgres"),
    ("ducklake:postgres:postgresql://me:secret@db/lake", "ducklake:postgres"),
    ("postgresql://me:secret@db/lake", "postgresql"),
])
def test_the_catalog_kind_keeps_the_scheme_only(uri, kind):
    from catalog.snapshots import catalog_kind

    assert catalog_kind(uri) == kind


def test_an_export_of_a_snapshot_written_before_keeps_the_kind_only(tmp_path):
    """Snapshots written before this version hold the catalog URI in their (immutable) manifest:
    their export publishes its kind only."""
    with Catalog.open(tmp_path / "cat") as cat:
        snap = create_snapshot(cat, "old", _fill(cat, tmp_path / "checkpoints"), progress=False)
        from schemas.snapshot import MANIFEST_NAME, manifest_sha256

        manifest = snap.path / MANIFEST_NAME
        doc = json.loads(manifest.read_text())
        doc["configs"].pop("catalog_kind")
        doc["configs"]["catalog_uri"] = f"ducklake:postgres:dbname=lake host=db password={PASSWORD}"
        manifest.chmod(0o644)
        manifest.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
        cat.sql(f"UPDATE snapshots SET manifest_sha256 = '{manifest_sha256(snap.path)}'", write=True)
        res = export_for_hub(cat, "old", tmp_path / "export")
    assert read_meta(res.folder)["catalog_kind"] == "ducklake:postgres"
    assert_nothing_of([res.folder], [PASSWORD, str(tmp_path)])


def _checkpoint(folder: Path, weights: bytes) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "qwen2_vl"}')
    (folder / "model.safetensors").write_bytes(weights)
    return folder


def test_the_same_run_from_another_folder_has_the_same_config_hash(tmp_path):
    from masters.stages.scope import IterationSpec
    from schemas.ids import checkpoint_id

    def spec(root: Path, student_weights: bytes = b"student") -> IterationSpec:
        return IterationSpec(run_id="r", iteration=1, mask_ratio=0.15,
                             teacher=str(_checkpoint(root / "models" / "teacher", b"teacher")),
                             student=str(_checkpoint(root / "models" / "student", student_weights)))

    here, there = spec(tmp_path / "a"), spec(tmp_path / "elsewhere" / "b")
    assert here.config_hash() == there.config_hash()  # where the checkpoints lie does not count
    from masters.stages.scope import model_identity

    assert model_identity(here.student) == checkpoint_id(Path(here.student))  # the models table's model_id
    assert spec(tmp_path / "c", b"other student").config_hash() != here.config_hash()  # what they are does
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "a", moved)
    assert here.model_copy(update={"teacher": str(moved / "models" / "teacher")}).config_hash() == here.config_hash()
    assert here.same_config(here.legacy_config_hash())  # an iteration recorded before still resumes


@pytest.mark.parametrize("uri, secret", [
    ("ducklake:postgres:dbname=lake host=h user=u password=s3cr3t", "s3cr3t"),
    ("ducklake:postgres:dbname=lake password='s3 cr3t' host=h", "s3 cr3t"),
    ("postgresql://user:s3cr3t@db.example/lake", "s3cr3t"),
    ("postgres://:s3cr3t@db.example/lake", "s3cr3t"),
    ("postgresql://user:p@ss@db.example/lake", "p@ss"),
    ("s3://AKIAKEY:s3cr3t@bucket/data/", "s3cr3t"),
])
def test_credentials_in_a_uri_never_reach_a_message(uri, secret):
    from catalog.engine import redact

    assert secret not in redact(uri) and "***" in redact(uri)
