"""A small, self-consistent Gen-Data set made in code: images, questions, one iteration of
teacher and student responses with token summaries, rule-based verdicts, a reward config and
rewards (computed by rewards.scores). No model is involved: it exists to exercise the catalog, snapshots and the CLI
(`masters roundtrip`) and as test data. Deterministic by seed."""

from __future__ import annotations

import io
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
from PIL import Image, ImageDraw

from rewards.judges import make_judge
from rewards.scores import compute_rewards, reward_config_row
from schemas import ids
from schemas import token_codec as codec
from schemas.config import RewardConfig

COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 210, 40)}
SAMPLING = {"temperature": 1.0, "top_p": 0.9, "top_k": 50, "repetition_penalty": 1.05,
            "max_new_tokens": 32}
JUDGE_ID = make_judge("exact").judge_id


def _png(colour: tuple[int, int, int], seed: int) -> bytes:
    img = Image.new("RGB", (32, 32), (255, 255, 255))
    d = ImageDraw.Draw(img)
    off = seed % 8
    d.ellipse([4 + off, 4, 24 + off, 24], fill=colour)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def synthetic_gendata(num_questions: int = 8, responses_per_source: int = 4, tokens: int = 12,
                      top_k: int = 4, seed: int = 0, run_id: str = "synthetic",
                      iteration: int = 0, encoding: str = codec.ENCODING) -> tuple[dict[str, pa.Table], RewardConfig]:
    """Tables keyed by catalog table name, and the reward config the rewards were made under
    (``encoding``: of the token_stats rows, any this version reads)."""
    rng = np.random.default_rng(seed)
    now = datetime.now(timezone.utc)
    names = list(COLOURS)
    images, questions = {}, []
    for q in range(num_questions):
        colour = names[q % len(names)]
        data = _png(COLOURS[colour], q)
        image_id = ids.bytes_id(data)
        images[image_id] = {"image_id": image_id, "bytes": data, "format": "PNG", "width": 32, "height": 32}
        text = "What colour is the circle?"
        questions.append({"question_id": ids.question_id("synthetic", image_id, f"{text} #{q}", colour),
                          "source": "synthetic", "split": "train", "qtype": "shape_colour",
                          "answer_type": "word", "question": f"{text} #{q}", "answer": colour,
                          "choices": [], "image_id": image_id, "meta": None})
    models = [{"model_id": ids.content_id("model", name=n, seed=seed), "name": n, "role": role,
               "family": "synthetic", "size_label": size, "path": f"/nonexistent/{n}",
               "param_count": p, "parent_model_id": None, "snapshot_name": None,
               "snapshot_manifest_sha256": None, "catalog_version": None, "meta": None,
               "created_at": now}
              for n, role, size, p in [("teacher-M", "teacher", "M", 2000), ("student-0", "student", None, 500)]]
    teacher, student = models[0]["model_id"], models[1]["model_id"]
    it_id = ids.iteration_id(run_id, iteration)
    mask_ratio = 0.2
    iterations = [{"iteration_id": it_id, "run_id": run_id, "iteration": iteration,
                   "mask_ratio": mask_ratio, "teacher_model_id": teacher,
                   "student_model_id": student, "config_hash": ids.config_hash({"seed": seed}),
                   "created_at": now}]
    responses, stats, verdicts = [], [], []
    for q in questions:
        gid = ids.group_id(it_id, q["question_id"])
        for source, model_id, ratio, p_right in [("teacher", teacher, mask_ratio, 0.8),
                                                 ("student", student, 0.0, 0.3)]:
            for k in range(responses_per_source):
                right = rng.random() < p_right
                text = q["answer"] if right else names[int(rng.integers(len(names)))]
                rid = ids.response_id(it_id, q["question_id"], source, model_id, ratio, k, seed, SAMPLING)
                n = int(rng.integers(tokens // 2, tokens + 1))
                tok = rng.integers(5, 500, n).astype(np.int32)
                responses.append({
                    "response_id": rid, "group_id": gid, "iteration_id": it_id,
                    "question_id": q["question_id"], "source": source, "model_id": model_id,
                    "mask_ratio": ratio, "sample_index": k, "seed": seed, "sampling": SAMPLING,
                    "prompt": q["question"], "token_ids": tok.tolist(),
                    "text": text, "finish_reason": "stop", "num_tokens": n, "created_at": now})
                t_lp = np.log(rng.uniform(0.05, 1.0, n)).astype(np.float32)
                s_lp = np.log(rng.uniform(0.05, 1.0, n)).astype(np.float32)
                jsd = rng.uniform(0, 0.5, n).astype(np.float32)
                topk_lp = np.sort(np.log(rng.dirichlet(np.ones(top_k + 1), n)[:, :top_k]), axis=1)[:, ::-1]
                topk_ids = np.argsort(rng.random((n, 495)), axis=1)[:, :top_k] + 5  # distinct ids per token
                stats.append({
                    "stats_id": ids.token_stats_id(rid, teacher, mask_ratio, student, top_k, encoding),
                    "response_id": rid, "iteration_id": it_id, "teacher_model_id": teacher,
                    "teacher_mask_ratio": mask_ratio, "student_model_id": student,
                    "encoding": encoding, "top_k": top_k, "num_tokens": n,
                    **codec.encode_columns(encoding, student_logprobs=s_lp, teacher_logprobs=t_lp, jsd=jsd,
                                           kl_forward=2 * jsd, kl_reverse=1.5 * jsd, topk_ids=topk_ids,
                                           topk_logprobs=topk_lp, token_ids=tok),
                    "created_at": now})
                verdicts.append({
                    "verdict_id": ids.verdict_id(rid, JUDGE_ID), "response_id": rid, "iteration_id": it_id,
                    "judge_id": JUDGE_ID, "judge_kind": "exact", "score": float(right),
                    "extracted_answer": text, "raw_output": None, "latency_s": 0.0,
                    "state": "ok", "error": None, "created_at": now})
    config = RewardConfig(judge_id=JUDGE_ID)
    from schemas.tables import TABLES

    made = {k: pa.Table.from_pylist(v, schema=TABLES[k].schema)
            for k, v in (("responses", responses), ("token_stats", stats), ("verdicts", verdicts))}
    rewards = compute_rewards(made["responses"], made["verdicts"], made["token_stats"], config).rewards
    tables = {"images": list(images.values()), "questions": questions, "models": models,
              "iterations": iterations, "reward_configs": [reward_config_row(config)]}
    out = {k: pa.Table.from_pylist(v, schema=TABLES[k].schema) for k, v in tables.items()}
    return {**out, **made, "rewards": rewards}, config
