"""Judging and re-scoring from what the catalog holds: no generation, no scoring pass, no change
to any response row. New verdicts and reward rows are appended under new ids."""

from __future__ import annotations

from dataclasses import dataclass

from tqdm.auto import tqdm

from catalog import Catalog
from rewards.judges import Judge, JudgeItem, verdict_rows
from rewards.scores import check_hex_ids, reward_config_row, reward_sql
from schemas.config import RewardConfig


@dataclass
class JudgeResult:
    judged: int
    already: int
    states: dict[str, int]
    versions: list[int]


def _iteration_filter(iteration: int | None) -> str:
    return "" if iteration is None else f" AND it.iteration = {int(iteration)}"


def judge_missing(catalog: Catalog, judge: Judge, *, iteration: int | None = None,
                  batch_size: int = 512, progress: bool = False) -> JudgeResult:
    """Judge every response that has no verdict of ``judge`` yet; one commit per batch, so a
    crash loses at most one batch and a re-run judges only what is missing."""
    jid = judge.judge_id
    todo = catalog.sql(
        "SELECT r.response_id, q.question, q.answer, q.answer_type, q.choices, r.text "
        "FROM responses r JOIN questions q USING (question_id) JOIN iterations it USING (iteration_id) "
        "WHERE r.response_id NOT IN (SELECT response_id FROM verdicts WHERE judge_id = $j)"
        + _iteration_filter(iteration) + " ORDER BY r.response_id", params={"j": jid}).to_pylist()
    total = catalog.sql("SELECT count(*) FROM responses r JOIN iterations it USING (iteration_id) WHERE true"
                        + _iteration_filter(iteration)).column(0)[0].as_py()
    states: dict[str, int] = {}
    versions = []
    for start in tqdm(range(0, len(todo), batch_size), desc=f"judge {judge.kind}", disable=not progress):
        rows = todo[start:start + batch_size]
        items = [JudgeItem(r["response_id"], r["question"], r["answer"], r["answer_type"], r["text"],
                           tuple(r["choices"] or ())) for r in rows]
        verdicts = judge.judge(items)
        for v in verdicts:
            states[v.state] = states.get(v.state, 0) + 1
        res = catalog.append("verdicts", verdict_rows(judge, items, verdicts), f"judge {judge.kind}",
                             stage="judge", judge_id=jid)
        if res.version is not None:
            versions.append(res.version)
    return JudgeResult(len(todo), total - len(todo), states, versions)


@dataclass
class RescoreResult:
    version: int | None
    added: int
    skipped: int
    unrewarded: int  # responses without an ok verdict of the judge, or without summaries


def rescore(catalog: Catalog, config: RewardConfig, *, iteration: int | None = None,
            rows_per_file: int = 1_000_000) -> RescoreResult:
    """Reward rows under ``config`` for every response with an ok verdict of its judge and token
    summaries of its iteration's scoring pair, appended with the config row in one commit. The
    rewards are computed by one SQL query inside the catalog engine and streamed into Parquet."""
    f = _iteration_filter(iteration)
    con = catalog.connection()
    # views in the in-memory database, visible to the cursor that streams the result while the
    # commit's own statements run on the main connection
    responses = "lake.responses"
    if iteration is not None:
        con.execute("CREATE OR REPLACE VIEW memory.main._rescore_responses AS SELECT r.* "
                    "FROM lake.responses r JOIN lake.iterations it USING (iteration_id) WHERE true" + f)
        responses = "memory.main._rescore_responses"
    stats = "lake.token_stats"
    several = con.execute("SELECT count(*) > count(DISTINCT response_id) FROM lake.token_stats").fetchone()[0]
    if several:  # a response scored more than once: keep its iteration's pair, first by stats_id
        div = config.divergence
        con.execute("CREATE OR REPLACE VIEW memory.main._rescore_stats AS "
                    f"SELECT ts.response_id, min(ts.stats_id) AS stats_id, arg_min(ts.{div}, ts.stats_id) AS {div} "
                    "FROM lake.token_stats ts JOIN lake.responses r USING (response_id) "
                    "JOIN lake.iterations it USING (iteration_id) "
                    "WHERE ts.teacher_model_id = it.teacher_model_id AND ts.student_model_id = it.student_model_id "
                    "AND abs(ts.teacher_mask_ratio - it.mask_ratio) < 1e-9 GROUP BY ts.response_id")
        stats = "memory.main._rescore_stats"
    try:
        check_hex_ids(con, responses)
        total = con.execute(f"SELECT count(*) FROM {responses}").fetchone()[0]
        with catalog.commit(f"rescore {config.id}", stage="rescore", reward_config_id=config.id,
                            judge_id=config.judge_id, iteration=iteration) as tx:
            tx.append("reward_configs", [reward_config_row(config)])
            stream = con.cursor()
            reader = stream.execute(reward_sql(config, responses, "lake.verdicts", stats)
                                    ).to_arrow_reader(rows_per_file)
            added, skipped = tx.append("rewards", reader)
            stream.close()
    finally:
        con.execute("DROP VIEW IF EXISTS memory.main._rescore_responses")
        con.execute("DROP VIEW IF EXISTS memory.main._rescore_stats")
    return RescoreResult(tx.result.version, added, skipped, total - added - skipped)
