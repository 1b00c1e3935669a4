"""Rows whose id is already present are skipped and counted, never duplicated."""

from catalog import Catalog


def test_recommit_adds_nothing_and_creates_no_version(filled_catalog):
    cat, tables, _ = filled_catalog
    before = cat.current_version()
    with cat.commit("again") as tx:
        for name, table in tables.items():
            tx.append(name, table)
    assert tx.result.version is None
    assert sum(tx.result.added.values()) == 0
    assert tx.result.skipped == {name: t.num_rows for name, t in tables.items()}
    assert cat.current_version() == before
    for name, table in tables.items():
        assert cat.count(name) == table.num_rows


def test_partial_overlap_adds_only_new_rows(catalog_dir, gendata):
    tables, _ = gendata
    r = tables["responses"]
    with Catalog.open(catalog_dir) as cat:
        first = cat.append("responses", r.slice(0, 10), "first 10")
        second = cat.append("responses", r.slice(5), "overlapping rest")
        assert (first.added["responses"], first.skipped["responses"]) == (10, 0)
        assert (second.added["responses"], second.skipped["responses"]) == (r.num_rows - 10, 5)
        ids = cat.read("responses", columns=["response_id"]).column(0).to_pylist()
    assert sorted(ids) == sorted(r.column("response_id").to_pylist())
    assert len(ids) == len(set(ids))


def test_duplicates_inside_one_batch_and_one_commit(catalog_dir, gendata):
    import pyarrow as pa

    tables, _ = gendata
    q = tables["questions"]
    with Catalog.open(catalog_dir) as cat:
        with cat.commit("dupes") as tx:
            a = tx.append("questions", pa.concat_tables([q, q.slice(0, 3)]))
            b = tx.append("questions", q.slice(1, 2))
        assert a == (q.num_rows, 3) and b == (0, 2)
        assert cat.count("questions") == q.num_rows
        assert cat.sql("SELECT count(DISTINCT question_id) = count(*) FROM questions").column(0)[0].as_py()
