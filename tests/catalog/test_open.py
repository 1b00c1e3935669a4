"""Opening catalogs: the lock held by another process, a missing catalog, other catalog URIs."""

import subprocess

import pytest

from catalog import Catalog
from schemas.config import CatalogConfig
from schemas.errors import CatalogError, CatalogLockedError

HOLDER = r"""
import time
from catalog import Catalog
cat = Catalog.open("{catalog}")
print("HOLDING", flush=True)
time.sleep(60)
"""


def test_locked_catalog_names_the_process_holding_it(filled_catalog, catalog_dir, run_python):
    cat, _, _ = filled_catalog
    cat.close()
    proc = run_python(HOLDER.format(catalog=catalog_dir), stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "HOLDING"
        for opener in (Catalog.open, Catalog.open_read_only):
            with pytest.raises(CatalogLockedError, match=rf"locked by another process \(PID {proc.pid}"):
                opener(catalog_dir)
    finally:
        proc.kill()
        proc.wait()
    Catalog.open(catalog_dir).close()  # free again once it is gone


def test_missing_catalog_is_not_created_by_readers(tmp_path):
    with pytest.raises(CatalogError, match="no catalog at"):
        Catalog.open_read_only(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere" / "catalog.ducklake").exists()


def test_bad_uri_says_what_is_expected(tmp_path):
    cfg = CatalogConfig(uri=str(tmp_path / "x.db"), data_path=str(tmp_path / "d"),
                        snapshot_root=str(tmp_path / "s"))
    with pytest.raises(CatalogError, match="must start with 'ducklake:'"):
        Catalog.open(cfg)


def test_sqlite_catalog_admits_several_processes(tmp_path, gendata, run_python):
    tables, _ = gendata
    cfg = CatalogConfig(uri=f"ducklake:sqlite:{tmp_path / 'meta.sqlite'}",
                        data_path=str(tmp_path / "data") + "/", snapshot_root=str(tmp_path / "snaps"))
    with Catalog.open(cfg) as cat:
        cat.append("questions", tables["questions"], "q")
        reader = run_python(
            "from catalog import Catalog\nfrom schemas.config import CatalogConfig\n"
            f"cfg = CatalogConfig.model_validate_json({cfg.model_dump_json()!r})\n"
            "print(Catalog.open(cfg).count('questions'))", stdout=subprocess.PIPE, text=True)
        out, _ = reader.communicate(timeout=60)
        assert out.strip() == str(tables["questions"].num_rows)


def test_a_catalog_from_before_a_nullable_column_is_upgraded(filled_catalog, catalog_dir):
    """A newer version's nullable column (responses.behaviour_logprobs) is added when a writer
    opens an older catalog: its rows read as null, readers of the old catalog are not refused,
    and data without the column still appends."""
    import pyarrow as pa

    cat, tables, _ = filled_catalog
    n = tables["responses"].num_rows
    cat._con.execute("ALTER TABLE lake.responses DROP COLUMN behaviour_logprobs")  # as an older version made it
    cat.close()
    with Catalog.open_read_only(catalog_dir) as ro:
        assert "behaviour_logprobs" not in ro.sql("SELECT * FROM responses LIMIT 0").column_names
    with Catalog.open(catalog_dir) as cat:
        rows = cat.sql("SELECT behaviour_logprobs FROM responses").column(0)
        assert len(rows) == n and rows.null_count == n
        assert "add columns" in [v.message for v in cat.versions()]
        new = tables["responses"].slice(0, 1).drop_columns(["behaviour_logprobs"])
        new = new.set_column(0, "response_id", pa.array(["r-new"]))
        with cat.commit("old writer", stage="generate") as tx:
            tx.append("responses", new)  # a producer that does not know the column
        assert cat.sql("SELECT behaviour_logprobs IS NULL AS missing FROM responses "
                       "WHERE response_id = 'r-new'").column(0).to_pylist() == [True]


def test_a_file_given_as_the_catalog_is_refused_by_name(tmp_path):
    """A catalog is a folder (or a ducklake: URI): a file in its place is named, and left as it was."""
    notes = tmp_path / "notes.txt"
    notes.write_text("not a catalog")
    for opener in (Catalog.open, Catalog.open_read_only):
        for given in (notes, str(notes), CatalogConfig.for_directory(str(notes))):
            with pytest.raises(CatalogError, match=rf"{notes} is a file.*catalog folder.*ducklake: URI"):
                opener(given)
    meta = tmp_path / "cat" / "catalog.ducklake"  # the metadata file itself, given as the catalog
    meta.parent.mkdir()
    meta.write_bytes(b"")
    with pytest.raises(CatalogError, match=rf"pass its folder {meta.parent}"):
        Catalog.open(meta)
    with pytest.raises(CatalogError, match=rf"pass its folder {meta.parent}"):
        Catalog.open(CatalogConfig.for_directory(str(meta)))
    under = CatalogConfig(uri=f"ducklake:sqlite:{notes}/meta.sqlite", data_path=str(tmp_path / "d") + "/",
                          snapshot_root=str(tmp_path / "s"))  # its writer lock file would go there first
    with pytest.raises(CatalogError, match=rf"{notes} is a file"):
        Catalog.open(under)
    bad_data = CatalogConfig.for_directory(str(tmp_path / "ok")).model_copy(update={"data_path": f"{notes}/data/"})
    with pytest.raises(CatalogError, match=rf"data path {notes}/data/ cannot be used: {notes} is a file"):
        Catalog.open(bad_data)
    assert notes.read_text() == "not a catalog" and sorted(p.name for p in tmp_path.iterdir()) == ["cat", "notes.txt"]


@pytest.mark.parametrize("verb", [["questions", "synthetic", "--n", "2"], ["versions"], ["sql", "SELECT 1"]])
def test_the_cli_names_a_file_given_as_the_catalog(tmp_path, masters_cli, verb):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a catalog")
    out = masters_cli("--catalog", notes, *verb, timeout=300)
    assert out.returncode != 0 and "Traceback" not in out.stdout + out.stderr, out.stderr
    assert f"{notes} is a file" in out.stderr and "catalog folder" in out.stderr
    assert notes.read_text() == "not a catalog"
