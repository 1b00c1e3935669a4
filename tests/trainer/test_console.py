"""The trainers' console and logs: each log dict goes to <output_dir>/trainer_log.jsonl (one JSON
line per logged step, a resumed training continuing it), nothing is printed per log step, the
only bar is one labelled 'train' bar (when asked), and the libraries' bars and messages a user
cannot act on are silenced at their source."""

import json
import re

from trainer.config import GRPORunConfig, SFTRunConfig
from trainer.data import TRAINER_LOG
from trainer.grpo import train_grpo
from trainer.sft import train_sft

NOISE = ("{'", "'loss':", "select sources", "Flattening", "Generating train split", "Writing model shards",
         "chat format", "Setting accelerator", "ds_accelerator")


def _log(out) -> list[dict]:
    return [json.loads(line) for line in (out / TRAINER_LOG).read_text().splitlines()]


def _bars(err: str) -> list[str]:
    return [s for s in re.split(r"[\r\n]", err) if re.search(r"\[[^\]]*(/s|s/\w+)\]\s*$", s)]


def test_grpo_logs_to_the_run_folder_and_shows_one_labelled_bar(grpo_snapshot, tmp_path, capfd):
    student, _, snap = grpo_snapshot("qwen2_vl")
    out = tmp_path / "o"
    capfd.readouterr()  # what building the fixture printed
    metrics = train_grpo(GRPORunConfig(model=str(student), snapshot=str(snap), output_dir=str(out), batch_size=4,
                                       learning_rate=2e-3, logging_steps=2, max_steps=6, progress=True))
    console = "".join(capfd.readouterr())
    for noise in NOISE:
        assert noise not in console, f"{noise!r} on the console:\n{console[-2000:]}"
    bars = _bars(console)
    assert bars and all(b.startswith("train: ") for b in bars), bars  # one bar, labelled, nothing under it
    lines = _log(out)
    assert [line["step"] for line in lines if "loss" in line] == [2, 4, 6]
    assert lines[2] == metrics["last_log"]  # the very dicts the Trainer logged
    assert "train_runtime" in lines[-1] and len(lines) == 4


def test_a_resumed_grpo_training_continues_its_log(grpo_snapshot, tmp_path):
    student, _, snap = grpo_snapshot("qwen2_vl")
    out = tmp_path / "o"
    base = dict(model=str(student), snapshot=str(snap), output_dir=str(out), batch_size=4, learning_rate=2e-3,
                logging_steps=1, save_steps=3, progress=False)
    train_grpo(GRPORunConfig(**base, max_steps=4))  # checkpoint-3, then step 4 logged
    train_grpo(GRPORunConfig(**base, max_steps=6, resume=True))  # from checkpoint-3: steps 4, 5, 6 again
    steps = [line["step"] for line in _log(out)]
    assert steps == [1, 2, 3, 4, 5, 6, 6]  # each step once, then the final summary of the resumed training


def test_sft_logs_to_the_run_folder_and_prints_nothing(tiny_checkpoints, sft_folder, tmp_path, capfd):
    out = tmp_path / "sft"
    capfd.readouterr()
    train_sft(SFTRunConfig(model=str(tiny_checkpoints["qwen2_vl"]), snapshot=str(sft_folder), output_dir=str(out),
                           max_steps=4, batch_size=8, logging_steps=2, progress=False))
    console = "".join(capfd.readouterr())
    for noise in NOISE:
        assert noise not in console, f"{noise!r} on the console:\n{console[-2000:]}"
    assert not _bars(console)
    lines = _log(out)
    assert [line["step"] for line in lines if "loss" in line] == [2, 4] and "train_runtime" in lines[-1]
