"""Golden values for divergence aggregation, group normalisation and advantages, degenerate groups
included."""

import math
from datetime import datetime, timezone

import pyarrow as pa
import pytest

from rewards.scores import compute_rewards
from schemas import token_codec as codec
from schemas.config import RewardConfig
from schemas.tables import TOKEN_STATS

J = "judge-1"


def stats(rows, encoding=codec.ENCODING):
    """rows: (response_id, [per-token jsd]); kl_forward is twice the jsd."""
    out = []
    for rid, jsd in rows:
        n = len(jsd)
        out.append({"stats_id": "s" + rid, "response_id": rid, "iteration_id": "i", "teacher_model_id": "t", "teacher_mask_ratio": 0.2,
                    "student_model_id": "s", "encoding": encoding, "top_k": 1, "num_tokens": n,
                    **codec.encode_columns(encoding, student_logprobs=[0.0] * n, teacher_logprobs=[0.0] * n, jsd=jsd,
                                           kl_forward=[2 * x for x in jsd], kl_reverse=[0.0] * n,
                                           topk_ids=[[1]] * n, topk_logprobs=[[0.0]] * n, token_ids=[1] * n),
                    "created_at": datetime.now(timezone.utc)})
    return pa.Table.from_pylist(out, schema=TOKEN_STATS.schema)


def with_iteration(responses):
    """Responses of one iteration, "i" (the per-response tables are partitioned by it)."""
    return responses.append_column("iteration_id", pa.array(["i"] * responses.num_rows))


def replace(table, column, values):
    i = table.schema.get_field_index(column)
    return table.set_column(i, column, pa.array(values)).cast(TOKEN_STATS.schema)


def verdicts(scores, states=None):
    states = states or {}
    return pa.table({"response_id": list(scores), "verdict_id": ["v" + r for r in scores],
                     "judge_id": [J] * len(scores), "score": [None if s is None else float(s) for s in scores.values()],
                     "state": [states.get(r, "ok" if s is not None else "error") for r, s in scores.items()]})


@pytest.mark.parametrize("encoding", codec.ENCODINGS)
def test_divergence_aggregation(encoding):
    responses = with_iteration(pa.table({"response_id": ["a", "b"], "group_id": ["g1", "g2"]}))
    t = stats([("a", [0.1, 0.3]), ("b", [0.2])], encoding)
    v = verdicts({"a": 1, "b": 1})

    def d(**kw):
        rows = compute_rewards(responses, v, t, RewardConfig(judge_id=J, **kw)).rewards.to_pylist()
        return {r["response_id"]: r["divergence"] for r in rows}

    assert d()["a"] == pytest.approx(0.2, abs=1e-4) and d(aggregation="sum")["a"] == pytest.approx(0.4, abs=1e-4)
    assert d(divergence="kl_forward")["a"] == pytest.approx(0.4, abs=1e-3) and d()["b"] == pytest.approx(0.2, abs=1e-4)
    if encoding == codec.FX2:  # the exact sums: no fixed-point step (0.1 and 0.3 as float32)
        assert d()["a"] == pytest.approx(0.2, abs=1e-7) and d(divergence="kl_forward")["a"] == pytest.approx(0.4, abs=1e-7)


def test_reward_ids_equal_the_id_function():
    from schemas import ids

    responses = with_iteration(pa.table({"response_id": ["a1", "b2"], "group_id": ["g", "g"]}))
    config = RewardConfig(judge_id=J)
    rows = compute_rewards(responses, verdicts({"a1": 1, "b2": 0}), stats([("a1", [0.1]), ("b2", [0.2])]),
                           config).rewards.to_pylist()
    assert {r["reward_id"] for r in rows} == {ids.reward_id("a1", config.id), ids.reward_id("b2", config.id)}


def test_golden_group():
    responses = with_iteration(pa.table({"response_id": ["a", "b", "c"], "group_id": ["g"] * 3}))
    res = compute_rewards(responses, verdicts({"a": 1, "b": 0, "c": 1}),
                          stats([("a", [0.1]), ("b", [0.3]), ("c", [0.2])]), RewardConfig(judge_id=J))
    rows = {r["response_id"]: r for r in res.rewards.to_pylist()}
    assert [rows[k]["r_distill"] for k in "abc"] == pytest.approx([1.0, 0.0, 0.5], abs=1e-4)
    assert [rows[k]["reward"] for k in "abc"] == pytest.approx([2.0, 0.0, 1.5], abs=1e-4)
    mean, std = 7 / 6, math.sqrt(((2 - 7 / 6) ** 2 + (7 / 6) ** 2 + (1.5 - 7 / 6) ** 2) / 2)
    assert [rows[k]["advantage"] for k in "abc"] == pytest.approx(
        [(2 - mean) / std, -mean / std, (1.5 - mean) / std], abs=1e-3)
    assert rows["a"]["verdict_id"] == "va" and rows["a"]["token_stats_id"] == "sa"
    weighted = compute_rewards(responses, verdicts({"a": 1, "b": 0, "c": 1}),
                               stats([("a", [0.1]), ("b", [0.3]), ("c", [0.2])]),
                               RewardConfig(judge_id=J, w_acc=1.0, w_distill=0.5))
    assert {r["response_id"]: r["reward"] for r in weighted.rewards.to_pylist()}["c"] == pytest.approx(1.25, abs=1e-4)
    assert res.rewards.column("reward_config_id").to_pylist()[0] != weighted.rewards.column("reward_config_id")[0].as_py()


def test_degenerate_groups():
    responses = with_iteration(pa.table({"response_id": ["a", "b", "c", "d"], "group_id": ["same", "same", "one", "tie"]}))
    res = compute_rewards(responses, verdicts({"a": 1, "b": 1, "c": 0, "d": None}),
                          stats([("a", [0.2]), ("b", [0.2]), ("c", [0.5]), ("d", [0.1])]), RewardConfig(judge_id=J))
    rows = {r["response_id"]: r for r in res.rewards.to_pylist()}
    assert rows["a"]["r_distill"] == rows["b"]["r_distill"] == 1.0  # all D equal: 1 each
    assert rows["a"]["advantage"] == rows["b"]["advantage"] == 0.0  # all R equal: 0
    assert rows["c"]["r_distill"] == 1.0 and rows["c"]["advantage"] == 0.0  # a group of one
    assert "d" not in rows and res.unrewarded == 1  # an error verdict is no reward, not a 0
    assert all(math.isfinite(r["advantage"]) for r in rows.values())


def test_unparseable_members_are_left_out_and_error_members_hold_the_group_back():
    responses = with_iteration(pa.table({"response_id": ["a", "b", "c", "d", "e"], "group_id": ["g1"] * 3 + ["g2"] * 2}))
    res = compute_rewards(responses, verdicts({"a": 1, "b": 0, "c": None, "d": 1, "e": None},
                                              {"c": "unparseable", "e": "error"}),
                          stats([(r, [0.1 * (i + 1)]) for i, r in enumerate("abcde")]), RewardConfig(judge_id=J))
    rows = {r["response_id"]: r for r in res.rewards.to_pylist()}
    assert set(rows) == {"a", "b"}  # c: unparseable, no reward; g2 waits for e's retry
    assert rows["a"]["r_distill"] == 1.0 and rows["b"]["r_distill"] == 0.0  # normalised over a, b
    assert res.unrewarded == 3


def test_one_reward_per_response_when_scored_twice_and_equal_d_different_r():
    responses = with_iteration(pa.table({"response_id": ["a", "b"], "group_id": ["g", "g"]}))
    twice = pa.concat_tables([stats([("a", [0.2]), ("b", [0.2])]),
                              replace(stats([("a", [0.6])]), "stats_id", ["zz"])])
    res = compute_rewards(responses, verdicts({"a": 1, "b": 0}), twice, RewardConfig(judge_id=J))
    rows = {r["response_id"]: r for r in res.rewards.to_pylist()}
    assert len(rows) == 2 and rows["a"]["token_stats_id"] == "sa"  # the first summary by id
    assert rows["a"]["r_distill"] == rows["b"]["r_distill"] == 1.0  # equal D: 1 each...
    assert rows["a"]["advantage"] == pytest.approx(1 / math.sqrt(2)) and rows["b"]["advantage"] == pytest.approx(-1 / math.sqrt(2))


def test_summaries_of_another_scoring_pair_are_ignored():
    responses = with_iteration(pa.table({"response_id": ["a", "b"], "group_id": ["g", "g"]}))
    iterations = pa.table({"iteration_id": ["i"], "teacher_model_id": ["t"], "student_model_id": ["s"],
                           "mask_ratio": [0.2]})
    other = replace(replace(stats([("a", [0.6])]), "stats_id", ["a0"]), "teacher_model_id", ["T2"])
    res = compute_rewards(responses, verdicts({"a": 1, "b": 1}),
                          pa.concat_tables([stats([("a", [0.1]), ("b", [0.3])]), other]),
                          RewardConfig(judge_id=J), iterations=iterations)
    rows = {r["response_id"]: r for r in res.rewards.to_pylist()}
    assert rows["a"]["token_stats_id"] == "sa" and rows["a"]["divergence"] == pytest.approx(0.1, abs=1e-4)


def test_divergences_are_a_registry_and_an_unknown_one_is_named():
    from schemas.divergences import DIVERGENCES
    from schemas.errors import ConfigError, UnknownKindError

    assert list(DIVERGENCES) == ["jsd", "kl_forward", "kl_reverse"]
    with pytest.raises(ConfigError, match="divergence: unknown divergence 'kl'; known: jsd, kl_forward, kl_reverse"):
        RewardConfig.parse({"judge_id": J, "divergence": "kl"}, where="--reward-config")
    with pytest.raises(UnknownKindError, match="unknown divergence 'kl'"):
        codec.sql_divergence("kl", "mean")
    with pytest.raises(UnknownKindError, match="unknown divergence 'kl'"):
        DIVERGENCES.build("kl")


def test_a_registered_divergence_reaches_the_reward_query():
    """A new divergence over the stored summaries: a class with its SQL and one registration."""
    from schemas.divergences import DIVERGENCES
    from schemas.registry import NoParams

    class JsdPlusKl:
        def sql(self, aggregation, ts="ts"):
            return (f"({DIVERGENCES.build('jsd').sql(aggregation, ts)} + "
                    f"{DIVERGENCES.build('kl_forward').sql(aggregation, ts)})")

    responses = with_iteration(pa.table({"response_id": ["a", "b"], "group_id": ["g", "g"]}))
    t, v = stats([("a", [0.1, 0.3]), ("b", [0.2])]), verdicts({"a": 1, "b": 1})
    DIVERGENCES.register("jsd_plus_kl", NoParams, lambda params: JsdPlusKl())
    try:
        rows = compute_rewards(responses, v, t, RewardConfig(judge_id=J, divergence="jsd_plus_kl")).rewards.to_pylist()
    finally:
        del DIVERGENCES["jsd_plus_kl"]
    d = {r["response_id"]: r["divergence"] for r in rows}
    assert d["a"] == pytest.approx(0.2 + 0.4, abs=1e-6) and d["b"] == pytest.approx(0.2 + 0.4, abs=1e-6)
