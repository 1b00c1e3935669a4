"""Read-only SQL by default; writes only when asked for."""

import pytest

from catalog import Catalog
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
])
def test_writes_are_refused_on_the_read_path(filled_catalog, query, kind):
    cat, tables, _ = filled_catalog
    before = cat.current_version()
    with pytest.raises(ReadOnlyError, match=rf"{kind}.*read-only by default.*--write"):
        cat.sql(query)
    assert cat.current_version() == before
    assert cat.count("responses") == tables["responses"].num_rows


def test_read_only_connections_touch_no_other_file(filled_catalog, catalog_dir, tmp_path):
    cat, tables, _ = filled_catalog
    cat.close()
    secret = tmp_path / "secret.txt"
    secret.write_text("x")
    with Catalog.open_read_only(catalog_dir) as ro:
        with pytest.raises(MastersError, match="disabled by configuration|not allowed|Permission"):
            ro.sql(f"SELECT * FROM read_text('{secret}')")
        with pytest.raises(MastersError):
            ro.sql("SET enable_external_access = true", write=True)
        assert ro.count("responses") == tables["responses"].num_rows  # its own data still reads


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


def test_read_only_open_refuses_writes_even_with_the_flag(filled_catalog, catalog_dir):
    cat, _, _ = filled_catalog
    cat.close()
    with Catalog.open_read_only(catalog_dir) as ro:
        with pytest.raises(MastersError, match="read-only"):
            ro.sql("DELETE FROM verdicts", write=True)


def test_query_errors_are_project_errors(filled_catalog):
    cat, _, _ = filled_catalog
    with pytest.raises(MastersError, match="no_such_table"):
        cat.sql("SELECT * FROM no_such_table")
