"""Registering data files written by another process (a shard worker): the ids are checked as an
append's are, a file of the wrong schema or outside the data path is refused, and a rollback
deletes the file."""

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalog import Catalog
from catalog.data_files import write_table_files
from schemas.errors import CatalogError, SchemaMismatchError


def _responses(tables, prefix: str, n: int | None = None) -> pa.Table:
    r = tables["responses"].slice(0, n)
    return r.set_column(0, "response_id", pa.array([f"{prefix}{k}" for k in range(r.num_rows)])).cast(r.schema)


def test_a_file_of_new_ids_is_registered_as_it_is(filled_catalog):
    cat, tables, _ = filled_catalog
    (path,) = write_table_files(cat.config, "responses", _responses(tables, "new-", 5))
    with cat.commit("from a shard", stage="generate") as tx:
        assert tx.add_file("responses", path) == (5, 0)
    registered = cat.sql("SELECT count(*) FROM responses WHERE response_id LIKE 'new-%'").column(0)[0].as_py()
    assert registered == 5 and pq.read_table(path).num_rows == 5  # the very file, not a copy


def test_ids_already_present_are_skipped_and_the_rest_rewritten(filled_catalog):
    cat, tables, _ = filled_catalog
    old = tables["responses"].slice(0, 3)  # ids the catalog holds
    mixed = pa.concat_tables([old, _responses(tables, "fresh-", 4), _responses(tables, "fresh-", 2)])
    (path,) = write_table_files(cat.config, "responses", mixed)
    before = cat.count("responses")
    with cat.commit("from a shard") as tx:
        assert tx.add_file("responses", path) == (4, 5)  # 3 present + 2 repeated within the file
    assert cat.count("responses") == before + 4
    assert not os.path.exists(path)  # replaced by its new rows
    (again,) = write_table_files(cat.config, "responses", mixed)
    with cat.commit("all present") as tx:
        assert tx.add_file("responses", again) == (0, 9)
    assert tx.result.version is None and cat.count("responses") == before + 4


def test_wrong_schema_outside_path_and_rollback(filled_catalog, tmp_path):
    cat, tables, _ = filled_catalog
    stray = tmp_path / "elsewhere.parquet"
    pq.write_table(_responses(tables, "x-", 2), stray)
    with pytest.raises(CatalogError, match="not under the catalog's data path"):
        with cat.commit("stray") as tx:
            tx.add_file("responses", str(stray))
    (wrong,) = write_table_files(cat.config, "verdicts", tables["verdicts"])
    with pytest.raises(SchemaMismatchError, match="does not have the table's schema"):
        with cat.commit("wrong table") as tx:
            tx.add_file("responses", wrong)
    assert not os.path.exists(wrong)  # a failed commit deletes the files it took
    version = cat.current_version()
    (path,) = write_table_files(cat.config, "responses", _responses(tables, "late-", 3))
    with pytest.raises(RuntimeError):
        with cat.commit("doomed") as tx:
            tx.add_file("responses", path)
            raise RuntimeError("boom")
    assert cat.current_version() == version and not os.path.exists(path)


def test_write_table_file_names_a_bad_column(filled_catalog):
    cat, tables, _ = filled_catalog
    with pytest.raises(SchemaMismatchError, match="num_tokens"):
        write_table_files(cat.config, "responses", tables["responses"].drop_columns(["num_tokens"]))


def test_sqlite_catalog_is_in_wal_mode_beside_its_writer_lock(tmp_path):
    import sqlite3

    from schemas.config import CatalogConfig

    cfg = CatalogConfig(uri=f"ducklake:sqlite:{tmp_path / 'm' / 'meta.sqlite'}", data_path=str(tmp_path / "d") + "/",
                        snapshot_root=str(tmp_path / "s"))
    Catalog.open(cfg).close()
    con = sqlite3.connect(tmp_path / "m" / "meta.sqlite")
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # readers never block a COMMIT
    con.close()
    assert (tmp_path / "m" / "meta.sqlite.lock").is_file()
