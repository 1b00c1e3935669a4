"""Divergences, distillation rewards, combined rewards and GRPO group advantages, as one SQL query
(DuckDB) over Arrow tables or over the catalog's own tables: vectorised, no per-row Python, and
when re-scoring a catalog the data never leaves the engine until the new rows are written.

Definitions (DESIGN.md, "The recipe"):

- D per response: the per-token divergence stored in `token_stats` (``jsd`` by default,
  ``kl_forward`` or ``kl_reverse``), decoded (``schemas/token_codec.py``) and aggregated over the
  response's tokens by ``mean`` (default) or ``sum``.
- R_distill = (D_max - D) / (D_max - D_min) within the response's group. **A group whose D are all
  equal (or that has one response) gets R_distill = 1 for every member**: none is further from the
  teacher than another.
- R = w_acc * R_acc + w_distill * R_distill, R_acc the judge's score.
- Advantage A = (R - mean) / std within the group, std with Bessel's correction (as TRL's GRPO);
  **a group whose R are all equal (std 0, or one response) gets A = 0**: it carries no signal.

Responses without an ``ok`` verdict of the config's judge get no reward row (a failed judgement
is never a 0), nor do responses without token summaries; both are counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import duckdb
import pyarrow as pa

from schemas import token_codec as codec
from schemas.config import RewardConfig
from schemas.tables import REWARDS

SCALES = {"jsd": codec.JSD_SCALE, "kl_forward": codec.KL_SCALE, "kl_reverse": codec.KL_SCALE}


def reward_sql(config: RewardConfig, responses: str, verdicts: str, token_stats: str) -> str:
    """The query producing REWARDS rows; the three arguments are SQL table references (a catalog
    table at a version, or a registered Arrow table). Parameters: none (values are inlined from
    the validated config). reward_id = ids.reward_id(response_id, config id), computed in SQL."""
    scale = SCALES[config.divergence]
    agg = "list_avg" if config.aggregation == "mean" else "list_sum"
    cid = config.id
    key_prefix = '{"kind":"reward","response_id":"'
    key_suffix = f'","reward_config_id":"{cid}"' + "}"
    judge = config.judge_id.replace("'", "''")
    return f"""
        WITH v AS (SELECT response_id, verdict_id, score AS r_acc FROM {verdicts}
                   WHERE judge_id = '{judge}' AND state = 'ok'),
             d AS (SELECT response_id, stats_id, {agg}({config.divergence})::DOUBLE / {scale} AS D
                   FROM {token_stats}),
             x AS (SELECT r.response_id, r.group_id, v.verdict_id, d.stats_id, v.r_acc, d.D
                   FROM {responses} r JOIN v USING (response_id) JOIN d USING (response_id)
                   WHERE d.D IS NOT NULL),
             y AS (SELECT *, CASE WHEN max(D) OVER g > min(D) OVER g
                                  THEN (max(D) OVER g - D) / (max(D) OVER g - min(D) OVER g)
                                  ELSE 1.0 END AS r_distill
                   FROM x WINDOW g AS (PARTITION BY group_id)),
             z AS (SELECT *, {config.w_acc!r} * r_acc + {config.w_distill!r} * r_distill AS reward FROM y)
        SELECT substr(sha256('{key_prefix}' || response_id || '{key_suffix}'), 1, 32) AS reward_id,
               response_id, '{cid}' AS reward_config_id, group_id, verdict_id,
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
    missing_verdict: int  # responses skipped: no ok verdict of the judge
    missing_stats: int  # responses skipped: no token summaries (or no tokens)


def compute_rewards(responses: pa.Table, verdicts: pa.Table, token_stats: pa.Table,
                    config: RewardConfig) -> RewardResult:
    """Reward rows (REWARDS schema) under ``config`` from in-memory Arrow tables."""
    con = duckdb.connect()
    con.register("responses", responses)
    con.register("verdicts", verdicts)
    con.register("token_stats", token_stats)
    check_hex_ids(con, "responses")
    rewards = con.execute(reward_sql(config, "responses", "verdicts", "token_stats")).to_arrow_table()
    judged = con.execute("SELECT count(DISTINCT r.response_id) FROM responses r JOIN verdicts v "
                         "USING (response_id) WHERE v.judge_id = $j AND v.state = 'ok'",
                         {"j": config.judge_id}).fetchone()[0]
    con.close()
    return RewardResult(rewards.cast(REWARDS.schema), responses.num_rows - judged, judged - rewards.num_rows)


def reward_config_row(config: RewardConfig) -> dict:
    return {"reward_config_id": config.id, "judge_id": config.judge_id, "divergence": config.divergence,
            "aggregation": config.aggregation, "w_acc": config.w_acc, "w_distill": config.w_distill,
            "normalisation": config.normalisation, "config_json": config.to_json(),
            "created_at": datetime.now(timezone.utc)}
