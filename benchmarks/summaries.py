"""Bytes per token of the stored per-token summaries, and the error of the JSD read back from
them against the exact JSD, per setting (encoding x top-k). Goal: <= 48 B/token at mean
|error| <= 1e-3. Real distributions: the tiny ladder's masked L teacher (r = 0.2) scoring
responses of the student and of the teacher on held-out questions.

    python benchmarks/summaries.py [--questions 24 --n 4]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from gendata.hf_generate import _inputs
from gendata.backends import SamplingConfig, TransformersBackend, generate_responses
from gendata.masking import masked, plan_masks
from gendata.scoring import ScoringConfig, _teacher_forced_inputs, score_group, token_stats_row
from gendata.synthetic_vqa import synthetic_vqa
from masters.fixtures import ensure_ladder
from schemas import token_codec as codec
from schemas.tables import TOKEN_STATS


def exact_float64(teacher, student, processor, prompt, image, comps, plan):
    """Reference JSD per token in float64 from full logits (independent of gendata.scoring)."""
    inputs, p_len = _teacher_forced_inputs(student, processor, prompt, image, comps)
    with torch.no_grad():
        with masked(teacher, 0.2, plan):
            t_all = teacher(**inputs).logits.double()
        s_all = student(**inputs).logits.double()
    out = []
    for j, c in enumerate(comps):
        t = t_all[j, p_len - 1:p_len - 1 + len(c)].softmax(-1)
        s = s_all[j, p_len - 1:p_len - 1 + len(c)].softmax(-1)
        m = (t + s) / 2
        out.append((0.5 * (t * (t / m).log()).nansum(-1) + 0.5 * (s * (s / m).log()).nansum(-1)).numpy())
    return out


def float32_row(row: dict, summary) -> dict:
    """The same row with every per-token column as plain float32 (the uncompressed baseline)."""
    return {**row, "teacher_logprobs": summary.teacher_logprobs.astype(np.float32),
            "jsd": summary.jsd.astype(np.float32), "kl_forward": summary.kl_forward.astype(np.float32),
            "kl_reverse": summary.kl_reverse.astype(np.float32),
            "teacher_topk_logprobs": summary.topk_logprobs.reshape(-1).astype(np.float32)}


F32_SCHEMA = pa.schema([pa.field(f.name, pa.list_(pa.float32())) if f.name in (
    "teacher_logprobs", "jsd", "kl_forward", "kl_reverse", "teacher_topk_logprobs") else f
    for f in TOKEN_STATS.schema])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--questions", type=int, default=24)
    ap.add_argument("--n", type=int, default=4, help="responses per source and question")
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--long", type=int, default=64, help="also score free-running continuations of "
                    "this many tokens per student response (0: off)")
    args = ap.parse_args()
    ladder = ensure_ladder(progress=False)
    teacher_b = TransformersBackend(str(ladder / "models" / "L"), mask_ratio=0.2)
    student_b = TransformersBackend(str(ladder / "models" / "student"))
    teacher, student, processor = teacher_b.model, student_b.model, student_b.processor
    qs = synthetic_vqa(args.questions, "test", seed=99)
    by_id = dict(zip(qs.images.column("image_id").to_pylist(), qs.images.column("bytes").to_pylist()))
    images = {q["question_id"]: by_id[q["image_id"]] for q in qs.questions.to_pylist()}
    sampling = SamplingConfig(max_new_tokens=args.max_new_tokens)
    responses = []
    for source, eng, ratio in (("teacher", teacher_b, 0.2), ("student", student_b, 0.0)):
        for t in generate_responses(eng, qs.questions, images, iteration_id="bench", source=source,
                                    model_id=source, mask_ratio=ratio, n=args.n, seed=0, sampling=sampling):
            responses += t.to_pylist()
    if args.long:  # tiny models answer in 2-3 tokens; also score long free-running continuations
        eos = student.generation_config.eos_token_id
        for r in list(responses):
            if r["source"] != "student":
                continue
            inputs = _inputs(student, processor, [r["prompt"]], [images[r["question_id"]]])
            torch.manual_seed(len(responses))
            out = student.generate(**inputs, do_sample=True, max_new_tokens=args.long,
                                   min_new_tokens=args.long, pad_token_id=processor.tokenizer.pad_token_id)
            ids = [t for t in out[0, inputs["input_ids"].shape[1]:].tolist() if t != eos]
            responses.append({**r, "response_id": r["response_id"] + "-long", "token_ids": ids})
    plan = plan_masks(teacher, [0.2])
    by_q: dict[str, list[dict]] = {}
    for r in responses:
        if r["token_ids"]:
            by_q.setdefault(r["question_id"], []).append(r)
    print(f"{len(responses)} responses, {sum(len(r['token_ids']) for r in responses):,} tokens; teacher L "
          f"masked at 0.2, student; vocabulary {len(processor.tokenizer)}")
    print(f"{'setting':<22} {'B/token (file)':>15} {'B/token (per-token cols)':>25} {'mean |JSD err|':>15} "
          f"{'max |JSD err|':>14} {'mean |D err|':>13}")

    for k in (4, 8, 16):
        cfg = ScoringConfig(top_k=k)
        rows = {"float32": [], "fx16 (ours)": []}
        exact, stored, d_err, tokens = [], {"float32": [], "fx16 (ours)": []}, {"float32": [], "fx16 (ours)": []}, 0
        for qid, group in by_q.items():
            comps = [r["token_ids"] for r in group]
            sums = score_group(teacher, student, processor, group[0]["prompt"], images[qid], comps, 0.2, plan, cfg)
            refs = exact_float64(teacher, student, processor, group[0]["prompt"], images[qid], comps, plan)
            for r, summ, e in zip(group, sums, refs):
                row = token_stats_row(r["response_id"], summ, iteration_id="it", teacher_model_id="t", teacher_mask_ratio=0.2,
                                      student_model_id="s", top_k=k)
                rows["fx16 (ours)"].append(row)
                rows["float32"].append(float32_row(row, summ))
                for name, back in (("fx16 (ours)", codec.decode_jsd(row["jsd"])),
                                   ("float32", summ.jsd.astype(np.float32))):
                    stored[name].append(back)
                    d_err[name].append(abs(float(back.astype(np.float64).mean()) - float(e.mean())))
                exact.append(e)
                tokens += len(e)
        exact_all = np.concatenate(exact)
        per_tok = ["student_logprobs", "teacher_logprobs", "jsd", "kl_forward", "kl_reverse",
                   "teacher_topk_ids", "teacher_topk_logprobs"]
        for name, schema in (("float32", F32_SCHEMA), ("fx16 (ours)", TOKEN_STATS.schema)):
            table = pa.Table.from_pylist(rows[name], schema=schema)
            with tempfile.TemporaryDirectory() as d:
                pq.write_table(table, Path(d) / "all.parquet")  # the catalog's writer settings
                pq.write_table(table.select(per_tok), Path(d) / "cols.parquet")
                size = (Path(d) / "all.parquet").stat().st_size
                size_cols = (Path(d) / "cols.parquet").stat().st_size
            err = np.abs(np.concatenate(stored[name]).astype(np.float64) - exact_all)
            label = f"{name}, top-{k}"
            print(f"{label:<22} {size / tokens:>15.1f} {size_cols / tokens:>25.1f} {err.mean():>15.2e} "
                  f"{err.max():>14.2e} {np.mean(d_err[name]):>13.2e}")


if __name__ == "__main__":
    main()
