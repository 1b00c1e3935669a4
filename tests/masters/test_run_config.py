"""Run configs: typed, unknown keys refused by name, bad values explained; `masters validate`."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gendata.placement import Placement
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
    ({"run_id": "a", "teachers": [{"model": "x", "dtype": "bf16"}]}, "teachers.0.dtype"),
    ({"run_id": "a", "teachers": [{"model": "x", "device_map": "cuda:x"}]}, "teachers.0.device_map.*not a device"),
    ({"run_id": "a", "teachers": [{"model": "x", "device_map": {"model": "gpu0"}}]}, "device_map\\['model'\\]"),
    ({"run_id": "a", "teachers": [{"model": "x", "max_memory": {0: "lots"}}]}, "max_memory.*70GiB"),
    ({"run_id": "a", "student": {"model": "x", "devicemap": "auto"}}, "student.devicemap: unknown key"),
    ({"run_id": "a", "backend": "vllm", "production": {"launcher": "ray", "resources_per_shard": {"num_gpus": 1}},
      "teachers": [{"model": "x", "tensor_parallel_size": 4}]}, "teachers.0.tensor_parallel_size \\(4\\) is more GPUs"),
    ({"run_id": "bad id"}, "run_id"),
    ({}, "run_id"),
])
def test_config_errors_name_the_key(doc, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig.parse(doc, where="cfg.yaml")


def test_teacher_ladder_and_default_schedule():
    cfg = RunConfig.parse({"run_id": "a", "teachers": [{"model": "M"}, {"model": "L", "start": 2}]})
    assert [cfg.teacher_for(i) for i in range(5)] == ["M", "M", "L", "L", "L"]
    assert cfg.student.model == "ladder:student" and cfg.student.placement.dtype is None
    assert cfg.schedule.ratios() == [0.2, 0.15, 0.1, 0.05, 0.0]


def test_per_model_placement_reaches_every_iteration(tmp_path):
    """dtype / device_map per model: the ladder's teachers as their stage says, every student as
    the student entry says; an explicit dtype changes the iteration's config hash, placement does not."""
    from masters.plan import RunPlan
    from schemas.config import CatalogConfig

    folders = {}
    for name in ("s", "m", "l"):
        folders[name] = tmp_path / name
        folders[name].mkdir()
        (folders[name] / "config.json").write_text("{}")
    cfg = RunConfig.parse({"run_id": "a", "iterations": 3, "student": str(folders["s"]),
                           "teachers": [{"model": str(folders["m"]), "dtype": "bfloat16"},
                                        {"model": str(folders["l"]), "start": 1, "dtype": "bfloat16",
                                         "device_map": "balanced", "max_memory": {0: "70GiB", 1: "70GiB"}}]})
    plan = RunPlan.build(cfg, CatalogConfig.for_directory(str(tmp_path / "cat")), progress=False)
    specs = [plan.spec(i) for i in range(3)]
    assert [s.teacher_placement.device_map for s in specs] == [None, "balanced", "balanced"]
    assert {s.teacher_placement.dtype for s in specs} == {"bfloat16"}
    assert {s.student_placement.dtype for s in specs} == {None}
    placed = specs[1].teacher_placement.from_pretrained_kwargs("cpu")
    assert placed["device_map"] == "balanced" and placed["max_memory"] == {0: "70GiB", 1: "70GiB"}
    assert specs[0].teacher_placement.from_pretrained_kwargs("cpu")["dtype"] == torch.bfloat16
    assert specs[0].student_placement.from_pretrained_kwargs("cpu") == {"dtype": torch.float32}
    moved = specs[1].model_copy(update={"teacher_placement": specs[0].teacher_placement})
    assert moved.config_hash() == specs[1].config_hash()  # placement alone does not make other rows
    fp32 = specs[1].model_copy(update={"teacher_placement": Placement(dtype="float32")})
    assert fp32.config_hash() != specs[1].config_hash()
    assert plan.placement_of(folders["l"]).device_map == "balanced"
    assert plan.placement_of(plan.student_for(2)) == cfg.student.placement  # trained students too


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
