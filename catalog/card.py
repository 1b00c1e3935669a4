"""The dataset card (README.md) of a snapshot: YAML the Hub and `datasets` read, and a human part."""

from __future__ import annotations

import json
from typing import Any

from schemas.snapshot import DATA_DIR


TAGS = ["masters-distill", "gen-data", "distillation", "vision-language"]


def render_card(*, front: str, name: str, version: int, reward_config: dict[str, Any],
                filters: dict[str, Any], num_rows: int, stats: list[dict[str, Any]], created_at: str) -> str:
    """The card: ``front`` (the YAML block of the snapshot writer) and a human part."""
    table = "\n".join(
        f"| {s['source']} | {s['n']} | {s['groups']} | {s['mean_reward']:.4f} | "
        f"{s['mean_r_acc']:.4f} | {s['mean_divergence']:.4f} |" for s in stats)
    rc = {k: v for k, v in reward_config.items() if k not in ("config_json", "created_at")}
    return f"""{front}
# Gen-Data snapshot `{name}`

Responses of a masked teacher and a student, with judge-derived accuracy rewards, distillation
rewards and GRPO group advantages, cut from a masters-distill catalog.

- catalog version: **{version}**
- reward config: `{json.dumps(rc, sort_keys=True)}`
- filters: `{json.dumps(filters, sort_keys=True)}`
- rows: **{num_rows}**
- created: {created_at}

| source | rows | groups | mean reward | mean R_acc | mean D |
|---|---|---|---|---|---|
{table}

Load it with `datasets.load_dataset("<this folder>")` or query the Parquet files with DuckDB:
`SELECT source, avg(reward) FROM '{DATA_DIR}/*.parquet' GROUP BY source`.
`manifest.json` lists the sha256 of every file; `masters verify <folder>` checks them.
"""
