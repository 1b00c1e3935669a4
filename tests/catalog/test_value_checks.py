"""The catalog checks values, not only types (schemas/value_checks.py): finite numbers, enums,
lengths that agree, verdict scores where the state says. Each refusal names the table, the
column and the row of the data handed in, and leaves the catalog as it was (the same versions,
the same data files). A value of the wrong Python type (row dicts, pandas, polars, Arrow) is
named with its row too, never a raw ArrowInvalid."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pyarrow as pa
import pytest

from catalog import Catalog
from masters.synthetic_gendata import synthetic_gendata
from schemas import token_codec as codec
from schemas.errors import InputError, SchemaMismatchError
from schemas.tables import table_spec

ROW = 3  # the row each case spoils


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    """One catalog with an fx/2 iteration (0) and an fx16/1 one (1), shared by the module's cases:
    each case is refused and must leave it as it was. Yields (catalog, folder, {encoding: tables})."""
    folder = tmp_path_factory.mktemp("values") / "cat"
    made = {}
    with Catalog.open(folder) as cat:
        for iteration, encoding in ((0, codec.FX2), (1, codec.FX16)):
            tables, _ = synthetic_gendata(num_questions=3, responses_per_source=3, iteration=iteration,
                                          seed=iteration, encoding=encoding)
            with cat.commit(f"iteration {iteration}", stage="generate") as tx:
                for name, table in tables.items():
                    tx.append(name, table)
            made[encoding] = tables
        yield cat, folder, made


def state(cat: Catalog, folder: Path) -> tuple[int, list]:
    """(number of catalog versions, every data file with its size)."""
    files = sorted((str(p.relative_to(folder)), p.stat().st_size) for p in (folder / "data").rglob("*")
                   if p.is_file())
    return len(cat.versions()), files


def rows_with_new_ids(tables: dict, name: str) -> list[dict]:
    spec = table_spec(name)
    rows = tables[name].to_pylist()
    for r in rows:
        r[spec.id_column] += "-new"  # nothing is skipped as already present
    return rows


def spoilt(tables: dict, name: str, column: str, value, row: int = ROW) -> pa.Table:
    rows = rows_with_new_ids(tables, name)
    rows[row][column] = value(rows[row]) if callable(value) else value
    return pa.Table.from_pylist(rows, schema=table_spec(name).schema)


def refused(lake, name: str, data, column: str, row: int | None = ROW, *words: str) -> SchemaMismatchError:
    cat, folder, _ = lake
    before = state(cat, folder)
    with pytest.raises(SchemaMismatchError) as err:
        with cat.commit("bad input") as tx:
            tx.append(name, data)
    e = err.value
    assert (e.table, e.column, e.row) == (name, column, row), str(e)
    where = f"table '{name}'" + (f", column '{column}'" if column else "") + (f", row {row}" if row is not None else "")
    assert f"schema mismatch in {where}: " in str(e), str(e)
    if row is not None:  # one row at fault: '<problem>: <value>; <fix>'
        assert re.search(rf"row {row}: [^;]+: [^;]+; .+", str(e)), str(e)
    for w in words:
        assert w in str(e), str(e)
    assert state(cat, folder) == before  # no version, no file
    return e


FX2, FX16 = codec.FX2, codec.FX16
NON_FINITE = {  # (encoding of the data, table, column, the value put in)
    "reward NaN": (FX2, "rewards", "reward", math.nan),
    "advantage inf": (FX2, "rewards", "advantage", math.inf),
    "r_acc -inf": (FX2, "rewards", "r_acc", -math.inf),
    "divergence NaN": (FX2, "rewards", "divergence", math.nan),
    "r_distill NaN": (FX2, "rewards", "r_distill", math.nan),
    "verdict score NaN": (FX2, "verdicts", "score", math.nan),
    "judge latency inf": (FX2, "verdicts", "latency_s", math.inf),
    "behaviour log-prob NaN": (FX2, "responses", "behaviour_logprobs",
                               lambda r: [-0.5] * (len(r["token_ids"]) - 1) + [math.nan]),
    "response mask ratio NaN": (FX2, "responses", "mask_ratio", math.nan),
    "sampling temperature inf": (FX2, "responses", "sampling", lambda r: {**r["sampling"], "temperature": math.inf}),
    "fx16/1 student log-prob -inf": (FX16, "token_stats", "student_logprobs",
                                     lambda r: [-math.inf] + list(r["student_logprobs"][1:])),
    "fx/2 exact JSD sum NaN": (FX2, "token_stats", "jsd_sum", math.nan),
    "teacher mask ratio NaN": (FX2, "token_stats", "teacher_mask_ratio", math.nan),
    "iteration mask ratio inf": (FX2, "iterations", "mask_ratio", math.inf),
    "reward weight NaN": (FX2, "reward_configs", "w_acc", math.nan),
}


@pytest.mark.parametrize("case", list(NON_FINITE))
def test_a_non_finite_number_is_refused_naming_table_column_and_row(lake, case):
    encoding, name, column, value = NON_FINITE[case]
    tables = lake[2][encoding]
    row = ROW if tables[name].num_rows > ROW else 0
    e = refused(lake, name, spoilt(tables, name, column, value, row), column, row, "finite")
    assert any(w in str(e) for w in ("nan", "inf")), str(e)


ENUMS = {
    "verdict state 'maybe'": ("verdicts", "state", "maybe", "ok, unparseable, error"),
    "response source 'oracle'": ("responses", "source", "oracle", "teacher, student"),
    "finish reason 'eos'": ("responses", "finish_reason", "eos", "stop, length"),
    "answer type 'colour'": ("questions", "answer_type", "colour", "word, number, letter"),
    "model role 'judge'": ("models", "role", "judge", "student, teacher, reference"),
    "token_stats encoding 'fx8/3'": ("token_stats", "encoding", "fx8/3", "fx16/1, fx/2"),
    "divergence 'cosine'": ("reward_configs", "divergence", "cosine", "jsd"),
    "aggregation 'max'": ("reward_configs", "aggregation", "max", "mean, sum"),
}


@pytest.mark.parametrize("case", list(ENUMS))
def test_a_value_outside_its_enum_is_refused(lake, case):
    name, column, value, allowed = ENUMS[case]
    tables = lake[2][FX2]
    row = ROW if tables[name].num_rows > ROW else 0
    refused(lake, name, spoilt(tables, name, column, value, row), column, row, repr(value), allowed)


def _shorter(column: str):
    return lambda r: list(r[column])[:-1]


LENGTHS = {  # (encoding, table, column spoilt, the value, column named, words of the message)
    "num_tokens != len(token_ids)": (FX2, "responses", "num_tokens", lambda r: len(r["token_ids"]) + 1,
                                     "num_tokens", "len(token_ids)"),
    "one token id too few": (FX2, "responses", "token_ids", _shorter("token_ids"), "num_tokens", "len(token_ids)"),
    "a behaviour log-prob too few": (FX2, "responses", "behaviour_logprobs",
                                     lambda r: [-0.5] * (len(r["token_ids"]) - 1), "behaviour_logprobs", "num_tokens"),
    "fx16/1: a JSD value too few": (FX16, "token_stats", "jsd", _shorter("jsd"), "jsd", "fx16/1"),
    "fx16/1: top-k ids not num_tokens x top_k": (FX16, "token_stats", "teacher_topk_ids",
                                                 _shorter("teacher_topk_ids"), "teacher_topk_ids", "top_k"),
    "fx16/1: fx/2 values in an fx16/1 row": (FX16, "token_stats", "fx2_jsd", lambda r: [float(1 << 23)] * 3,
                                             "fx2_jsd", "no fx/2 values"),
    "fx/2: one token of a stream too few": (FX2, "token_stats", "fx2_jsd", _shorter("fx2_jsd"), "fx2_jsd", "fx/2"),
    "fx/2: a top-k hit flag too many": (FX2, "token_stats", "fx2_topk_hit", lambda r: list(r["fx2_topk_hit"]) + [True],
                                        "fx2_topk_hit", "num_tokens"),
    "fx/2: a stored top-k id too few": (FX2, "token_stats", "fx2_topk_ids", _shorter("fx2_topk_ids"),
                                        "fx2_topk_ids", "hits(fx2_topk_hit)"),
    "fx/2: top_k says more than is stored": (FX2, "token_stats", "top_k", lambda r: r["top_k"] + 1,
                                             "fx2_topk_ids", "top_k"),
    "fx/2: an fx16/1 list not empty": (FX2, "token_stats", "jsd", lambda r: [0] * r["num_tokens"], "jsd",
                                       "empty fx16/1 lists"),
    "fx/2: a stream missing": (FX2, "token_stats", "fx2_kl_forward", None, "fx2_kl_forward", "null"),
    "fx/2: a value outside the carrier": (FX2, "token_stats", "fx2_teacher_logprobs",
                                          lambda r: [1.0] + list(r["fx2_teacher_logprobs"][1:]),
                                          "fx2_teacher_logprobs", "2^23"),
}


@pytest.mark.parametrize("case", list(LENGTHS))
def test_lengths_that_disagree_are_refused(lake, case):
    encoding, name, column, value, named, word = LENGTHS[case]
    refused(lake, name, spoilt(lake[2][encoding], name, column, value), named, ROW, word)


def test_both_encodings_as_scoring_writes_them_are_accepted(lake):
    """fx/2 rows hold empty fx16/1 lists, fx16/1 rows null fx/2 columns: both pass the checks
    (the fixture committed them), and so do behaviour log-probs left null."""
    cat, _, made = lake
    assert sorted(cat.sql("SELECT DISTINCT encoding FROM token_stats").column(0).to_pylist()) == [FX2, FX16]
    rows = rows_with_new_ids(made[FX2], "responses")
    for r in rows:
        r["behaviour_logprobs"] = None
    rows[1]["behaviour_logprobs"] = [-0.25] * len(rows[1]["token_ids"])
    with cat.commit("accepted") as tx:
        assert tx.append("responses", rows) == (len(rows), 0)


VERDICTS = {
    "an 'ok' verdict without a score": ("state", "ok", "score", None, "score", "null where state = 'ok'"),
    "an 'error' verdict with a score": ("state", "error", "score", 0.0, "score", "must be null where state != 'ok'"),
    "a score above 1": ("state", "ok", "score", 1.5, "score", "outside [0, 1]"),
}


@pytest.mark.parametrize("case", list(VERDICTS))
def test_verdict_scores_follow_their_state(lake, case):
    c1, v1, c2, v2, named, word = VERDICTS[case]
    rows = rows_with_new_ids(lake[2][FX2], "verdicts")
    rows[ROW][c1], rows[ROW][c2] = v1, v2
    refused(lake, "verdicts", rows, named, ROW, word)


def test_a_string_in_a_float_column_is_named_with_its_row_whatever_the_input(lake):
    import pandas as pd
    import polars as pl

    rows = rows_with_new_ids(lake[2][FX2], "rewards")
    rows[ROW]["reward"] = "high"
    refused(lake, "rewards", rows, "reward", ROW, "'high'", "a str")  # row dicts: Arrow cannot type them
    refused(lake, "rewards", pd.DataFrame(rows), "reward", ROW, "'high'")  # pandas, an object column
    as_text = [{**r, "reward": str(r["reward"])} for r in rows]
    refused(lake, "rewards", pl.DataFrame(as_text), "reward", ROW, "'high'", "double")  # polars, a text column
    refused(lake, "rewards", pa.Table.from_pylist(as_text), "reward", ROW, "'high'")  # Arrow, a text column


def test_an_integer_out_of_range_and_a_list_of_text_are_named(lake):
    rows = rows_with_new_ids(lake[2][FX2], "responses")
    rows[ROW]["sample_index"] = 2 ** 40
    refused(lake, "responses", rows, "sample_index", ROW, str(2 ** 40))
    rows = rows_with_new_ids(lake[2][FX2], "responses")
    rows[ROW]["token_ids"] = ["a", "b"]
    refused(lake, "responses", rows, "token_ids", ROW, "'a'")


def test_pandas_missing_values_are_nulls(lake):
    """A pandas NaN is a missing value: where the column is required it is refused as a null,
    naming the row; an unparseable verdict's NaN score is the null it means."""
    import pandas as pd

    rows = rows_with_new_ids(lake[2][FX2], "rewards")
    rows[ROW]["advantage"] = math.nan
    refused(lake, "rewards", pd.DataFrame(rows), "advantage", ROW, "null value in a required column")
    verdicts = rows_with_new_ids(lake[2][FX2], "verdicts")
    verdicts[ROW].update(state="unparseable", score=None, error="no answer")
    cat = lake[0]
    with cat.commit("pandas") as tx:
        assert tx.append("verdicts", pd.DataFrame(verdicts)) == (len(verdicts), 0)
    assert cat.sql("SELECT score FROM verdicts WHERE verdict_id = $v",
                   params={"v": verdicts[ROW]["verdict_id"]}).column(0).to_pylist() == [None]


def test_the_row_counts_across_the_chunks_of_one_append(lake):
    """An iterable of batches: the row named is the row of everything appended, not of its chunk."""
    t = spoilt(lake[2][FX2], "rewards", "advantage", math.nan, row=10)
    refused(lake, "rewards", iter(t.to_batches(max_chunksize=4)), "advantage", 10)
    rows = t.to_pylist()
    refused(lake, "rewards", [rows[:4], rows[4:8], rows[8:]], "advantage", 10)


def test_a_null_in_a_required_column_names_its_row(lake):
    refused(lake, "responses", spoilt(lake[2][FX2], "responses", "prompt", None), "prompt", ROW, "null value")
    refused(lake, "responses", spoilt(lake[2][FX2], "responses", "token_ids",
                                      lambda r: [1, None] + list(r["token_ids"][2:])), "token_ids", ROW, "element 1")


def test_a_key_only_later_rows_have_is_not_dropped(lake):
    rows = rows_with_new_ids(lake[2][FX2], "rewards")
    rows[ROW]["bonus"] = 1.0  # the first row has no such key: before, it vanished
    refused(lake, "rewards", rows, "bonus", None, "unknown column")
    rows = rows_with_new_ids(lake[2][FX2], "rewards")
    rows[ROW] = "not a row"
    refused(lake, "rewards", rows, None, ROW, "not a dict")


def test_a_partition_value_that_is_not_an_id_names_its_row(lake):
    refused(lake, "verdicts", spoilt(lake[2][FX2], "verdicts", "iteration_id", "../../etc"), "iteration_id", ROW,
            "'../../etc'")


def test_data_of_no_supported_kind_is_an_input_error(lake):
    cat, folder, _ = lake
    before = state(cat, folder)
    for data in ("responses.parquet", {"reward": [1.0]}, 42):
        with pytest.raises(InputError, match="cannot append data of type"):
            cat.append("rewards", data, "nonsense")
    assert state(cat, folder) == before



def test_a_shard_worker_writing_files_gets_the_same_checks(lake):
    """catalog.data_files.write_table_files (what shard workers call) refuses what an append
    refuses, naming the row, and writes no file; it takes the same kinds of data."""
    from catalog.data_files import write_table_files

    cat, folder, made = lake
    before = state(cat, folder)
    with pytest.raises(SchemaMismatchError) as err:
        write_table_files(cat.config, "rewards", spoilt(made[FX2], "rewards", "reward", math.inf))
    assert (err.value.column, err.value.row) == ("reward", ROW)
    assert state(cat, folder) == before
    (path,) = write_table_files(cat.config, "rewards", rows_with_new_ids(made[FX2], "rewards"))  # row dicts
    with cat.commit("from a shard") as tx:
        assert tx.add_file("rewards", path) == (made[FX2]["rewards"].num_rows, 0)
