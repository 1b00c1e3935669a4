"""Bytes per token of the stored per-token summaries at a real vocabulary, with their fidelity
and speed, per top-k: float32 (baseline), ``fx16/1`` (the previous encoding, as the catalog wrote
it: pyarrow's default writer) and ``fx/2`` (the current one, as the catalog writes it now).

Distributions: ``gendata/synthetic_logits.py`` (an LM-shaped teacher and a noisy student; the
emitted token sampled from the student), summarised by the scorer's own kernel; the reference is
float64 from the full logits. Rows of ``--response-tokens`` tokens, all in one file, as one
scoring commit writes them (64 x 256 tokens by default). Printed per setting and k:

- B/token: the file's size over its tokens, all columns in; and per column (column chunks);
- D err: the largest |D stored - D float64| over responses and the three divergences (mean
  over the response's tokens, as the reward's default aggregation);
- recon JSD: mean and max over tokens of the JSD between the teacher's top-k + tail in float64
  and as decoded (tail = 1 - sum of the decoded top-k, as the trainer takes it);
- encode / decode: M tokens/s building the rows and writing the file, and reading the file and
  decoding every per-token column to floats (top-k ids and log-probs sorted per token); the
  best of ``--repeat`` runs each. float32's "decode" is the read alone.

    python benchmarks/summaries.py --vocab 151936 --tokens 16384 --order random
    python benchmarks/summaries.py --quick
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gendata.scoring import TokenSummary, summarise, token_stats_row
from gendata.synthetic_logits import ORDERS, exact_summaries, lm_logits, topk_tail_jsd
from schemas import token_codec as codec
from schemas.tables import FX16_TOKEN_STATS_SCHEMA, TOKEN_STATS

KS = (4, 6, 8)
PER_TOKEN = codec.PER_TOKEN + ("teacher_topk_ids", "teacher_topk_logprobs")
F32_SCHEMA = pa.schema([pa.field(f.name, pa.list_(pa.float32())) if f.name in PER_TOKEN and f.name != "teacher_topk_ids"
                        else f for f in FX16_TOKEN_STATS_SCHEMA])


def measure(args) -> None:
    summaries, exact, emitted = [], [], []
    for teacher, student, tok in lm_logits(args.tokens, args.vocab, args.order, seed=args.seed):
        summaries.append(summarise(teacher, student, tok, max(KS)))
        exact.append(exact_summaries(teacher, student, tok, max(KS)))
        emitted.append(tok.numpy())
    whole = TokenSummary(*[np.concatenate([getattr(s, f) for s in summaries]) for f in TokenSummary.__dataclass_fields__])
    ref = {k: np.concatenate([e[k] for e in exact]) for k in exact[0]}
    tok = np.concatenate(emitted)
    n_rows = args.tokens // args.response_tokens
    cut = [slice(i * args.response_tokens, (i + 1) * args.response_tokens) for i in range(n_rows)]
    tokens = n_rows * args.response_tokens
    hit = (ref["topk_ids"] == tok[:, None]).any(1).mean()
    print(f"vocabulary {args.vocab:,}, {tokens:,} tokens in {n_rows} rows of {args.response_tokens}, order "
          f"{args.order}; teacher top-1 p mean {ref['topk_p'][:, 0].mean():.2f}, mass beyond the top-8 median "
          f"{np.median(ref['tail']):.3f}, JSD mean {ref['jsd'].mean():.3f}, emitted token in the top-8 {hit:.0%}")
    print(f"{'setting':<14}{'B/token':>9}  {'D err':>8}  {'recon JSD mean / max':>20}  {'encode':>8}  {'decode':>8}  "
          "per column (B/token)")
    for k in KS:
        s = TokenSummary(*[getattr(whole, f)[:, :k] if f.startswith("topk") else getattr(whole, f)
                           for f in TokenSummary.__dataclass_fields__])
        p, tail = ref["topk_p"][:, :k], np.clip(1 - ref["topk_p"][:, :k].sum(1), 0, None)
        for name in ("float32", codec.FX16, codec.FX2):
            encode, decode_s = float("inf"), float("inf")
            for _ in range(args.repeat):  # the best of the repeats: this machine's timings are noisy
                t0 = time.perf_counter()
                rows = [row_of(name, i, TokenSummary(*[getattr(s, f)[c] for f in TokenSummary.__dataclass_fields__]),
                               tok[c], k) for i, c in enumerate(cut)]
                table = pa.Table.from_pylist(rows, schema={"float32": F32_SCHEMA, codec.FX16: FX16_TOKEN_STATS_SCHEMA}.get(
                    name, TOKEN_STATS.schema))
                buf = io.BytesIO()
                pq.write_table(table, buf, **(TOKEN_STATS.parquet if name == codec.FX2 else {}))
                encode = min(encode, time.perf_counter() - t0)
                data = buf.getvalue()
                t0 = time.perf_counter()
                decoded = decode(name, pq.read_table(io.BytesIO(data)), [tok[c] for c in cut])
                decode_s = min(decode_s, time.perf_counter() - t0)
            d_err = max(abs(float(np.mean(decoded[d][c], dtype=np.float64)) - float(ref[d][c].mean()))
                        for d in codec.DIVERGENCES for c in cut)
            if name == codec.FX2:  # the reward reads the exact sums
                d_err = max(abs(r[f"{d}_sum"] / r["num_tokens"] - float(ref[d][c].mean()))
                            for d in codec.DIVERGENCES for r, c in zip(rows, cut))
            ids, lp = decoded["teacher_topk_ids"].reshape(-1, k), decoded["teacher_topk_logprobs"].reshape(-1, k)
            q = np.exp(align(ids, lp.astype(np.float64), ref["topk_ids"][:tokens, :k]))
            recon = topk_tail_jsd(p[:tokens], tail[:tokens], q, np.clip(1 - q.sum(1), 0, None))
            columns = column_sizes(data, tokens)
            big = {c: b for c, b in columns.items() if (c in PER_TOKEN or c.startswith("fx2_")) and b >= 0.05}
            shown = "  ".join(f"{c} {b:.2f}" for c, b in big.items()) + \
                f"  (the rest {sum(columns.values()) - sum(big.values()):.2f})"
            print(f"{name + ', k=' + str(k):<14}{len(data) / tokens:>9.1f}  {d_err:>8.1e}  "
                  f"{recon.mean():>9.1e} / {recon.max():.1e}  {tokens / encode / 1e6:>8.2f}  "
                  f"{tokens / decode_s / 1e6:>8.2f}  {shown}")
        print()


def row_of(name: str, i: int, s: TokenSummary, tok: np.ndarray, k: int) -> dict:
    row = token_stats_row(f"{i:032x}", s, iteration_id="i" * 32, teacher_model_id="t" * 32, teacher_mask_ratio=0.2,
                          student_model_id="s" * 32, top_k=k, token_ids=tok,
                          encoding=codec.FX2 if name == codec.FX2 else codec.FX16)
    if name == "float32":
        row.update({"teacher_logprobs": s.teacher_logprobs, "jsd": s.jsd, "kl_forward": s.kl_forward,
                    "kl_reverse": s.kl_reverse, "teacher_topk_logprobs": s.topk_logprobs.reshape(-1)})
    if name != codec.FX2:
        row = {c: row[c] for c in FX16_TOKEN_STATS_SCHEMA.names}
    return row


def decode(name: str, table: pa.Table, emitted) -> dict[str, np.ndarray]:
    """Every per-token column as flat numpy floats (ids as ints)."""
    if name == "float32":
        return {c: table.column(c).combine_chunks().values.to_numpy() for c in PER_TOKEN}
    decoded = codec.decode_table(table, pa.array([e.astype(np.int32) for e in emitted], pa.list_(pa.int32())))
    return {c: decoded.column(c).combine_chunks().values.to_numpy() for c in PER_TOKEN}


def align(ids: np.ndarray, values: np.ndarray, ref_ids: np.ndarray) -> np.ndarray:
    """``values`` reordered so that their ids follow ``ref_ids`` (the same set per token)."""
    mine, theirs = np.argsort(ids, 1), np.argsort(ref_ids, 1)
    if not (np.take_along_axis(ids, mine, 1) == np.take_along_axis(ref_ids, theirs, 1)).all():
        raise AssertionError("decoded top-k ids differ from the scorer's")
    out = np.empty_like(values)
    np.put_along_axis(out, theirs, np.take_along_axis(values, mine, 1), 1)
    return out


def column_sizes(data: bytes, tokens: int) -> dict[str, float]:
    md = pq.ParquetFile(io.BytesIO(data)).metadata
    sizes: dict[str, float] = {}
    for g in range(md.num_row_groups):
        for i in range(md.num_columns):
            c = md.row_group(g).column(i)
            name = c.path_in_schema.split(".")[0]
            sizes[name] = sizes.get(name, 0.0) + c.total_compressed_size / tokens
    return sizes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=151_936)
    ap.add_argument("--tokens", type=int, default=16_384)
    ap.add_argument("--response-tokens", type=int, default=256)
    ap.add_argument("--order", choices=ORDERS, default="random")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=7, help="encode and decode timed as the best of this many")
    ap.add_argument("--quick", action="store_true", help="a small size (a smoke test): vocab 8192, 1,024 tokens")
    args = ap.parse_args()
    if args.quick:
        args.vocab, args.tokens, args.response_tokens, args.repeat = 8192, 1024, 128, 2
    measure(args)


if __name__ == "__main__":
    main()
