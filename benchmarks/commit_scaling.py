"""Commit cost against catalog history, and concurrent-writer throughput on PostgreSQL.

1. Scaling: `responses` and `token_stats` are filled with H rows of history (earlier iterations,
   500,000 rows per iteration, registered as they are: the ids are unique by construction), then
   a 10,000-row batch of a new iteration is committed into both tables (Catalog.commit: the id
   check, the Parquet writes, registration, the DuckLake commit), median of 5 commits. For every
   H it also times, in the same process, the id check as it was before partitioning (the batch's
   ids against the whole table): the baseline. Prints latency per H and the ratio to the first H
   (goal: <= 1.5x from 1M to 50M rows).
2. Concurrency: 1, 2 and 4 writer processes commit 2,000-row batches (half their ids shared by
   every writer) into one PostgreSQL catalog (a real server on 127.0.0.1, started here) for a fixed
   number of commits each; prints total rows/s and the duplicates found (must be 0).

    python benchmarks/commit_scaling.py                      # H = 1M, 10M, 50M (about 10 GB of disk)
    python benchmarks/commit_scaling.py --history 1,10 --no-concurrency
    python benchmarks/commit_scaling.py --quick              # seconds: H = 20k, 100k
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from catalog import Catalog  # noqa: E402
from catalog.data_files import data_file_path  # noqa: E402
from schemas.tables import FX16_TOKEN_STATS_SCHEMA, RESPONSES  # noqa: E402

PER_ITERATION = 500_000
BATCH = 10_000


def hex_ids(rng: np.random.Generator, n: int) -> pa.Array:
    """n random 32-hex-digit ids (content hashes look like this), vectorised."""
    raw = rng.integers(0, 256, (n, 16), dtype=np.uint8)
    digits = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
    text = np.empty((n, 32), dtype=np.uint8)
    text[:, 0::2], text[:, 1::2] = digits[raw >> 4], digits[raw & 15]
    offsets = pa.array(np.arange(0, 32 * (n + 1), 32, dtype=np.int32))
    return pa.StringArray.from_buffers(n, offsets.buffers()[1], pa.py_buffer(text.tobytes()))


def _const(value, n: int, type_: pa.DataType) -> pa.Array:
    return pa.repeat(pa.scalar(value, type_), n) if hasattr(pa, "repeat") else pa.array([value] * n, type_)


def _short_lists(n: int, type_: pa.DataType, length: int = 2) -> pa.Array:
    offsets = pa.array(np.arange(0, length * (n + 1), length, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(np.ones(length * n), type_.value_type))


def rows(rng: np.random.Generator, n: int, iteration_id: str) -> tuple[pa.Table, pa.Table]:
    """Minimal but schema-complete rows (two-token responses): the id check and the commit are
    what is measured, not the payload."""
    now = pa.array(np.full(n, np.datetime64(datetime.now(timezone.utc).replace(tzinfo=None), "us")),
                   pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC"))
    rid = hex_ids(rng, n)
    it = pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int32)), pa.array([iteration_id])).cast(pa.string())
    sampling = pa.StructArray.from_arrays(
        [_const(1.0, n, pa.float64()), _const(0.9, n, pa.float64()), _const(50, n, pa.int32()),
         _const(1.0, n, pa.float64()), _const(8, n, pa.int32())], fields=list(RESPONSES.schema.field("sampling").type))
    responses = pa.Table.from_arrays([
        rid, hex_ids(rng, n), it, hex_ids(rng, n), _const("student", n, pa.string()), _const("m" * 32, n, pa.string()),
        _const(0.0, n, pa.float64()), _const(0, n, pa.int32()), _const(0, n, pa.int64()), sampling,
        _const("q", n, pa.string()), _short_lists(n, pa.list_(pa.int32())), _const("a", n, pa.string()),
        _const("stop", n, pa.string()), _const(2, n, pa.int32()), now,
        pa.nulls(n, pa.list_(pa.float32()))], schema=RESPONSES.schema)
    i16 = _short_lists(n, pa.list_(pa.int16()))
    stats = pa.Table.from_arrays([
        hex_ids(rng, n), rid, it, _const("t" * 32, n, pa.string()), _const(0.2, n, pa.float64()),
        _const("s" * 32, n, pa.string()), _const("fx16/1", n, pa.string()), _const(1, n, pa.int32()),
        _const(2, n, pa.int32()), _short_lists(n, pa.list_(pa.float32())), i16, i16, i16, i16,
        _short_lists(n, pa.list_(pa.int32())), i16, now], schema=FX16_TOKEN_STATS_SCHEMA)
    return responses, stats


def fill_history(cat: Catalog, rng: np.random.Generator, upto: int, have: int) -> int:
    """Grow both tables to ``upto`` rows, one iteration (partition) per PER_ITERATION rows,
    registered as written (unique ids by construction: this is set-up, not the measurement)."""
    con = cat.connection()
    while have < upto:
        n = min(PER_ITERATION, upto - have)
        it = f"{have // PER_ITERATION:032x}"
        responses, stats = rows(rng, n, it)
        con.execute("BEGIN")
        for name, table in (("responses", responses), ("token_stats", stats)):
            path = data_file_path(cat.config.data_path.rstrip("/") + "/", name, ("iteration_id", it))
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, path, row_group_size=cat.config.row_group_size)
            con.execute("CALL ducklake_add_data_files('lake', ?, ?)", [name, path])
        con.execute("COMMIT")
        have += n
        print(f"  history {have:>12,} rows per table", end="\r", flush=True)
    print()
    return have


def time_commits(cat: Catalog, rng: np.random.Generator, repeats: int) -> tuple[float, float]:
    """Median seconds of (a commit of BATCH new rows into both tables, the old whole-table id check)."""
    commits, checks = [], []
    for k in range(repeats):
        responses, stats = rows(rng, BATCH, f"new{k:029x}")
        t0 = time.perf_counter()
        with cat.commit("batch", stage="benchmark") as tx:
            tx.append("responses", responses)
            tx.append("token_stats", stats)
        commits.append(time.perf_counter() - t0)
        assert tx.result.added == {"responses": BATCH, "token_stats": BATCH}, tx.result
        probe, _ = rows(rng, BATCH, "x" * 32)
        t0 = time.perf_counter()
        for name, ids in (("responses", probe.column(0)), ("token_stats", probe.column(0))):
            assert len(cat.existing_ids(name, ids.combine_chunks())) == 0  # no partitions: the whole table
        checks.append(time.perf_counter() - t0)
    return statistics.median(commits), statistics.median(checks)


def scaling(work: Path, history: list[int], repeats: int) -> None:
    rng = np.random.default_rng(0)
    results = []
    with Catalog.open(work / "scaling") as cat:
        have = 0
        for h in history:
            have = fill_history(cat, rng, h, have)
            commit_s, check_s = time_commits(cat, rng, repeats)
            results.append((h, commit_s, check_s))
            print(f"  H = {h:>12,}: commit {commit_s * 1000:8.1f} ms   whole-table id check {check_s * 1000:8.1f} ms",
                  flush=True)
        size = sum(p.stat().st_size for p in (work / "scaling" / "data").rglob("*.parquet"))
    h0, c0, k0 = results[0]
    print(f"\ncommit of a {BATCH:,}-row batch into responses + token_stats (median of {repeats}); "
          f"history on disk at the end: {size / 1e9:.2f} GB")
    print(f"{'history rows':>14} {'commit ms':>10} {'x first':>8} {'baseline: whole-table check ms':>31} {'x first':>8}")
    for h, c, k in results:
        print(f"{h:>14,} {c * 1000:>10.1f} {c / c0:>8.2f} {k * 1000:>31.1f} {k / k0:>8.2f}")
    print(f"commit latency ratio {results[-1][0]:,} / {h0:,} rows: {results[-1][1] / c0:.2f} (goal <= 1.5)")


WRITER = r"""
import json, sys, time
import pyarrow as pa
from catalog import Catalog
from masters.synthetic_gendata import synthetic_gendata
from schemas.config import CatalogConfig
config = CatalogConfig.model_validate_json(sys.argv[1])
writer, commits, rows, start = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
tables, _ = synthetic_gendata(num_questions=3, responses_per_source=4)
template = tables["responses"].slice(0, 1)
cat = Catalog.open(config)
while time.time() < start:
    time.sleep(0.005)
t0 = time.perf_counter()
added = 0
for j in range(commits):
    ids = [f"w{writer}-{j}-{k}" for k in range(rows // 2)] + [f"shared-{j}-{k}" for k in range(rows // 2)]
    batch = pa.concat_tables([template] * len(ids)).set_column(0, "response_id", pa.array(ids))
    with cat.commit(f"writer {writer} batch {j}", stage="benchmark") as tx:
        tx.append("responses", batch)
    added += tx.result.added["responses"]
print(json.dumps({"added": added, "seconds": time.perf_counter() - t0}), flush=True)
"""


def concurrency(work: Path, commits: int, rows_per_commit: int) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from servers import PostgresServer

    from schemas.config import CatalogConfig

    server = PostgresServer().start()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    print(f"\n{commits} commits of {rows_per_commit} rows per writer (half shared by all writers), "
          "PostgreSQL 15 on 127.0.0.1, local data path")
    print(f"{'writers':>8} {'rows offered/s':>15} {'commits/s':>10} {'stored':>8} {'duplicates':>11}")
    try:
        for n in (1, 2, 4):
            config = CatalogConfig(uri="ducklake:postgres:" + server.create_database(f"bench{n}"),
                                   data_path=str(work / f"pg{n}") + "/", snapshot_root=str(work / "snaps"))
            Catalog.open(config).close()
            start = time.time() + 6
            procs = [subprocess.Popen([sys.executable, "-c", WRITER, config.model_dump_json(), str(w), str(commits),
                                       str(rows_per_commit), str(start)], env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True) for w in range(n)]
            outs = []
            for p in procs:
                stdout, stderr = p.communicate(timeout=1800)
                if p.returncode:
                    raise SystemExit(stderr[-2000:])
                outs.append(json.loads(stdout.strip().splitlines()[-1]))
            wall = max(o["seconds"] for o in outs)
            with Catalog.open_read_only(config) as cat:
                total, distinct = cat.sql("SELECT count(*), count(DISTINCT response_id) FROM responses").to_pylist()[0].values()
            print(f"{n:>8} {n * commits * rows_per_commit / wall:>15,.0f} {n * commits / wall:>10.1f} "
                  f"{total:>8,} {total - distinct:>11}")
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--history", default="1,10,50", help="history sizes in millions of rows per table")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--commits", type=int, default=20, help="commits per writer process")
    ap.add_argument("--rows-per-commit", type=int, default=2_000, help="rows per writer commit")
    ap.add_argument("--no-concurrency", action="store_true")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, for a smoke test")
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp dir, removed)")
    args = ap.parse_args()
    history = [20_000, 100_000] if args.quick else [int(float(h) * 1_000_000) for h in args.history.split(",")]
    work = Path(args.dir or tempfile.mkdtemp(prefix="masters-commit-scaling-"))
    try:
        scaling(work, history, 2 if args.quick else args.repeats)
        if not args.no_concurrency:
            concurrency(work, 5 if args.quick else args.commits, 20 if args.quick else args.rows_per_commit)
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
