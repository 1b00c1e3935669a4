"""Divergences, distillation rewards, combined rewards and GRPO group advantages, as one SQL query
(DuckDB) over Arrow tables or over the catalog's own tables: vectorised, no per-row Python, and
when re-scoring a catalog the data never leaves the engine until the new rows are written.

Definitions (the paper's; docs/architecture.md, "The reward computation"):

- D per response: the per-token divergence stored in `token_stats` (``jsd`` by default,
  ``kl_forward`` or ``kl_reverse``: a name of the registry ``schemas.divergences.DIVERGENCES``)
  aggregated over the response's tokens by ``mean`` (default) or ``sum``: exact in an ``fx/2`` row
  (which stores the sum as computed), the sum of the decoded fixed-point values in an ``fx16/1``
  row (``schemas/token_codec.py``).
- R_distill = (D_max - D) / (D_max - D_min) within the response's group. **A group whose D are all
  equal (or that has one response) gets R_distill = 1 for every member**: none is further from the
  teacher than another.
- R = w_acc * R_acc + w_distill * R_distill, R_acc the judge's score.
- Advantage A = (R - mean) / std within the group, std with Bessel's correction (as TRL's GRPO);
  **a group whose R are all equal (std 0, or one response) gets A = 0**: it carries no signal.

Only complete groups are rewarded (every member has a final verdict and token summaries), so a
group's normalisation never changes once written; members whose verdict is unparseable get no
reward row (a failed judgement is never a 0). Both are counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import duckdb
import pyarrow as pa

from schemas.config import RewardConfig
from schemas.divergences import DIVERGENCES
from schemas.tables import REWARDS, TOKEN_STATS



def reward_sql(config: RewardConfig, responses: str, verdicts: str, token_stats: str,
               iterations: str | None = None, iteration_ids: Sequence[str] | None = None) -> str:
    """The query producing REWARDS rows; the arguments are SQL table references (catalog tables,
    possibly at a version, or registered Arrow tables). Values are inlined from the validated
    config (finite floats, hex ids). reward_id = ids.reward_id(response_id, config id), in SQL.

    - Summaries: with ``iterations``, only those of the response's iteration scoring pair
      (teacher, its mask ratio, student); one per response (the first by stats_id) when several.
    - Verdicts: the config's judge, final states only (ok / unparseable; errors are retried).
    - Only complete groups are rewarded: every member has a final verdict and summaries, so a
      group's normalisation never changes after its rows are written. Members whose verdict is
      unparseable get no reward row (never a 0).

    It is :func:`reward_inputs_sql` (per-response inputs of complete groups) followed by
    :func:`reward_rows_sql` (the group normalisation), which a caller may also run apart."""
    return reward_rows_sql(config, f"({reward_inputs_sql(config, responses, verdicts, token_stats, iterations, iteration_ids)})")


def reward_inputs_sql(config: RewardConfig, responses: str, verdicts: str, token_stats: str,
                      iterations: str | None = None, iteration_ids: Sequence[str] | None = None) -> str:
    """Per response of a complete group: response_id, iteration_id, group_id, verdict_id, state,
    r_acc, stats_id and D (the aggregated divergence). See :func:`reward_sql`. ``iteration_ids``
    (the responses' iterations, when the caller knows them) restricts the verdicts and summaries
    read to those partitions, so the query's cost follows the iterations, not the catalog."""
    judge = config.judge_id.replace("'", "''")
    pair = "" if iterations is None else (
        f" JOIN {responses} pr USING (response_id) JOIN {iterations} it ON it.iteration_id = pr.iteration_id "
        "WHERE ts.teacher_model_id = it.teacher_model_id AND ts.student_model_id = it.student_model_id "
        "AND abs(ts.teacher_mask_ratio - it.mask_ratio) < 1e-9")

    def part(column: str, where_open: str = "x") -> str:
        if iteration_ids is None:
            return ""
        values = ", ".join("'" + i.replace("'", "''") + "'" for i in iteration_ids) or "NULL"
        return f" {'AND' if where_open else 'WHERE'} {column} IN ({values})"

    return f"""
        WITH v AS (SELECT response_id, verdict_id, score AS r_acc, state FROM {verdicts}
                   WHERE judge_id = '{judge}' AND state IN ('ok', 'unparseable'){part("iteration_id")}),
             s AS (SELECT ts.response_id, ts.stats_id,
                          {DIVERGENCES.build(config.divergence).sql(config.aggregation)} AS D
                   FROM {token_stats} ts{pair}{part("ts.iteration_id", pair)}),
             d AS (SELECT response_id, min(stats_id) AS stats_id, arg_min(D, stats_id) AS D
                   FROM s GROUP BY response_id),
             x AS (SELECT r.response_id, r.iteration_id, r.group_id, v.verdict_id, v.state, v.r_acc, d.stats_id, d.D
                   FROM {responses} r LEFT JOIN v USING (response_id) LEFT JOIN d USING (response_id))
        SELECT * FROM x
        QUALIFY bool_and(state IS NOT NULL AND D IS NOT NULL) OVER (PARTITION BY group_id)"""


def reward_rows_sql(config: RewardConfig, inputs: str) -> str:
    """REWARDS rows from the per-response inputs of complete groups (:func:`reward_inputs_sql`):
    R_distill by group min-max of D, R, and the group advantage."""
    cid = config.id
    key_prefix = '{"kind":"reward","response_id":"'
    key_suffix = f'","reward_config_id":"{cid}"' + "}"
    return f"""
        WITH y AS (SELECT *, CASE WHEN max(D) OVER g > min(D) OVER g
                                  THEN (max(D) OVER g - D) / (max(D) OVER g - min(D) OVER g)
                                  ELSE 1.0 END AS r_distill
                   FROM {inputs} AS c WHERE state = 'ok' WINDOW g AS (PARTITION BY group_id)),
             z AS (SELECT *, {config.w_acc!r} * r_acc + {config.w_distill!r} * r_distill AS reward FROM y)
        SELECT substr(sha256('{key_prefix}' || response_id || '{key_suffix}'), 1, 32) AS reward_id,
               response_id, iteration_id, '{cid}' AS reward_config_id, group_id, verdict_id,
               stats_id AS token_stats_id, r_acc, D AS divergence, r_distill, reward,
               CASE WHEN stddev_samp(reward) OVER g > 0
                    THEN (reward - avg(reward) OVER g) / stddev_samp(reward) OVER g
                    ELSE 0.0 END AS advantage,
               now()::TIMESTAMPTZ AS created_at
        FROM z WINDOW g AS (PARTITION BY group_id)"""


def check_hex_ids(con: duckdb.DuckDBPyConnection, responses: str) -> None:
    """reward ids are made in SQL from the canonical JSON of the id fields, which equals
    ``schemas.ids.reward_id`` only for ids that need no JSON escaping (content hashes do)."""
    bad = con.execute(f"SELECT response_id FROM {responses} WHERE NOT regexp_full_match(response_id, "
                      "'[0-9A-Za-z_.:-]+') LIMIT 1").fetchone()
    if bad:
        raise ValueError(f"response id {bad[0]!r} is not a plain content-hash id; cannot compute reward ids")


@dataclass
class RewardResult:
    rewards: pa.Table
    unrewarded: int  # responses without a reward row: unparseable, or their group incomplete


def compute_rewards(responses: pa.Table, verdicts: pa.Table, token_stats: pa.Table,
                    config: RewardConfig, iterations: pa.Table | None = None) -> RewardResult:
    """Reward rows (REWARDS schema) under ``config`` from in-memory Arrow tables (with
    ``iterations``, summaries are restricted to each response's iteration scoring pair)."""
    con = duckdb.connect()
    con.register("responses", responses)
    con.register("verdicts", verdicts)
    for f in TOKEN_STATS.schema:  # rows of one encoding may come without the other's columns
        if f.nullable and f.name not in token_stats.column_names:
            token_stats = token_stats.append_column(f, pa.nulls(token_stats.num_rows, f.type))
    con.register("token_stats", token_stats)
    if iterations is not None:
        con.register("iterations", iterations)
    check_hex_ids(con, "responses")
    rewards = con.execute(reward_sql(config, "responses", "verdicts", "token_stats",
                                     "iterations" if iterations is not None else None)).to_arrow_table()
    con.close()
    return RewardResult(rewards.cast(REWARDS.schema), responses.num_rows - rewards.num_rows)


def reward_config_row(config: RewardConfig) -> dict:
    return {"reward_config_id": config.id, "judge_id": config.judge_id, "divergence": config.divergence,
            "aggregation": config.aggregation, "w_acc": config.w_acc, "w_distill": config.w_distill,
            "normalisation": config.normalisation, "config_json": config.to_json(),
            "created_at": datetime.now(timezone.utc)}
