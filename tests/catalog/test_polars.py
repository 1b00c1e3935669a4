"""The polars face of the catalog: Catalog.read_pl (eager, or lazy with DuckDB running what polars
pushes down) and Catalog.sql_pl answer what read / sql answer in Arrow, at any version, through a
read-only catalog's lock-down; and the README's polars analysis agrees with DuckDB's SQL."""

import re
from pathlib import Path

import polars as pl
import pytest

from catalog import Catalog
from masters.synthetic_gendata import synthetic_gendata
from schemas.errors import CatalogError, ReadOnlyError, SchemaMismatchError, UnknownVersionError


@pytest.fixture
def two_iterations(catalog_dir):
    """A catalog with iterations 0 and 1 of a synthetic run, one commit each. Yields (catalog
    folder, {iteration: tables}, {iteration: version}, reward config id)."""
    made, versions = {}, {}
    with Catalog.open(catalog_dir) as cat:
        for iteration in (0, 1):
            tables, config = synthetic_gendata(num_questions=5, responses_per_source=4, iteration=iteration,
                                               seed=iteration)
            with cat.commit(f"iteration {iteration}", stage="generate", iteration=iteration) as tx:
                for name, table in tables.items():
                    tx.append(name, table)
            made[iteration], versions[iteration] = tables, tx.result.version
    return catalog_dir, made, versions, config.id


def _readme_analysis():
    """The README's polars analysis ("Reading, time travel, SQL"), run as written there."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", readme, re.DOTALL) if "def reward_distribution" in b]
    namespace: dict = {}
    exec(block.split("\nprint(")[0], namespace)
    return namespace["reward_distribution"]


reward_distribution = _readme_analysis()


DISTRIBUTION_SQL = """
SELECT i.run_id, i.iteration, r.source, count(*) AS n, avg(w.reward) AS mean,
       quantile_cont(w.reward, 0.5) AS p50, quantile_cont(w.reward, 0.9) AS p90
FROM rewards w JOIN responses r ON r.response_id = w.response_id
               JOIN iterations i ON i.iteration_id = w.iteration_id
WHERE w.reward_config_id = $c
GROUP BY ALL ORDER BY i.run_id, i.iteration, r.source
"""


def test_the_readme_reward_distribution_agrees_with_duckdb(two_iterations):
    folder, made, versions, config_id = two_iterations
    with Catalog.open_read_only(folder) as cat:
        for version, iterations in ((None, [0, 1]), (versions[0], [0])):  # and time travel
            got = reward_distribution(cat, config_id, version)
            want = cat.sql(DISTRIBUTION_SQL, version=version, params={"c": config_id}).to_pylist()
            assert got.select("iteration").unique().to_series().sort().to_list() == iterations
            assert got.height == 2 * len(iterations) == len(want)  # teacher and student per iteration
            for g, w in zip(got.to_dicts(), want):
                assert (g["run_id"], g["iteration"], g["source"], g["n"]) == \
                    (w["run_id"], w["iteration"], w["source"], w["n"])
                for stat in ("mean", "p50", "p90"):
                    assert g[stat] == pytest.approx(w[stat], rel=1e-12, abs=1e-12)
            rewards = sum(made[i]["rewards"].num_rows for i in iterations)
            assert got["n"].sum() == rewards


def test_read_pl_answers_what_read_answers(two_iterations):
    folder, made, versions, _ = two_iterations
    with Catalog.open_read_only(folder) as cat:
        for name in ("responses", "rewards", "token_stats", "iterations", "models"):
            arrow = cat.read(name)
            eager, lazy = cat.read_pl(name), cat.read_pl(name, lazy=True).collect()
            assert isinstance(eager, pl.DataFrame) and isinstance(cat.read_pl(name, lazy=True), pl.LazyFrame)
            assert eager.schema == lazy.schema == pl.from_arrow(arrow).schema  # the table's types
            key = arrow.column_names[0]
            assert eager.sort(key).equals(lazy.sort(key))
            assert eager.sort(key).equals(pl.from_arrow(arrow).sort(key))
        cols = ["response_id", "source"]
        assert cat.read_pl("responses", columns=cols).columns == cols
        assert cat.read_pl("responses", columns=cols, lazy=True).collect_schema().names() == cols
        teacher = cat.read_pl("responses", where="source = ?", params=["teacher"], lazy=True).collect()
        assert teacher.height == sum(t["responses"].num_rows for t in made.values()) // 2
        # time travel: iteration 0's version, and one where the tables did not exist yet
        for lazy in (False, True):
            old = cat.read_pl("responses", version=versions[0], lazy=lazy)
            old = old.collect() if lazy else old
            assert old.height == made[0]["responses"].num_rows
            empty = cat.read_pl("rewards", version=0, lazy=lazy)
            empty = empty.collect() if lazy else empty
            assert empty.height == 0 and empty.schema == pl.from_arrow(cat.read("rewards")).schema


def test_lazy_frames_push_work_into_duckdb_and_stay_pinned(two_iterations):
    folder, made, versions, _ = two_iterations
    n = sum(t["responses"].num_rows for t in made.values())
    with Catalog.open(folder) as cat:
        frame = cat.read_pl("responses", lazy=True)
        plan = frame.filter(pl.col("source") == "student").select("response_id").explain()
        assert "PYTHON SCAN" in plan and "SELECTION" in plan  # the filter runs in the scan
        assert frame.filter(pl.col("source") == "student").select("response_id").collect().height == n // 2
        more, _ = synthetic_gendata(num_questions=5, responses_per_source=4, iteration=2, seed=2)
        cat.append("responses", more["responses"], "iteration 2")
        assert cat.count("responses") == n + more["responses"].num_rows
        assert frame.collect().height == n  # pinned to the version current when it was made
        assert cat.read_pl("responses", lazy=True).collect().height == n + more["responses"].num_rows


def test_sql_pl_answers_what_sql_answers(two_iterations):
    folder, made, versions, _ = two_iterations
    q = "SELECT source, count(*) AS n FROM responses GROUP BY 1 ORDER BY 1"
    with Catalog.open_read_only(folder) as cat:
        for version in (None, versions[0]):
            got = cat.sql_pl(q, version=version)
            assert isinstance(got, pl.DataFrame)
            assert got.equals(pl.from_arrow(cat.sql(q, version=version)))
        assert cat.sql_pl("SELECT count(*) AS n FROM responses WHERE source = $s",
                          params={"s": "teacher"})["n"].to_list() == [made[0]["responses"].num_rows // 2
                                                                     + made[1]["responses"].num_rows // 2]


def test_polars_reads_hold_the_lock_down_and_say_what_is_wrong(two_iterations):
    folder, _, _, _ = two_iterations
    meta = f"{folder}/data/../catalog.ducklake"
    with Catalog.open_read_only(folder) as cat:
        with pytest.raises(ReadOnlyError, match="catalog.ducklake"):
            cat.sql_pl(f"SELECT content FROM read_blob('{meta}')")
        for lazy in (False, True):
            with pytest.raises(ReadOnlyError, match="catalog.ducklake"):
                cat.read_pl("responses", where=f"(SELECT octet_length(content) FROM read_blob('{meta}')) > 0",
                            lazy=lazy)
        with pytest.raises(ReadOnlyError, match="DELETE statement"):
            cat.sql_pl("DELETE FROM responses")
        with pytest.raises(SchemaMismatchError, match="no_such_column"):
            cat.read_pl("responses", columns=["no_such_column"], lazy=True)
        with pytest.raises(UnknownVersionError, match="version 99 does not exist; versions 0..3 exist"):
            cat.read_pl("responses", version=99, lazy=True)
        frame = cat.read_pl("responses", lazy=True)
    with pytest.raises(CatalogError, match="collect it before closing the catalog"):
        frame.collect()
