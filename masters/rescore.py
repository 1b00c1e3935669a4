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


def _iteration_filter(iteration: int | None, run_id: str | None = None) -> str:
    """SQL restricting to one iteration (of one run when ``run_id`` is given)."""
    out = "" if iteration is None else f" AND it.iteration = {int(iteration)}"
    if run_id is not None:
        out += " AND it.run_id = '" + run_id.replace("'", "''") + "'"
    return out


def judge_missing(catalog: Catalog, judge: Judge, *, iteration: int | None = None, run_id: str | None = None,
                  batch_size: int = 2048, progress: bool = False) -> JudgeResult:
    """Judge every response that has no final verdict (ok / unparseable) of ``judge`` yet, error
    verdicts included (retried); one commit per batch, so a crash loses at most one batch and a
    re-run judges only what is missing."""
    jid = judge.judge_id
    # missing: no final verdict (ok / unparseable) yet; error verdicts are retried, as attempt n
    todo = catalog.sql(
        "SELECT r.response_id, q.question, q.answer, q.answer_type, q.choices, r.text, "
        "(SELECT count(*) FROM verdicts e WHERE e.response_id = r.response_id AND e.judge_id = $j "
        " AND e.state = 'error') AS attempt "
        "FROM responses r JOIN questions q USING (question_id) JOIN iterations it USING (iteration_id) "
        "WHERE r.response_id NOT IN (SELECT response_id FROM verdicts WHERE judge_id = $j "
        "AND state IN ('ok', 'unparseable'))"
        + _iteration_filter(iteration, run_id) + " ORDER BY r.response_id", params={"j": jid}).to_pylist()
    total = catalog.sql("SELECT count(*) FROM responses r JOIN iterations it USING (iteration_id) WHERE true"
                        + _iteration_filter(iteration, run_id)).column(0)[0].as_py()
    states: dict[str, int] = {}
    versions = []
    for start in tqdm(range(0, len(todo), batch_size), desc=f"judge {judge.kind}", disable=not progress):
        rows = todo[start:start + batch_size]
        items = [JudgeItem(r["response_id"], r["question"], r["answer"], r["answer_type"], r["text"],
                           tuple(r["choices"] or ())) for r in rows]
        verdicts = judge.judge(items)
        for v in verdicts:
            states[v.state] = states.get(v.state, 0) + 1
        attempts = {r["response_id"]: r["attempt"] for r in rows if r["attempt"]}
        res = catalog.append("verdicts", verdict_rows(judge, items, verdicts, attempts), f"judge {judge.kind}",
                             stage="judge", judge_id=jid)
        if res.version is not None:
            versions.append(res.version)
    return JudgeResult(len(todo), total - len(todo), states, versions)


@dataclass
class RescoreResult:
    version: int | None
    added: int
    skipped: int
    unrewarded: int  # responses without a reward row: unparseable, or their group is incomplete


def rescore(catalog: Catalog, config: RewardConfig, *, iteration: int | None = None, run_id: str | None = None,
            rows_per_file: int = 1_000_000) -> RescoreResult:
    """Reward rows under ``config`` (rewards.scores.reward_sql: complete groups, final verdicts of
    the config's judge, summaries of each iteration's scoring pair), appended with the config row
    in one commit. Computed by one SQL query inside the catalog engine, pinned to the version read
    at the start, and streamed into Parquet."""
    con = catalog.connection()
    version = catalog.current_version()  # the cursor reads this version, whatever commits meanwhile
    t = {name: f"(SELECT * FROM {catalog.table_ref(name, version)})"
         for name in ("responses", "verdicts", "token_stats", "iterations")}
    responses = t["responses"]
    if iteration is not None or run_id is not None:
        responses = (f"(SELECT r.* FROM {t['responses']} AS r JOIN {t['iterations']} AS it "
                     f"USING (iteration_id) WHERE true{_iteration_filter(iteration, run_id)})")
    check_hex_ids(con, responses)
    total = con.execute(f"SELECT count(*) FROM {responses}").fetchone()[0]
    sql = reward_sql(config, responses, t["verdicts"], t["token_stats"], t["iterations"])
    with catalog.commit(f"rescore {config.id}", stage="rescore", reward_config_id=config.id,
                        judge_id=config.judge_id, iteration=iteration, read_version=version) as tx:
        tx.append("reward_configs", [reward_config_row(config)])
        stream = con.cursor()  # streams the result while the commit's statements run on `con`
        try:
            # one row per response by construction: no within-chunk duplicate check needed
            added, skipped = tx.append("rewards", stream.execute(sql).to_arrow_reader(rows_per_file),
                                       unique_ids=True)
        finally:
            stream.close()
    return RescoreResult(tx.result.version, added, skipped, total - added - skipped)
