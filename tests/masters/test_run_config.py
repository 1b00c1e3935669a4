"""Run configs: typed, unknown keys refused by name, bad values explained; `masters validate`."""

import subprocess
import sys
from pathlib import Path

import pytest

from masters.run_config import RunConfig, load_run_config
from schemas.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("doc,message", [
    ({"run_id": "a", "itrations": 3}, "itrations: unknown key"),
    ({"run_id": "a", "train": {"lr": 1e-3}}, "train.lr: unknown key"),
    ({"run_id": "a", "sampling": {"top_p": 2}}, "sampling.top_p"),
    ({"run_id": "a", "teachers": [{"model": "x", "start": 2}]}, "first stage must start at iteration 0"),
    ({"run_id": "a", "teachers": [{"model": "x"}, {"model": "y", "start": 0}]}, "increasing"),
    ({"run_id": "a", "iterations": 3, "mask": {"iterations": 5}}, r"mask.iterations \(5\) must equal iterations \(3\)"),
    ({"run_id": "a", "production": {"launcher": "rey"}}, "production.launcher"),
    ({"run_id": "a", "production": {"shard": 2}}, "production.shard: unknown key"),
    ({"run_id": "a", "production": {"shards": 0}}, "production.shards"),
    ({"run_id": "a", "production": {"resources_per_shard": {"gpus": 1}}}, "resources_per_shard.gpus: unknown key"),
    ({"run_id": "bad id"}, "run_id"),
    ({}, "run_id"),
])
def test_config_errors_name_the_key(doc, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.parse(doc, where="cfg.yaml")


def test_teacher_ladder_and_default_schedule():
    cfg = RunConfig.parse({"run_id": "a", "teachers": [{"model": "M"}, {"model": "L", "start": 2}]})
    assert [cfg.teacher_for(i) for i in range(5)] == ["M", "M", "L", "L", "L"]
    assert cfg.schedule.ratios() == [0.2, 0.15, 0.1, 0.05, 0.0]


def test_masters_validate(tmp_path):
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text("run_id: x\niterations: 3\n")
    bad.write_text("run_id: x\njudge: {kind: rule, prams: {}}\n")
    ok = subprocess.run([sys.executable, "-m", "masters.cli", "validate", str(good)], cwd=ROOT,
                        capture_output=True, text=True)
    assert ok.returncode == 0 and "valid" in ok.stdout and "[0.2, 0.15, 0.05]" in ok.stdout  # the paper's formula with I = 3
    no = subprocess.run([sys.executable, "-m", "masters.cli", "validate", str(bad)], cwd=ROOT,
                        capture_output=True, text=True)
    assert no.returncode == 2 and "judge.prams: unknown key" in no.stderr and str(bad) in no.stderr
    with pytest.raises(ConfigError, match="cannot read"):
        load_run_config(tmp_path / "missing.yaml")
