"""Offline GRPO on TRL over real snapshots of two VLM families."""

import json

import datasets
import pytest
import torch

from schemas.errors import ConfigError, SnapshotError, SnapshotVerificationError
from trainer.config import GRPORunConfig
from trainer.grpo import build_trainer, train_grpo
from trainer.offline_batch import OfflineBatcher, check_token_ids, training_rows


def _config(student, snap, out, **kw):
    base = dict(model=str(student), snapshot=str(snap), output_dir=str(out), batch_size=4,
                learning_rate=2e-3, logging_steps=1, progress=False)
    return GRPORunConfig(**{**base, **kw})


@torch.no_grad()
def advantage_weighted_loglik(model, processor, rows, top_k) -> float:
    """mean over rows of advantage x mean log-prob of the row's completion: what GRPO raises."""
    batcher = OfflineBatcher(processor, top_k)
    total = 0.0
    for start in range(0, rows.num_rows, 8):
        part = [rows[i] for i in range(start, min(start + 8, rows.num_rows))]
        b = batcher(part)
        fwd = {k: b[k] for k in ("pixel_values", "image_grid_thw", "mm_token_type_ids") if k in b}
        logits = model(input_ids=torch.cat([b["prompt_ids"], b["completion_ids"]], 1),
                       attention_mask=torch.cat([b["prompt_mask"], b["completion_mask"]], 1),
                       logits_to_keep=b["completion_ids"].shape[1] + 1, **fwd).logits[:, :-1]
        lp = logits.log_softmax(-1).gather(-1, b["completion_ids"].unsqueeze(-1)).squeeze(-1)
        m = b["completion_mask"].float()
        total += float((b["advantages"] * (lp * m).sum(1) / m.sum(1).clamp_min(1)).sum())
    return total / rows.num_rows


@pytest.mark.parametrize("family", ["qwen2_vl", "llava"])
def test_offline_grpo_trains_on_a_real_snapshot(grpo_snapshot, tmp_path, family):
    from gendata.hf_generate import load_vlm
    from schemas.snapshot import manifest_sha256

    student, teacher, snap = grpo_snapshot(family)
    cfg = _config(student, snap, tmp_path / "out", max_steps=12)
    run = build_trainer(cfg)
    rows, top_k = run.rows, run.trainer.batcher.top_k
    assert top_k == 8 and rows.num_rows > 0
    before = advantage_weighted_loglik(run.trainer.model.eval(), run.processor, rows, top_k)
    del run
    metrics = train_grpo(cfg)
    assert metrics["steps"] == 12
    first, last = metrics["first_log"], metrics["last_log"]
    # step 1 reproduces the stored student log-probs: ratio 1 and zero KL to the stored reference
    assert first["masters/ratio_mean"] == pytest.approx(1.0, abs=1e-4)
    assert first["masters/kl"] == pytest.approx(0.0, abs=1e-6)
    assert first["masters/jsd"] > 0  # a different (masked) teacher: the JSD term is live
    assert all(torch.isfinite(torch.tensor(float(v))) for v in last.values())
    assert last["masters/ratio_mean"] != pytest.approx(1.0, abs=1e-4)  # the policy moved off the stored one
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["kind"] == "grpo" and meta["snapshot"] == "iter0"
    assert meta["snapshot_manifest_sha256"] == manifest_sha256(snap)
    assert meta["trainer_config"]["max_steps"] == 12 and meta["processes"] == 1
    model, processor = load_vlm(tmp_path / "out", device="cpu")  # an ordinary HF folder that reloads
    after = advantage_weighted_loglik(model.eval(), processor, rows, top_k)
    assert after > before  # completions with positive advantage became likelier relative to the rest


def test_updates_per_batch_reuses_each_sampled_batch(grpo_snapshot, tmp_path):
    student, _, snap = grpo_snapshot("qwen2_vl")
    run = build_trainer(_config(student, snap, tmp_path / "o", max_steps=4, updates_per_batch=3,
                                gradient_accumulation_steps=2))
    order = list(run.trainer._get_train_sampler())
    gen = run.trainer.args.generation_batch_size
    assert gen == 8
    chunks = [order[i:i + gen] for i in range(0, len(order), gen)]
    # each sampled batch is served (updates_per_batch x steps_per_generation) times, then the next
    assert chunks[0] == chunks[1] == chunks[5] and chunks[6] != chunks[0]
    distinct = {i for c in chunks[::6] for i in c}
    assert len(distinct) == (run.rows.num_rows // gen) * gen  # every row once per epoch (last partial batch dropped)


def test_tampered_snapshot_is_refused_before_training(grpo_snapshot, tmp_path, tampered_copy):
    student, _, snap = grpo_snapshot("llava")
    copy, shard = tampered_copy(snap, 200)
    with pytest.raises(SnapshotVerificationError, match=rf"{shard.relative_to(copy)}: changed"):
        train_grpo(_config(student, copy, tmp_path / "o", max_steps=1))
    shard.unlink()
    with pytest.raises(SnapshotVerificationError, match="missing"):
        train_grpo(_config(student, copy, tmp_path / "o", max_steps=1))
    assert not (tmp_path / "o").exists()


def _rows(**changes):
    row = {"response_id": "r1", "source": "teacher", "prompt": "p", "image": None, "completion_ids": [5, 6, 7],
           "reward": 1.0, "advantage": 0.5, "student_logprobs": [-1.0, -2.0, -3.0], "top_k": 2,
           "teacher_topk_ids": [1, 2] * 3, "teacher_topk_logprobs": [-0.5, -1.5] * 3}
    other = {**row, "response_id": "r2", "source": "student"}
    return datasets.Dataset.from_list([other, {**row, **changes}])


@pytest.mark.parametrize("changes,message", [
    ({"student_logprobs": [-1.0]}, "response r1.*no student log-prob per completion token"),
    ({"student_logprobs": None}, "response r1.*no student log-prob"),
    ({"advantage": float("nan")}, "response r1.*no finite advantage"),
    ({"teacher_topk_ids": [1, 2]}, "response r1.*teacher_topk_ids of the wrong length"),
    ({"top_k": 3, "teacher_topk_ids": [1, 2, 3] * 3, "teacher_topk_logprobs": [-1.0] * 9},
     "response r1.*mixes top-k sizes"),
    ({"source": "oracle"}, "unknown source 'oracle'"),
])
def test_bad_rows_are_refused_naming_the_response(changes, message):
    with pytest.raises(SnapshotError, match=message):
        training_rows(_rows(**changes), ["teacher", "student"], True, "snap")


@pytest.mark.parametrize("changes,message", [
    ({"teacher_topk_ids": [1, 152_064] * 3}, "response r1 holds teacher top-k id 152064 \\(teacher_topk_ids\\), "
     "beyond the vocabulary of student \\(152064 ids\\)"),
    ({"completion_ids": [5, 160_000, 7]}, "response r1 holds completion token id 160000 \\(completion_ids\\)"),
    ({"teacher_topk_ids": [1, -1] * 3}, "response r1 holds teacher top-k id -1"),
])
def test_token_ids_beyond_the_students_head_are_refused(changes, message):
    """Completion ids and teacher top-k ids are bounds-checked against the student's LM head (a
    real-size one here: 152,064 rows), naming the response, the id and the column."""
    rows, _ = training_rows(_rows(**changes), ["teacher", "student"], True, "snap")
    with pytest.raises(SnapshotError, match=message):
        check_token_ids(rows, 152_064, "snap", "student")
    check_token_ids(training_rows(_rows(), ["teacher", "student"], True, "snap")[0], 152_064, "snap", "student")


def test_row_selection_by_source_and_missing_columns():
    rows, k = training_rows(_rows(), ["student"], True, "snap")
    assert rows["response_id"] == ["r2"] and k == 2
    rows, k = training_rows(_rows(top_k=None), ["teacher", "student"], False, "snap")  # JSD off: top-k unused
    assert rows.num_rows == 2 and k == 0
    with pytest.raises(SnapshotError, match="no column 'advantage'"):
        training_rows(_rows().remove_columns("advantage"), ["teacher"], True, "snap")


def test_foreign_vocabulary_and_bad_batch_are_refused(grpo_snapshot, tmp_path):
    student, _, snap = grpo_snapshot("qwen2_vl")
    from gendata.tiny_vlm import FAMILIES, TinySize, build_tiny_vlm, train_tokenizer

    fam = FAMILIES["qwen2_vl"]
    small = build_tiny_vlm("qwen2_vl", TinySize(32, 1, 2, 1, 32, 1, 2),
                           train_tokenizer(["a b c"], fam.special_tokens, 40, fam.image_placeholder), tmp_path / "s")
    with pytest.raises(SnapshotError, match="beyond the vocabulary"):
        build_trainer(_config(small, snap, tmp_path / "o", max_steps=1))
    with pytest.raises(ConfigError, match="at least 2"):
        build_trainer(_config(student, snap, tmp_path / "o", max_steps=1, batch_size=1))
    with pytest.raises(ConfigError, match="fewer than one batch"):
        build_trainer(_config(student, snap, tmp_path / "o", max_steps=1, batch_size=512))


def test_padding_and_underflowed_log_probs_stay_finite():
    """Padded positions and a stored log-prob of -inf must not turn the loss into NaN."""
    from trainer.losses import masters_loss

    mask = torch.tensor([[1, 1, 0]])
    stored = torch.tensor([[-1.0, -2.0, 0.0]])
    live = torch.tensor([[-1.1, -2.2, -120.0]], requires_grad=True)  # a pad position far below exp's range
    logps = torch.where(mask.bool(), live, stored)
    loss, m = masters_loss(logps, stored, stored, torch.tensor([1.0]), mask)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(live.grad).all() and live.grad[0, 2] == 0
    from trainer.offline_batch import OfflineBatcher

    class Proc:  # just what the completion side of the batcher touches
        tokenizer = type("T", (), {"pad_token_id": 0})()

    batcher = OfflineBatcher(Proc())
    batcher.prompt_inputs = lambda prompts, images: {"input_ids": torch.ones(1, 2, dtype=torch.long),
                                                     "attention_mask": torch.ones(1, 2, dtype=torch.long)}
    b = batcher([{"response_id": "r", "prompt": "p", "image": b"x", "completion_ids": [4, 5, 6], "advantage": 1.0,
                  "student_logprobs": [-1.0, float("-inf"), -0.5]}])
    assert b["completion_mask"].tolist() == [[1, 0, 1]]  # the underflowed token is left out
    assert torch.isfinite(b["old_per_token_logps"]).all()


def test_checkpoints_and_resume(grpo_snapshot, tmp_path, monkeypatch):
    from trainer.grpo import OfflineGRPOTrainer

    student, _, snap = grpo_snapshot("qwen2_vl")
    out = tmp_path / "o"
    first = train_grpo(_config(student, snap, out, max_steps=4, save_steps=2))
    assert first["steps"] == 4 and (out / "trainer_state" / "checkpoint-4").is_dir()
    steps = []
    real = OfflineGRPOTrainer.training_step
    monkeypatch.setattr(OfflineGRPOTrainer, "training_step", lambda self, *a, **k: steps.append(1) or real(self, *a, **k))
    resumed = train_grpo(_config(student, snap, out, max_steps=6, save_steps=2, resume=True))
    assert len(steps) == 2  # only steps 5 and 6 ran: resumed from checkpoint-4, not restarted
    state = json.loads((out / "trainer_state" / "checkpoint-6" / "trainer_state.json").read_text())
    assert resumed["steps"] == 6
    assert [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3, 4, 5, 6]  # continued, not restarted
