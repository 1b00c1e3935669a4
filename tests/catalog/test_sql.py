"""Read-only SQL by default; writes only when asked for. A read-only catalog's connection is
locked down: its SQL reads the catalog and files under the data path, nothing else (the catalog's
metadata file included), and its configuration cannot be changed back."""

import os

import duckdb
import pytest

from catalog import Catalog
from catalog.engine import lock_down
from schemas.config import CatalogConfig
from schemas.errors import MastersError, ReadOnlyError


@pytest.mark.parametrize("query,kind", [
    ("DELETE FROM responses", "DELETE statement"),
    ("INSERT INTO images VALUES ('x', ''::BLOB, 'PNG', 1, 1)", "INSERT statement"),
    ("DROP TABLE responses", "DROP statement"),
    ("COPY responses TO '/tmp/x.csv'", "COPY statement"),
    ("SELECT 1; UPDATE responses SET text = ''", "statement 2 is a UPDATE statement"),
    ("CREATE TABLE t (a INT)", "CREATE statement"),
    ("ATTACH ':memory:' AS other", "ATTACH statement"),
    ("EXPLAIN ANALYZE DELETE FROM verdicts", "EXPLAIN ANALYZE of a statement that writes"),
    ("EXPLAIN ANALYZE COPY (SELECT 42) TO '/tmp/x.csv'", "EXPLAIN ANALYZE of a statement that writes"),
    ("SELECT * FROM ducklake_expire_snapshots('lake', versions => [0])", "ducklake_expire_snapshots"),
    ("SELECT * FROM ducklake_delete_orphaned_files('lake', cleanup_all => true)",
     "ducklake_delete_orphaned_files"),
    ("SELECT * FROM query('DELETE FROM verdicts')", "query"),
    ("SELECT 1 WHERE (SELECT count(*) FROM ducklake_merge_adjacent_files('lake')) > 0",
     "ducklake_merge_adjacent_files"),
    ("SET memory_limit = '1GB'", "SET statement"),
    ("RESET allowed_directories", "SET statement"),
    # EXPLAIN with options, or a comment before ANALYZE, still runs the statement it explains
    ("EXPLAIN (ANALYZE) DELETE FROM verdicts", "EXPLAIN ANALYZE of a statement that writes"),
    ("EXPLAIN (FORMAT json, ANALYZE) DELETE FROM verdicts", "EXPLAIN ANALYZE of a statement that writes"),
    ("EXPLAIN /* why */ ANALYZE DELETE FROM verdicts", "EXPLAIN ANALYZE of a statement that writes"),
    ("EXPLAIN DELETE FROM verdicts", "EXPLAIN of a statement other than SELECT"),
    # a serialized SELECT runs unseen by this check
    ("SELECT * FROM json_execute_serialized_sql(json_serialize_sql("
     "'SELECT * FROM ducklake_expire_snapshots(''lake'', versions => [0])'))", "json_execute_serialized_sql"),
    # DuckLake's functions under the catalog's name
    ("SELECT * FROM lake.merge_adjacent_files()", "ducklake_merge_adjacent_files"),
    ("SELECT * FROM lake.set_option('parquet_compression', 'gzip')", "ducklake_set_option"),
    ("SELECT * FROM lake.main.set_option('parquet_compression', 'gzip')", "ducklake_set_option"),
    ("SELECT * FROM checkpoint()", "checkpoint"),
])
def test_writes_are_refused_on_the_read_path(filled_catalog, query, kind):
    cat, tables, _ = filled_catalog
    before = cat.version_ids()
    with pytest.raises(ReadOnlyError, match=rf"{kind}.*read-only by default.*--write"):
        cat.sql(query)
    assert cat.version_ids() == before  # no version added, none expired
    assert cat.count("responses") == tables["responses"].num_rows
    assert cat.count("verdicts") == tables["verdicts"].num_rows


def test_the_locked_down_connection_itself_reads_no_other_file(filled_catalog, catalog_dir, tmp_path):
    """DuckDB's own lock-down, past the statement check: the connection reads no file outside
    the data path, while the catalog's own data still reads."""
    cat, tables, _ = filled_catalog
    cat.close()
    secret = tmp_path / "secret.txt"
    secret.write_text("x")
    with Catalog.open_read_only(catalog_dir) as ro:
        with pytest.raises(duckdb.PermissionException, match="disabled by configuration"):
            ro.connection().execute(f"SELECT * FROM read_text('{secret}')").fetchall()
        assert ro.count("responses") == tables["responses"].num_rows


def test_the_read_only_sql_path_names_a_file_outside_the_data_path(filled_catalog, catalog_dir, tmp_path):
    cat, tables, _ = filled_catalog
    cat.close()
    secret = tmp_path / "secret.txt"
    secret.write_text("x")
    with Catalog.open_read_only(catalog_dir) as ro:
        with pytest.raises(ReadOnlyError, match=rf"reads the file '{secret}'.*outside the catalog's data path"):
            ro.sql(f"SELECT * FROM read_text('{secret}')")
        # files under the data path read: the catalog's own Parquet, by a glob
        data = catalog_dir / "data"
        n = ro.sql(f"SELECT count(*) AS n FROM read_parquet('{data}/main/responses/**/*.parquet')")
        assert n.column("n")[0].as_py() == tables["responses"].num_rows
        assert ro.sql(f"SELECT count(*) AS n FROM '{data}/main/questions/*.parquet'").column(0)[0].as_py() == \
            tables["questions"].num_rows


def _metadata_reads(catalog_dir):
    """Ways a statement could name the catalog's metadata file. DuckDB allows the files of every
    attached database once external access is off, whichever way they are named."""
    data, meta = catalog_dir / "data", catalog_dir / "catalog.ducklake"
    os.symlink(meta, data / "meta-link")  # a link inside the data path to the metadata file
    os.symlink(catalog_dir, data / "up")  # a link inside the data path to the folder above it
    return {
        "dot-dot": f"SELECT content FROM read_blob('{data}/../catalog.ducklake')",
        "dot-dot deeper": f"SELECT content FROM read_blob('{data}/main/../../catalog.ducklake')",
        "direct": f"SELECT content FROM read_blob('{meta}')",
        "as text": f"SELECT content FROM read_text('{meta}')",
        "computed": f"SELECT content FROM read_blob('{catalog_dir}/' || 'catalog.ducklake')",
        "list": f"SELECT content FROM read_blob(['{data}/main/../../catalog.ducklake'])",
        "file URI": f"SELECT content FROM read_blob('file://{data}/../catalog.ducklake')",
        "link to the file": f"SELECT content FROM read_blob('{data}/meta-link')",
        "link to the folder": f"SELECT content FROM read_blob('{data}/up/catalog.ducklake')",
        "glob over a link": f"SELECT content FROM read_blob('{data}/*')",
        "in a subquery": f"SELECT (SELECT content FROM read_blob('{data}/up/catalog.ducklake')) AS c",
        "sniffed": f"SELECT * FROM sniff_csv('{data}/../catalog.ducklake')",
        "as a table": f"SELECT * FROM '{data}/up/catalog.ducklake'",
        "explained": f"EXPLAIN SELECT * FROM read_csv('{data}/../catalog.ducklake')",
        "in a CTE": f"WITH m AS (SELECT content FROM read_blob('{data}/../catalog.ducklake')) SELECT * FROM m",
        "as a Parquet file": f"SELECT * FROM ducklake_scan('{data}/../catalog.ducklake')",
        "as a table's name": f"SELECT * FROM query_table('{data}/up/catalog.ducklake')",
        "its WAL": f"SELECT content FROM read_blob('{meta}.wal')",
        "histogrammed": f"SELECT * FROM histogram('{data}/up/catalog.ducklake', content)",
    }


@pytest.mark.parametrize("how", ["dot-dot", "dot-dot deeper", "direct", "as text", "computed", "list",
                                 "file URI", "link to the file", "link to the folder", "glob over a link",
                                 "in a subquery", "sniffed", "as a table", "explained", "in a CTE",
                                 "as a Parquet file", "as a table's name", "its WAL", "histogrammed"])
def test_the_metadata_file_is_not_readable_on_the_read_only_path(filled_catalog, catalog_dir, how):
    cat, _, _ = filled_catalog
    cat.close()
    query = _metadata_reads(catalog_dir)[how]
    with Catalog.open_read_only(catalog_dir) as ro:
        with pytest.raises(ReadOnlyError, match="read-only SQL path") as err:
            ro.sql(query)
        assert str(catalog_dir) in str(err.value)  # it names the path at fault


def test_the_read_only_path_still_reads_the_catalog_every_way(filled_catalog, catalog_dir):
    cat, tables, _ = filled_catalog
    cat.close()
    n = tables["responses"].num_rows
    with Catalog.open_read_only(catalog_dir) as ro:
        for query, rows in [("SHOW TABLES", None), ("DESCRIBE responses", None), ("SUMMARIZE SELECT 1 AS a", 1),
                            ("SELECT * FROM lake.snapshots()", None), ("SELECT * FROM ducklake_table_info('lake')", None),
                            ("SELECT * FROM pragma_table_info('responses')", None),
                            ("SELECT * FROM query_table('responses')", n), ("FROM lake.responses", n),
                            ("SELECT * FROM range(3), unnest([1, 2])", 6),
                            ("SELECT * FROM information_schema.columns WHERE table_name = 'responses'", None),
                            ("SELECT * FROM __ducklake_metadata_lake.ducklake_snapshot", None),
                            ("EXPLAIN (FORMAT json) SELECT count(*) FROM responses", None)]:
            got = ro.sql(query).num_rows
            assert got == rows if rows is not None else got > 0, query


def test_a_read_condition_is_checked_like_sql(filled_catalog, catalog_dir):
    cat, tables, _ = filled_catalog
    cat.close()
    with Catalog.open_read_only(catalog_dir) as ro:
        leak = f"(SELECT octet_length(content) FROM read_blob('{catalog_dir}/data/../catalog.ducklake')) > 0"
        with pytest.raises(ReadOnlyError, match="catalog.ducklake"):
            ro.read("responses", where=leak)
        assert ro.read("responses", where="source = ?", params=["teacher"]).num_rows == \
            tables["responses"].num_rows // 2


def test_masters_sql_does_not_print_the_metadata_file(filled_catalog, catalog_dir, masters_cli):
    cat, _, _ = filled_catalog
    cat.close()
    meta = (catalog_dir / "catalog.ducklake").read_bytes()
    out = masters_cli("--catalog", catalog_dir, "sql", "--format", "json",
                      f"SELECT hex(content) AS h FROM read_blob('{catalog_dir}/data/../catalog.ducklake')")
    assert out.returncode != 0 and "Traceback" not in out.stdout + out.stderr
    assert f"{catalog_dir}/data/../catalog.ducklake" in out.stderr and "read-only SQL path" in out.stderr
    assert meta[:16].hex().upper() not in out.stdout + out.stderr  # none of its bytes came back


def test_duckdb_refuses_to_change_the_locked_configuration(filled_catalog, catalog_dir):
    """Past the statement check (which refuses SET on its own): DuckDB's lock_configuration."""
    cat, _, _ = filled_catalog
    cat.close()
    changes = ["SET enable_external_access = true", "SET allowed_directories = ['/']",
               "SET allowed_paths = ['/etc/passwd']", "RESET allowed_directories",
               "SET lock_configuration = false", "SET memory_limit = '1GB'", "SET file_search_path = '/'"]
    fresh = duckdb.connect()  # engine.lock_down on a connection of its own
    lock_down(fresh, CatalogConfig.for_directory(str(catalog_dir)))
    with Catalog.open_read_only(catalog_dir) as ro:
        for con in (ro.connection(), fresh):
            before = con.execute("SELECT current_setting('allowed_directories'), "
                                 "current_setting('memory_limit')").fetchone()
            for change in changes:
                with pytest.raises(duckdb.InvalidInputException, match="the configuration has been locked"):
                    con.execute(change)
            assert con.execute("SELECT current_setting('allowed_directories'), "
                               "current_setting('memory_limit')").fetchone() == before
            assert con.execute("SELECT current_setting('enable_external_access')").fetchone()[0] is False


def test_reads_pass(filled_catalog):
    cat, tables, _ = filled_catalog
    res = cat.sql("WITH t AS (SELECT source, count(*) n FROM responses GROUP BY 1) "
                  "SELECT * FROM t ORDER BY source")
    assert res.to_pylist() == [{"source": "student", "n": tables["responses"].num_rows // 2},
                               {"source": "teacher", "n": tables["responses"].num_rows // 2}]
    assert cat.sql("EXPLAIN SELECT * FROM responses").num_rows >= 1
    assert cat.sql("EXPLAIN ANALYZE SELECT count(*) FROM responses").num_rows >= 1
    assert cat.sql("SELECT count(*) AS n FROM ducklake_snapshots('lake')").column(0)[0].as_py() >= 2


def test_write_flag_allows_writes_but_not_at_old_versions(filled_catalog):
    cat, _, _ = filled_catalog
    before = cat.current_version()
    cat.sql("DELETE FROM verdicts WHERE state = 'ok'", write=True)
    assert cat.current_version() == before + 1 and cat.count("verdicts") == 0
    with pytest.raises(MastersError, match="old version"):
        cat.sql("DELETE FROM verdicts", version=1, write=True)


def test_read_only_open_refuses_writes_and_settings_even_with_the_flag(filled_catalog, catalog_dir):
    """Catalog.sql's own refusal on a read-only catalog, before DuckDB sees the statement."""
    cat, _, _ = filled_catalog
    cat.close()
    with Catalog.open_read_only(catalog_dir) as ro:
        for statement in ("DELETE FROM verdicts", "SET enable_external_access = true"):
            with pytest.raises(MastersError, match="opened read-only"):
                ro.sql(statement, write=True)


def test_query_errors_are_project_errors(filled_catalog):
    cat, _, _ = filled_catalog
    with pytest.raises(MastersError, match="no_such_table"):
        cat.sql("SELECT * FROM no_such_table")


def test_on_object_storage_the_read_only_path_reads_no_file():
    """A data path in a bucket: DuckDB's lock-down allows no directory, and the statement check
    refuses every file a statement names, the bucket's included (its tables still read)."""
    from catalog.sql_guard import FileScope, check_read_only

    con = duckdb.connect()
    for path in ("s3://bucket/lake/main/responses/x.parquet", "/tmp/x.parquet", "x.csv"):
        with pytest.raises(ReadOnlyError, match=rf"reads the file '{path}'.*reads no file here.*object storage"):
            check_read_only(con, f"SELECT * FROM read_parquet('{path}')", FileScope(None))
    check_read_only(con, "SELECT * FROM range(3)", FileScope(None))


def test_a_sqlite_catalogs_metadata_file_is_not_readable(sqlite_catalog, gendata):
    tables, _ = gendata
    with Catalog.open(sqlite_catalog) as cat:
        cat.append("questions", tables["questions"], "questions")
    meta = sqlite_catalog.uri.removeprefix("ducklake:sqlite:")
    with Catalog.open_read_only(sqlite_catalog) as ro:
        assert ro.connection().execute(f"SELECT size FROM read_blob('{meta}')").fetchone()[0] > 0  # DuckDB allows it
        for path in (meta, f"{sqlite_catalog.data_path}../meta/catalog.sqlite"):
            with pytest.raises(ReadOnlyError, match=rf"reads the file '{path}'"):
                ro.sql(f"SELECT content FROM read_blob('{path}')")
        assert ro.count("questions") == tables["questions"].num_rows
