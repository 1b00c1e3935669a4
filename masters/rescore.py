"""Judging and re-scoring from what the catalog holds: no generation, no scoring pass, no change
to any response row. New verdicts and reward rows are appended under new ids."""

from __future__ import annotations

from dataclasses import dataclass

from catalog import Catalog
from masters.stages import JUDGE, JudgeScope, queries, run_stage
from rewards.judges import Judge
from rewards.scores import check_hex_ids, reward_config_row, reward_sql
from schemas.config import RewardConfig


@dataclass
class JudgeResult:
    judged: int
    already: int
    states: dict[str, int]
    versions: list[int]


def judge_missing(catalog: Catalog, judge: Judge, *, iteration: int | None = None, run_id: str | None = None,
                  batch_size: int = 2048, progress: bool = False) -> JudgeResult:
    """Judge every response that has no final verdict (ok / unparseable) of ``judge`` yet, error
    verdicts included (retried): the ``judge`` stage, one commit per batch, so a crash loses at
    most one batch and a re-run judges only what is missing."""
    res = run_stage(JUDGE, catalog, JudgeScope(judge, iteration, run_id, batch_size), progress=progress)
    total = queries.responses_in_scope(catalog, iteration, run_id)
    return JudgeResult(res.units, total - res.units, res.counts, res.versions)


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
    responses = queries.scoped_responses_sql(catalog, iteration, run_id, version)
    check_hex_ids(con, responses)
    total = con.execute(f"SELECT count(*) FROM {responses}").fetchone()[0]
    # rewarded over: the non-empty responses of groups with enough of them (queries.EMPTY)
    sql = reward_sql(config, queries.rewardable_responses_sql(catalog, iteration, run_id, version), t["verdicts"], t["token_stats"], t["iterations"],
                     queries.iteration_ids_in_scope(catalog, iteration, run_id))
    with catalog.commit(f"rescore {config.id}", stage="rescore", reward_config_id=config.id,
                        judge_id=config.judge_id, iteration=iteration, read_version=version) as tx:
        tx.append("reward_configs", [reward_config_row(config)])
        stream = con.cursor()  # streams the result while the commit's statements run on `con`
        try:
            # one row per response by construction: no within-chunk duplicate check needed
            tx.append("rewards", stream.execute(sql).to_arrow_reader(rows_per_file), unique_ids=True)
        finally:
            stream.close()
    added, skipped = tx.result.added["rewards"], tx.result.skipped["rewards"]
    return RescoreResult(tx.result.version, added, skipped, total - added - skipped)
