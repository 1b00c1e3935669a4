"""Catalog ingest throughput vs a plain `pyarrow.parquet.write_table` of the same rows.

Each synthetic response is a `responses` row (~200 token ids, scalar columns as in the real
schema) plus its `token_stats` row (~200 float log-probs). Both tables go into the catalog in one
commit per chunk (id check against everything already in the catalog, Parquet written by pyarrow,
registered with ducklake_add_data_files, DuckLake commit). The baseline writes the same two
tables of the same chunk with `pq.write_table` and nothing else, in the same process, interleaved
chunk by chunk (alternating which goes first). Prints the throughput ratio (goal >= 0.95) and GROUP
BY query times.

    python benchmarks/catalog_ingest.py              # 2,000,000 rows
    python benchmarks/catalog_ingest.py --rows 100000
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
import pyarrow.parquet as pq

from catalog import Catalog
from schemas.tables import FX16_TOKEN_STATS_SCHEMA, RESPONSES


def _lists(lengths: np.ndarray, values: np.ndarray, type_: pa.DataType) -> pa.Array:
    offsets = np.zeros(len(lengths) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, type=type_.value_type)) \
        .cast(type_)


def make_chunk(start: int, n: int, rng: np.random.Generator, tokens: int) -> tuple[pa.Table, pa.Table]:
    idx = np.arange(start, start + n)
    lengths = rng.integers(tokens - 20, tokens + 21, n).astype(np.int32)
    total = int(lengths.sum())
    rid = pa.array([f"{i:032x}" for i in idx])
    now = pa.array([datetime.now(timezone.utc)] * n, type=pa.timestamp("us", tz="UTC"))
    source = np.where(idx % 8 < 4, "teacher", "student")
    model = np.where(source == "teacher", "t" * 32, "s" * 32)
    sampling = pa.StructArray.from_arrays(
        [pa.array(np.ones(n)), pa.array(np.full(n, 0.9)), pa.array(np.full(n, 50, np.int32)),
         pa.array(np.full(n, 1.05)), pa.array(np.full(n, 256, np.int32))],
        fields=list(RESPONSES.schema.field("sampling").type))
    responses = pa.Table.from_arrays([
        rid, pa.array([f"g{i // 8:031x}" for i in idx]), pa.array(["it" + "0" * 30] * n),
        pa.array([f"q{i // 8:031x}" for i in idx]), pa.array(source), pa.array(model),
        pa.array(np.where(source == "teacher", 0.2, 0.0)), pa.array((idx % 4).astype(np.int32)),
        pa.array(np.zeros(n, np.int64)), sampling, pa.array(["What is the value of bar C?"] * n),
        _lists(lengths, rng.integers(0, 32_000, total, dtype=np.int32), pa.list_(pa.int32())),
        pa.array(["the answer is 42"] * n), pa.array(["stop"] * n), pa.array(lengths), now,
        _lists(lengths, rng.normal(-1, 0.5, total).astype(np.float32), pa.list_(pa.float32())),
    ], schema=RESPONSES.schema)
    empty = _lists(np.zeros(n, np.int32), np.zeros(0, np.int16), pa.list_(pa.int16()))
    stats = pa.Table.from_arrays([
        pa.array([f"{i:031x}s" for i in idx]), rid, pa.array(["it" + "0" * 30] * n), pa.array(["t" * 32] * n),
        pa.array(np.full(n, 0.2)),
        pa.array(["s" * 32] * n), pa.array(["fx16/1"] * n), pa.array(np.zeros(n, np.int32)),
        pa.array(lengths),
        _lists(lengths, -rng.exponential(1.0, total).astype(np.float32), pa.list_(pa.float32())),
        *[_lists(lengths, rng.integers(-3000, 0, total).astype(np.int16), pa.list_(pa.int16())) for _ in range(4)],
        _lists(np.zeros(n, np.int32), np.zeros(0, np.int32), pa.list_(pa.int32())), empty, now,
    ], schema=FX16_TOKEN_STATS_SCHEMA)
    return responses, stats


def duckdb_insert(folder: Path, args, rows: int) -> tuple[float, int]:
    """The alternative path: DuckDB's own Parquet writer through INSERT, same chunks."""
    rng = np.random.default_rng(0)
    total, done = 0.0, 0
    with Catalog.open(folder) as cat:
        con = cat.connection()
        for start in range(0, rows, args.chunk):
            n = min(args.chunk, rows - start)
            responses, stats = make_chunk(start, n, rng, args.tokens)
            con.register("_src_responses", responses)
            con.register("_src_stats", stats)
            t0 = time.perf_counter()
            con.execute("BEGIN")
            con.execute("INSERT INTO lake.responses SELECT * FROM _src_responses")
            con.execute("INSERT INTO lake.token_stats SELECT * FROM _src_stats")
            con.execute("COMMIT")
            total += time.perf_counter() - t0
            done += n
            con.unregister("_src_responses")
            con.unregister("_src_stats")
        assert cat.count("responses") == done and cat.count("token_stats") == done
    return total, done


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=2_000_000, help="responses to ingest")
    ap.add_argument("--chunk", type=int, default=100_000, help="rows per commit")
    ap.add_argument("--tokens", type=int, default=200, help="mean tokens (and floats) per row")
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp dir)")
    ap.add_argument("--insert-rows", type=int, default=300_000,
                    help="also time DuckDB's own writer (INSERT ... SELECT) on this many rows")
    args = ap.parse_args()

    work = Path(args.dir or tempfile.mkdtemp(prefix="masters-ingest-"))
    shutil.rmtree(work, ignore_errors=True)
    (work / "baseline").mkdir(parents=True)
    rng = np.random.default_rng(0)
    t_ours = t_base = 0.0
    rows = 0
    base_per_chunk: list[float] = []
    try:
        with Catalog.open(work / "catalog") as cat:
            for start in range(0, args.rows, args.chunk):
                n = min(args.chunk, args.rows - start)
                responses, stats = make_chunk(start, n, rng, args.tokens)
                def baseline():
                    pq.write_table(responses, work / "baseline" / f"r{start}.parquet")
                    pq.write_table(stats, work / "baseline" / f"s{start}.parquet")

                def catalog():
                    with cat.commit(f"ingest {start}", stage="benchmark") as tx:
                        tx.append("responses", responses)
                        tx.append("token_stats", stats)
                    assert tx.result.added == {"responses": n, "token_stats": n}, tx.result

                # the order alternates chunk by chunk: whichever writes second pays for the page
                # cache the first one dirtied
                first, second = (baseline, catalog) if (start // args.chunk) % 2 == 0 else (catalog, baseline)
                t0 = time.perf_counter()
                first()
                t1 = time.perf_counter()
                second()
                t2 = time.perf_counter()
                tb, to = (t1 - t0, t2 - t1) if first is baseline else (t2 - t1, t1 - t0)
                t_base += tb
                t_ours += to
                base_per_chunk.append(tb)
                rows += n
                print(f"  {rows:>10,} rows  baseline {t_base:7.2f}s  catalog {t_ours:7.2f}s", flush=True)

            t0 = time.perf_counter()
            again = cat.append("responses", responses, "re-ingest last chunk")
            t_dedupe = time.perf_counter() - t0
            assert again.version is None and again.skipped["responses"] == n

            q1 = "SELECT source, model_id, count(*) AS n, avg(num_tokens) FROM responses GROUP BY ALL"
            q2 = ("SELECT r.source, count(*) AS n, avg(list_avg(s.student_logprobs)) AS mean_lp "
                  "FROM responses r JOIN token_stats s USING (response_id) GROUP BY ALL")
            timings = {}
            for name, q in (("group_by", q1), ("join_group_by", q2)):
                t0 = time.perf_counter()
                out = cat.sql(q)
                timings[name] = time.perf_counter() - t0
                assert sum(out.column("n").to_pylist()) == rows
            t_insert = insert_rows = 0
            if args.insert_rows:
                t_insert, insert_rows = duckdb_insert(work / "insert", args, min(args.insert_rows, rows))
                t_insert_base = sum(base_per_chunk[: -(-insert_rows // args.chunk)])
            size_ours = sum(p.stat().st_size for p in (work / "catalog" / "data").rglob("*.parquet"))
            size_base = sum(p.stat().st_size for p in (work / "baseline").glob("*.parquet"))
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\nrows: {rows:,} responses (+ {rows:,} token_stats rows), ~{args.tokens} token ids and "
          f"~{args.tokens} floats each, {args.chunk:,} rows per commit")
    print(f"baseline pq.write_table : {t_base:8.2f} s  {rows / t_base:12,.0f} rows/s  {size_base / 1e9:.2f} GB")
    print(f"catalog ingest (commit) : {t_ours:8.2f} s  {rows / t_ours:12,.0f} rows/s  {size_ours / 1e9:.2f} GB")
    print(f"throughput ratio catalog/baseline: {t_base / t_ours:.3f}  (goal >= 0.95)")
    print(f"re-ingest of {n:,} present rows (all skipped): {t_dedupe:.2f} s")
    if insert_rows:
        print(f"DuckDB's own writer (INSERT INTO lake.t SELECT * FROM arrow) on the first "
              f"{insert_rows:,} rows: {t_insert:.2f} s vs baseline {t_insert_base:.2f} s -> ratio "
              f"{t_insert_base / t_insert:.3f} (why the catalog writes with pyarrow and registers)")
    for name, t in timings.items():
        print(f"{name} query over {rows:,} rows: {t * 1000:.0f} ms")


if __name__ == "__main__":
    main()
