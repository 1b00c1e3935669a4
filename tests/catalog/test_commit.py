"""Atomic commits across tables, with message and metadata; rollbacks leave nothing behind."""

import pyarrow as pa
import pytest

from catalog import Catalog
from schemas.errors import SchemaMismatchError


def data_files(root):
    return sorted(p.relative_to(root) for p in (root / "data").rglob("*.parquet"))


def test_one_commit_spans_tables_with_message_and_metadata(filled_catalog):
    cat, tables, _ = filled_catalog
    versions = cat.versions()
    last = versions[-1]
    assert last.message == "synthetic"
    assert last.metadata == {"stage": "generate", "iteration": 0}
    assert last.rows_added == {name: t.num_rows for name, t in tables.items()}
    # every table changed in that single version, none before it
    assert all(v.rows_added == {} for v in versions[:-1])
    for name, table in tables.items():
        assert cat.count(name) == table.num_rows


def test_config_hash_is_recorded(catalog_dir, gendata):
    tables, _ = gendata
    with Catalog.open(catalog_dir) as cat:
        r = cat.append("images", tables["images"], "imgs", stage="ingest", config_hash="abc123")
        meta = [v for v in cat.versions() if v.version == r.version][0].metadata
    assert meta == {"stage": "ingest", "config_hash": "abc123"}


def test_exception_inside_commit_rolls_back_every_table_and_deletes_files(catalog_dir, gendata):
    tables, _ = gendata
    with Catalog.open(catalog_dir) as cat:
        before = cat.current_version()
        with pytest.raises(RuntimeError, match="boom"):
            with cat.commit("doomed") as tx:
                tx.append("questions", tables["questions"])
                tx.append("responses", tables["responses"])
                assert data_files(catalog_dir)  # files were written and registered...
                raise RuntimeError("boom")
        assert cat.current_version() == before
        assert cat.count("questions") == 0 and cat.count("responses") == 0
    assert data_files(catalog_dir) == []  # ...and removed


def test_schema_mismatch_names_table_and_column_and_leaves_no_half_commit(catalog_dir, gendata):
    tables, _ = gendata
    bad = tables["responses"].set_column(
        tables["responses"].schema.get_field_index("sample_index"), "sample_index",
        pa.array(["first"] * tables["responses"].num_rows))
    with Catalog.open(catalog_dir) as cat:
        before = cat.current_version()
        with pytest.raises(SchemaMismatchError, match=r"table 'responses', column 'sample_index'"):
            with cat.commit("half") as tx:
                tx.append("questions", tables["questions"])  # fine on its own
                tx.append("responses", bad)
        assert cat.current_version() == before and cat.count("questions") == 0
    assert data_files(catalog_dir) == []


@pytest.mark.parametrize("mutate,column,problem", [
    (lambda t: t.drop_columns(["text"]), "text", "missing column"),
    (lambda t: t.append_column("colour", pa.array(["x"] * t.num_rows)), "colour", "unknown column"),
    (lambda t: t.set_column(t.schema.get_field_index("prompt"), "prompt",
                            pa.array([None] * t.num_rows, pa.string())), "prompt", "null value"),
])
def test_each_kind_of_mismatch_is_named(catalog_dir, gendata, mutate, column, problem):
    tables, _ = gendata
    with Catalog.open(catalog_dir) as cat:
        with pytest.raises(SchemaMismatchError, match=rf"column '{column}'(, row 0)?: .*{problem}"):
            cat.append("responses", mutate(tables["responses"]), "bad")


def test_castable_types_are_accepted(catalog_dir, gendata):
    tables, _ = gendata
    t = tables["responses"]
    t = t.set_column(t.schema.get_field_index("sample_index"), "sample_index",
                     t.column("sample_index").cast(pa.int64()))
    with Catalog.open(catalog_dir) as cat:
        assert cat.append("responses", t, "ok").added["responses"] == t.num_rows
        assert cat.read("responses").schema.field("sample_index").type == pa.int32()


def test_accepts_polars_row_dicts_and_batch_iterables(catalog_dir, gendata):
    import polars as pl

    tables, _ = gendata
    q = tables["questions"]
    with Catalog.open(catalog_dir) as cat:
        with cat.commit("mixed") as tx:
            tx.append("questions", pl.from_arrow(q.slice(0, 2)))
            tx.append("questions", q.slice(2, 2).to_pylist())
            tx.append("questions", iter(q.slice(4).to_batches(max_chunksize=1)))
        assert tx.result.added["questions"] == q.num_rows
        assert sorted(cat.read("questions").column("question_id").to_pylist()) == \
            sorted(q.column("question_id").to_pylist())


def test_ingest_writes_pyarrow_parquet_and_registers_it(filled_catalog, catalog_dir):
    cat, tables, _ = filled_catalog
    files = cat.sql("SELECT data_file FROM ducklake_list_files('lake', 'responses')").column(0).to_pylist()
    (iteration,) = set(tables["responses"].column("iteration_id").to_pylist())
    assert len(files) == 1 and f"/main/responses/iteration_id={iteration}/masters-" in files[0]  # its partition
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(files[0]).metadata
    assert meta.created_by.startswith("parquet-cpp-arrow")
    assert meta.num_rows == tables["responses"].num_rows


def test_commits_do_not_nest_and_read_only_refuses(filled_catalog, catalog_dir):
    from schemas.errors import MastersError

    cat, tables, _ = filled_catalog
    with pytest.raises(MastersError, match="do not nest"):
        with cat.commit("outer"):
            with cat.commit("inner"):
                pass
    cat.close()
    with Catalog.open_read_only(catalog_dir) as ro:
        with pytest.raises(MastersError, match="read-only"):
            ro.append("images", tables["images"], "nope")


def test_failure_after_commit_keeps_the_committed_files(catalog_dir, gendata, monkeypatch):
    tables, _ = gendata
    with Catalog.open(catalog_dir) as cat:
        before = cat.current_version()
        real = cat.current_version
        calls = {"n": 0}

        def flaky():
            calls["n"] += 1
            raise KeyboardInterrupt  # e.g. Ctrl-C right after COMMIT returned

        monkeypatch.setattr(cat, "current_version", flaky)
        with pytest.raises(KeyboardInterrupt):
            with cat.commit("landed") as tx:
                tx.append("questions", tables["questions"])
        monkeypatch.setattr(cat, "current_version", real)
        assert calls["n"] == 1
        assert cat.current_version() == before + 1  # the commit landed...
        assert cat.read("questions").num_rows == tables["questions"].num_rows  # ...with its files
    assert len(data_files(catalog_dir)) == 1


def test_counts_cover_chunks_appended_before_a_failing_one(catalog_dir, gendata):
    tables, _ = gendata
    q = tables["questions"]
    bad = q.drop_columns(["answer"])
    with Catalog.open(catalog_dir) as cat:
        with cat.commit("partly") as tx:
            with pytest.raises(SchemaMismatchError):
                tx.append("questions", [q.slice(0, 3), bad])
        assert tx.result.added["questions"] == 3 and tx.result.version is not None
        assert cat.count("questions") == 3


def test_a_chunk_half_present_adds_its_new_half_and_leaves_no_file_behind(filled_catalog, catalog_dir):
    import pyarrow as pa

    cat, tables, _ = filled_catalog
    template = tables["responses"].slice(0, 1)
    n = 12_000

    def batch(start):
        return pa.concat_tables([template] * n).set_column(
            0, "response_id", pa.array([f"big-{start + k}" for k in range(n)]))

    assert cat.append("responses", batch(0), "big").added["responses"] == n
    before = cat.count("responses")
    half = batch(n // 2)  # its first half is present
    result = cat.append("responses", half, "half present")
    assert (result.added["responses"], result.skipped["responses"]) == (n - n // 2, n // 2)
    assert cat.count("responses") == before + n - n // 2
    total, distinct = cat.sql("SELECT count(*), count(DISTINCT response_id) FROM responses").to_pylist()[0].values()
    assert total == distinct
    again = cat.append("responses", half, "all present")
    assert again.version is None and again.skipped["responses"] == n
    registered = set(cat.sql("SELECT data_file FROM ducklake_list_files('lake', 'responses')").column(0).to_pylist())
    on_disk = {str(p) for p in (catalog_dir / "data" / "main" / "responses").rglob("*.parquet")}
    assert on_disk == registered  # no file of the skipped rows left behind
