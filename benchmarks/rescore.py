"""Re-scoring N synthetic responses (with verdicts and per-token divergences) under new weights
and a new divergence, new reward rows committed, vs a bare DuckDB query computing the same
rewards over the same catalog tables in the same run. Goal: <= 1.5x.

    python benchmarks/rescore.py            # 10,000,000 responses
    python benchmarks/rescore.py --rows 1000000
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from catalog import Catalog
from masters.rescore import rescore
from rewards.judges import make_judge
from schemas import ids
from schemas.config import RewardConfig
from schemas.tables import FX16_TOKEN_STATS_SCHEMA, RESPONSES, VERDICTS

GROUP = 8


def lists(n: int, per: int, values: np.ndarray, type_: pa.DataType) -> pa.Array:
    offsets = pa.array((np.arange(n + 1) * per).astype(np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(values, type=type_.value_type))


def chunk(start: int, n: int, tokens: int, rng, judge_id: str) -> dict[str, pa.Table]:
    idx = np.arange(start, start + n)
    rid = pa.array([f"{i:032x}" for i in idx])
    now = pa.array([datetime.now(timezone.utc)] * n, type=pa.timestamp("us", tz="UTC"))
    source = np.where(idx % GROUP < GROUP // 2, "teacher", "student")
    sampling = pa.StructArray.from_arrays(
        [pa.array(np.ones(n)), pa.array(np.full(n, 0.9)), pa.array(np.full(n, 50, np.int32)),
         pa.array(np.full(n, 1.05)), pa.array(np.full(n, 32, np.int32))],
        fields=list(RESPONSES.schema.field("sampling").type))
    responses = pa.Table.from_arrays([
        rid, pa.array([f"g{i // GROUP:031x}" for i in idx]), pa.array(["it" * 16] * n),
        pa.array([f"q{i // GROUP:031x}" for i in idx]), pa.array(source), pa.array(np.where(source == "teacher", "t" * 32, "s" * 32)),
        pa.array(np.where(source == "teacher", 0.2, 0.0)), pa.array((idx % 4).astype(np.int32)), pa.array(np.zeros(n, np.int64)),
        sampling, pa.array(["What is the value of the red bar?"] * n),
        lists(n, tokens, rng.integers(0, 32000, n * tokens, dtype=np.int32), pa.list_(pa.int32())),
        pa.array(["4"] * n), pa.array(["stop"] * n), pa.array(np.full(n, tokens, np.int32)), now,
        pa.nulls(n, pa.list_(pa.float32())),
    ], schema=RESPONSES.schema)
    score = (rng.random(n) < 0.5).astype(np.float64)
    verdicts = pa.Table.from_arrays([
        pa.array([f"v{i:031x}" for i in idx]), rid, pa.array([judge_id] * n), pa.array(["rule"] * n),
        pa.array(score), pa.array(["4"] * n), pa.nulls(n, pa.string()), pa.array(np.zeros(n)),
        pa.array(["ok"] * n), pa.nulls(n, pa.string()), now], schema=VERDICTS.schema)
    i16 = pa.list_(pa.int16())
    empty = lists(n, 0, np.zeros(0, np.int16), i16)
    stats = pa.Table.from_arrays([
        pa.array([f"s{i:031x}" for i in idx]), rid, pa.array(["T" * 32] * n), pa.array(np.full(n, 0.2)),
        pa.array(["S" * 32] * n), pa.array(["fx16/1"] * n), pa.array(np.ones(n, np.int32)),
        pa.array(np.full(n, tokens, np.int32)),
        lists(n, tokens, -rng.exponential(1, n * tokens).astype(np.float32), pa.list_(pa.float32())), empty,
        lists(n, tokens, rng.integers(0, 20000, n * tokens).astype(np.int16), i16),
        lists(n, tokens, rng.integers(0, 20000, n * tokens).astype(np.int16), i16), empty,
        lists(n, 0, np.zeros(0, np.int32), pa.list_(pa.int32())), empty, now], schema=FX16_TOKEN_STATS_SCHEMA)
    return {"responses": responses, "verdicts": verdicts, "token_stats": stats}


BARE = """
SELECT substr(sha256('{{"kind":"reward","response_id":"' || response_id || '","reward_config_id":"{cid}"}}'), 1, 32) AS reward_id,
       response_id, group_id, verdict_id, stats_id, r_acc, D, r_distill, reward,
       coalesce((reward - avg(reward) OVER g) / nullif(stddev_samp(reward) OVER g, 0), 0) AS advantage
FROM (SELECT *, {w_acc} * r_acc + {w_distill} * r_distill AS reward
      FROM (SELECT *, coalesce((max(D) OVER g - D) / nullif(max(D) OVER g - min(D) OVER g, 0), 1) AS r_distill
            FROM (SELECT r.response_id, r.group_id, v.verdict_id, v.score AS r_acc, s.stats_id,
                         list_avg(s.{div}) / {scale} AS D
                  FROM lake.responses r JOIN lake.verdicts v USING (response_id)
                  JOIN lake.token_stats s USING (response_id)
                  WHERE v.judge_id = '{judge}' AND v.state = 'ok')
            WINDOW g AS (PARTITION BY group_id))
      ) WINDOW g AS (PARTITION BY group_id)
"""


# The same rewards as masters rescore computes (rewards/scores.py), written independently:
# summaries of the iteration's scoring pair, one per response (first by stats_id), final verdicts,
# complete groups only.
EQUIVALENT = """
WITH st AS (SELECT DISTINCT ON (s.response_id) s.response_id, s.stats_id,
                   list_avg(s.{div}) / {scale} AS D
            FROM lake.token_stats s JOIN lake.responses r USING (response_id)
            JOIN lake.iterations it USING (iteration_id)
            WHERE s.teacher_model_id = it.teacher_model_id AND s.student_model_id = it.student_model_id
              AND s.teacher_mask_ratio = it.mask_ratio
            ORDER BY s.response_id, s.stats_id),
     fv AS (SELECT * FROM lake.verdicts WHERE judge_id = '{judge}' AND state IN ('ok', 'unparseable')),
     incomplete AS (SELECT DISTINCT r.group_id FROM lake.responses r
                    LEFT JOIN fv USING (response_id) LEFT JOIN st USING (response_id)
                    WHERE fv.response_id IS NULL OR st.D IS NULL)
SELECT substr(sha256('{{"kind":"reward","response_id":"' || response_id || '","reward_config_id":"{cid}"}}'), 1, 32) AS reward_id,
       response_id, group_id, verdict_id, stats_id, r_acc, D, r_distill, reward,
       coalesce((reward - avg(reward) OVER g) / nullif(stddev_samp(reward) OVER g, 0), 0) AS advantage
FROM (SELECT *, {w_acc} * r_acc + {w_distill} * r_distill AS reward
      FROM (SELECT *, coalesce((max(D) OVER g - D) / nullif(max(D) OVER g - min(D) OVER g, 0), 1) AS r_distill
            FROM (SELECT r.response_id, r.group_id, fv.verdict_id, fv.score AS r_acc, st.stats_id, st.D
                  FROM lake.responses r JOIN fv USING (response_id) JOIN st USING (response_id)
                  WHERE fv.state = 'ok' AND r.group_id NOT IN (SELECT group_id FROM incomplete))
            WINDOW g AS (PARTITION BY group_id))
      ) WINDOW g AS (PARTITION BY group_id)
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--chunk", type=int, default=1_000_000)
    ap.add_argument("--tokens", type=int, default=16, help="tokens per response")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="masters-rescore-"))
    rng = np.random.default_rng(0)
    judge = make_judge("rule")
    try:
        t0 = time.perf_counter()
        with Catalog.open(work / "cat") as cat:
            cat.append("iterations", [{"iteration_id": "it" * 16, "run_id": "bench", "iteration": 0, "mask_ratio": 0.2,
                                       "teacher_model_id": "T" * 32, "student_model_id": "S" * 32,
                                       "config_hash": "h", "created_at": datetime.now(timezone.utc)}], "iteration")
            for start in range(0, args.rows, args.chunk):
                tables = chunk(start, min(args.chunk, args.rows - start), args.tokens, rng, judge.judge_id)
                with cat.commit(f"synthetic {start}") as tx:
                    for name, table in tables.items():
                        tx.append(name, table)
            print(f"built {args.rows:,} responses + verdicts + token summaries in {time.perf_counter() - t0:.1f} s")
            config = RewardConfig(judge_id=judge.judge_id, divergence="kl_forward", w_acc=1.0, w_distill=0.5)

            fmt = dict(cid=config.id, w_acc=config.w_acc, w_distill=config.w_distill,
                       div=config.divergence, scale=1024.0, judge=config.judge_id)
            bare, equivalent = BARE.format(**fmt), EQUIVALENT.format(**fmt)
            con = cat.connection()
            t0 = time.perf_counter()
            baseline = con.execute(bare).to_arrow_table()
            t_bare = time.perf_counter() - t0
            t0 = time.perf_counter()
            same = con.execute(equivalent).to_arrow_table()
            t_equiv = time.perf_counter() - t0

            t0 = time.perf_counter()
            res = rescore(cat, config)
            t_ours = time.perf_counter() - t0

            t0 = time.perf_counter()  # the baselines again, after: the better of two runs counts
            again = con.execute(bare).to_arrow_table()
            t_bare = min(t_bare, time.perf_counter() - t0)
            t0 = time.perf_counter()
            con.execute(equivalent).to_arrow_table()
            t_equiv = min(t_equiv, time.perf_counter() - t0)
            assert again.num_rows == baseline.num_rows == same.num_rows
            assert res.added == args.rows == baseline.num_rows, (res, baseline.num_rows)
            # the same rewards: compare every advantage, joined by reward id, in SQL
            con.register("_baseline", baseline)
            diff = con.execute("SELECT count(*), max(abs(b.advantage - w.advantage)), max(abs(b.reward - w.reward)) "
                               "FROM _baseline b JOIN lake.rewards w USING (reward_id)").fetchone()
            assert diff[0] == args.rows and diff[1] < 1e-9 and diff[2] < 1e-9, diff
            assert ids.reward_id(baseline.column("response_id")[0].as_py(), config.id) == baseline.column("reward_id")[0].as_py()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"bare DuckDB query, same rewards (pair filter, one summary per response, complete groups; "
          f"to Arrow): {t_equiv:7.2f} s")
    print(f"minimal DuckDB query (no pair filter, no completeness check; to Arrow)          : {t_bare:7.2f} s")
    print(f"masters rescore (query + Parquet + commit)                                       : {t_ours:7.2f} s  "
          f"version {res.version}")
    print(f"ratio rescore / bare query computing the same rewards: {t_ours / t_equiv:.3f}  (goal <= 1.5)")
    print(f"ratio rescore / minimal query: {t_ours / t_bare:.3f}")


if __name__ == "__main__":
    main()
