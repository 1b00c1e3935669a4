"""DeepSpeed ZeRO-3 with two processes on CPU (gloo), through the shipped accelerate config and
the trainer's own entry point (`accelerate launch ... -m trainer grpo CONFIG`)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_grpo_under_zero3_with_two_processes(grpo_snapshot, tmp_path):
    from gendata.hf_generate import load_vlm

    student, _, snap = grpo_snapshot("qwen2_vl")
    out = tmp_path / "zero3"
    cfg = tmp_path / "grpo.yaml"
    cfg.write_text(yaml.safe_dump({"model": str(student), "snapshot": str(snap), "output_dir": str(out),
                                   "max_steps": 3, "batch_size": 2, "learning_rate": 2e-3,
                                   "logging_steps": 1, "progress": False}))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # from another directory: the shipped accelerate config names its DeepSpeed JSON relative to
    # the checkout, and the trainer finds it there
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                           str(ROOT / "configs/accelerate/zero3.yaml"), "--num_processes", "2", "-m", "trainer",
                           "grpo", str(cfg)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["processes"] == 2 and meta["deepspeed"] is True
    assert meta["metrics"]["steps"] == 3
    assert all(torch.isfinite(torch.tensor(float(v))) for v in meta["metrics"]["last_log"].values())
    trained, _ = load_vlm(out, device="cpu")  # the gathered ZeRO-3 weights reload as an HF folder
    base, _ = load_vlm(student, device="cpu")
    t, b = trained.state_dict(), base.state_dict()
    assert t.keys() == b.keys() and all(t[k].shape == b[k].shape for k in b)
    assert any(not torch.equal(t[k], b[k]) for k in b)  # trained, not the base copied through


def test_the_deepspeed_file_of_an_accelerate_config_is_found_from_any_directory(tmp_path, monkeypatch):
    from transformers.integrations import HfDeepSpeedConfig

    from schemas.errors import ConfigError
    from trainer.config import resolve_accelerate_deepspeed_file

    monkeypatch.chdir(tmp_path)
    named = yaml.safe_load((ROOT / "configs/accelerate/zero3.yaml").read_text())["deepspeed_config"]["deepspeed_config_file"]
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", named)  # as accelerate launch hands it over
    resolve_accelerate_deepspeed_file()
    assert HfDeepSpeedConfig(os.environ["ACCELERATE_DEEPSPEED_CONFIG_FILE"]).is_zero3()
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_CONFIG_FILE", "configs/deepspeed/zero9.json")
    with pytest.raises(ConfigError, match="zero9.json is not a file"):
        resolve_accelerate_deepspeed_file()
