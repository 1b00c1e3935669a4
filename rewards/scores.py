"""Divergences, distillation rewards, combined rewards and GRPO group advantages: vectorised over
Arrow tables with polars (no per-row Python loop).

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

Responses without an ``ok`` verdict get no reward row (a failed judgement is never a 0); they are
counted in the result so the caller can report them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import polars as pl
import pyarrow as pa

from schemas import ids
from schemas import token_codec as codec
from schemas.config import RewardConfig
from schemas.tables import REWARDS

SCALES = {"jsd": codec.JSD_SCALE, "kl_forward": codec.KL_SCALE, "kl_reverse": codec.KL_SCALE}


def divergences(token_stats: pa.Table | pl.DataFrame, divergence: str = "jsd",
                aggregation: str = "mean") -> pl.DataFrame:
    """response_id, stats_id, D: the aggregated, decoded per-token divergence of each response."""
    if divergence not in SCALES:
        raise ValueError(f"unknown divergence {divergence!r}; known: {', '.join(SCALES)}")
    df = token_stats if isinstance(token_stats, pl.DataFrame) else pl.from_arrow(token_stats)
    values = pl.col(divergence).list.eval(pl.element().cast(pl.Float64) / SCALES[divergence])
    agg = values.list.mean() if aggregation == "mean" else values.list.sum()
    return df.select("response_id", "stats_id", agg.alias("D"))


@dataclass
class RewardResult:
    rewards: pa.Table
    missing_verdict: int  # responses skipped: no ok verdict
    missing_stats: int  # responses skipped: no token summaries


def compute_rewards(responses: pa.Table | pl.DataFrame, verdicts: pa.Table | pl.DataFrame,
                    token_stats: pa.Table | pl.DataFrame, config: RewardConfig) -> RewardResult:
    """Reward rows (REWARDS schema) under ``config`` for the responses that have an ok verdict of
    ``config.judge_id`` and token summaries."""
    r = _df(responses).select("response_id", "group_id")
    v = (_df(verdicts).filter((pl.col("judge_id") == config.judge_id) & (pl.col("state") == "ok"))
         .select("response_id", "verdict_id", pl.col("score").alias("r_acc")))
    d = divergences(_df(token_stats), config.divergence, config.aggregation)
    joined = r.join(v, on="response_id", how="inner")
    missing_verdict = r.height - joined.height
    with_d = joined.join(d, on="response_id", how="inner")
    missing_stats = joined.height - with_d.height
    g = pl.col("group_id")
    d_max, d_min = pl.col("D").max().over(g), pl.col("D").min().over(g)
    df = with_d.with_columns(
        pl.when(d_max > d_min).then((d_max - pl.col("D")) / (d_max - d_min)).otherwise(1.0).alias("r_distill"))
    df = df.with_columns((config.w_acc * pl.col("r_acc") + config.w_distill * pl.col("r_distill")).alias("reward"))
    mean, std = pl.col("reward").mean().over(g), pl.col("reward").std(ddof=1).over(g)
    df = df.with_columns(
        pl.when(std > 0).then((pl.col("reward") - mean) / std).otherwise(0.0).alias("advantage"))
    cid = config.id
    now = datetime.now(timezone.utc)
    out = df.select(
        pl.col("response_id").map_elements(lambda x: ids.reward_id(x, cid), return_dtype=pl.String).alias("reward_id"),
        "response_id", pl.lit(cid).alias("reward_config_id"), "group_id", "verdict_id",
        pl.col("stats_id").alias("token_stats_id"), "r_acc", pl.col("D").alias("divergence"),
        "r_distill", "reward", "advantage", pl.lit(now).alias("created_at"))
    return RewardResult(out.to_arrow().cast(REWARDS.schema), missing_verdict, missing_stats)


def reward_config_row(config: RewardConfig) -> dict:
    return {"reward_config_id": config.id, "judge_id": config.judge_id, "divergence": config.divergence,
            "aggregation": config.aggregation, "w_acc": config.w_acc, "w_distill": config.w_distill,
            "normalisation": config.normalisation, "config_json": config.to_json(),
            "created_at": datetime.now(timezone.utc)}


def _df(t: pa.Table | pl.DataFrame) -> pl.DataFrame:
    return t if isinstance(t, pl.DataFrame) else pl.from_arrow(t)
