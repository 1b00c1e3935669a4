"""Teacher-forced scoring with per-token summaries vs plain forward passes of the same two
models over the same inputs (what any scorer must pay). Goal: <= 1.3x.

The summaries (exact JSD and KL from the full distributions, top-k, token log-probs) are made
from the last hidden states, ``chunk`` positions at a time, so their cost is the LM head plus a
few vocabulary-wide reductions.

Real shapes by default: Qwen2's 151,665-id tokenizer (the tiny one, padded with filler ids) and
LM heads of 151,936 rows.

    python benchmarks/scoring.py [--vocab 151936 --tokens 151665 --length 128 --responses 8]
"""

from __future__ import annotations

import argparse
import time

import torch

from gendata.hf_generate import _inputs
from gendata.masking import masked, plan_masks
from gendata.scoring import ScoringConfig, _teacher_forced_inputs, score_group
from gendata.synthetic_vqa import synthetic_vqa
from gendata.tiny_vlm import TinySize, family, pad_tokenizer, train_tokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vocab", type=int, default=151_936, help="LM head rows (the padded vocabulary)")
    ap.add_argument("--tokens", type=int, default=151_665, help="tokenizer ids (the shared vocabulary)")
    ap.add_argument("--length", type=int, default=128, help="tokens per response")
    ap.add_argument("--responses", type=int, default=8, help="responses per prompt (one batch)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    fam = family("qwen2_vl")
    qs = synthetic_vqa(12, "train")
    tok = pad_tokenizer(train_tokenizer([q["question"] for q in qs.questions.to_pylist()], fam.special_tokens, 400,
                                        fam.image_placeholder), args.tokens)
    processor = fam.build_processor(tok, 112)
    teacher = fam.build_model(TinySize(256, 4, 4, 2, 128, 2, 2), tok, 112, args.vocab).eval()
    student = fam.build_model(TinySize(128, 2, 4, 2, 64, 2, 2), tok, 112, args.vocab).eval()
    image = qs.images.column("bytes")[0].as_py()
    prompt = qs.questions.column("question")[0].as_py()
    comps = [torch.randint(len(fam.special_tokens), args.tokens, (args.length,)).tolist()  # no special tokens
             for _ in range(args.responses)]
    plan = plan_masks(teacher, [0.2])
    config = ScoringConfig(top_k=8)

    @torch.no_grad()
    def plain():
        inputs, _ = _teacher_forced_inputs(student, processor, prompt, image, comps)
        with masked(teacher, 0.2, plan):
            teacher(**inputs).logits.sum()
        student(**inputs).logits.sum()

    @torch.no_grad()
    def plain_completion_only():  # the cheapest plain pass: logits of the completion positions only
        inputs, _ = _teacher_forced_inputs(student, processor, prompt, image, comps)
        with masked(teacher, 0.2, plan):
            teacher(**inputs, logits_to_keep=args.length + 1).logits.sum()
        student(**inputs, logits_to_keep=args.length + 1).logits.sum()

    def ours():
        score_group(teacher, student, processor, prompt, image, comps, 0.2, plan, config)

    _inputs(student, processor, [prompt], [image])  # warm-up
    plain(), plain_completion_only(), ours()
    t_plain = min(_time(plain) for _ in range(args.repeats))
    t_keep = min(_time(plain_completion_only) for _ in range(args.repeats))
    t_ours = min(_time(ours) for _ in range(args.repeats))
    n_tok = args.length * args.responses
    print(f"teacher {sum(p.numel() for p in teacher.parameters()):,} params, student "
          f"{sum(p.numel() for p in student.parameters()):,} params, LM heads {args.vocab:,} rows, "
          f"{args.tokens:,} shared ids; {args.responses} responses x {args.length} tokens")
    print(f"plain forward passes (both models) : {t_plain * 1000:8.1f} ms  ({n_tok / t_plain:,.0f} tokens/s)")
    print(f"plain, completion logits only      : {t_keep * 1000:8.1f} ms  ({n_tok / t_keep:,.0f} tokens/s)")
    print(f"scoring with summaries             : {t_ours * 1000:8.1f} ms  ({n_tok / t_ours:,.0f} tokens/s)")
    print(f"ratio scoring / plain forward               : {t_ours / t_plain:.3f}  (goal <= 1.3)")
    print(f"ratio scoring / plain, completion logits only: {t_ours / t_keep:.3f}")


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
