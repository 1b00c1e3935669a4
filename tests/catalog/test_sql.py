"""Read-only SQL by default; writes only when asked for."""

import pytest

from catalog import Catalog
from schemas.errors import MastersError, ReadOnlyError


@pytest.mark.parametrize("query,kind", [
    ("DELETE FROM responses", "DELETE"),
    ("INSERT INTO images VALUES ('x', ''::BLOB, 'PNG', 1, 1)", "INSERT"),
    ("DROP TABLE responses", "DROP"),
    ("COPY responses TO '/tmp/x.csv'", "COPY"),
    ("SELECT 1; UPDATE responses SET text = ''", "UPDATE"),
    ("CREATE TABLE t (a INT)", "CREATE"),
    ("ATTACH ':memory:' AS other", "ATTACH"),
])
def test_writes_are_refused_on_the_read_path(filled_catalog, query, kind):
    cat, tables, _ = filled_catalog
    before = cat.current_version()
    with pytest.raises(ReadOnlyError, match=rf"{kind} statement.*--write"):
        cat.sql(query)
    assert cat.current_version() == before
    assert cat.count("responses") == tables["responses"].num_rows


def test_reads_pass(filled_catalog):
    cat, tables, _ = filled_catalog
    res = cat.sql("WITH t AS (SELECT source, count(*) n FROM responses GROUP BY 1) "
                  "SELECT * FROM t ORDER BY source")
    assert res.to_pylist() == [{"source": "student", "n": tables["responses"].num_rows // 2},
                               {"source": "teacher", "n": tables["responses"].num_rows // 2}]
    assert cat.sql("EXPLAIN SELECT * FROM responses").num_rows >= 1


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
