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
    # the kind-and-params sections are typed: a wrong kind or parameter is caught here, not at run time
    ({"run_id": "a", "judge": {"kind": "lmm"}}, "judge.kind: unknown judge 'lmm'; known: rule, exact, numeric, choice, llm"),
    ({"run_id": "a", "judge": {"kind": "llm", "params": {"base_url": "http://judge:8000/v1"}}},
     "judge.params.model: Field required"),
    ({"run_id": "a", "judge": {"kind": "llm", "params": {"model": "m"}}}, "judge.params.base_url: Field required"),
    ({"run_id": "a", "judge": {"kind": "llm", "params": {"model": "m", "base_url": "judge:8000/v1"}}},
     "judge.params.base_url: .*http://"),
    ({"run_id": "a", "judge": {"kind": "llm", "params": {"model": "m", "base_url": "http://j/v1", "template": "v9"}}},
     "judge.params.template: .*unknown judge template 'v9'; known: v1"),
    ({"run_id": "a", "judge": {"kind": "llm", "params": {"model": "m", "base_url": "http://j/v1", "concurency": 4}}},
     "judge.params.concurency: unknown key"),
    ({"run_id": "a", "judge": {"kind": "numeric", "params": {"tolerence": 0.1}}}, "judge.params.tolerence: unknown key"),
    ({"run_id": "a", "judge": {"kind": "numeric", "params": {"tolerance": -1}}}, "judge.params.tolerance"),
    ({"run_id": "a", "judge": {"kind": "exact", "params": {"tolerance": 0.1}}}, "judge.params.tolerance: unknown key"),
    ({"run_id": "a", "backend": "vlm"}, "backend: unknown generation backend 'vlm'; known: transformers, vllm"),
    ({"run_id": "a", "reward": {"w_acc": float("inf")}}, "reward.w_acc: .*finite"),
    ({"run_id": "a", "reward": {"w_distill": float("nan")}}, "reward.w_distill: .*finite"),
    ({"run_id": "a", "reward": {"divergence": "kl"}},
     "reward.divergence: unknown divergence 'kl'; known: jsd, kl_forward, kl_reverse"),
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


def test_masters_validate_catches_kinds_params_and_non_finite_weights(tmp_path):
    """What used to fail only at run time, after the ladder was built, is refused by `masters validate`."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("run_id: x\nbackend: vlm\njudge: {kind: llm, params: {base_url: 'http://j:8000/v1'}}\n"
                   "reward: {w_acc: .inf}\n")
    no = subprocess.run([sys.executable, "-m", "masters.cli", "validate", str(bad)], cwd=ROOT,
                        capture_output=True, text=True)
    assert no.returncode == 2 and "Traceback" not in no.stderr, no.stderr
    for line in ("backend: unknown generation backend 'vlm'; known: transformers, vllm",
                 "judge.params.model: Field required", "reward.w_acc: Input should be a finite number"):
        assert line in no.stderr


def test_judge_params_are_typed_and_validated_without_the_judge_extra(tmp_path):
    """The llm judge's parameters are its LLMJudgeConfig after validation; validating imports neither
    openai nor vllm (the params classes live apart from the clients)."""
    code = ("import sys\nfrom masters.run_config import load_run_config\n"
            "cfg = load_run_config('configs/run/cluster-internvl.yaml')\n"
            "print(type(cfg.judge.params).__name__, cfg.judge.params.concurrency, cfg.backend)\n"
            "print(sorted(m for m in ('openai', 'vllm') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["LLMJudgeConfig 64 vllm", "[]"]


def test_the_shape_users_write_today_builds_the_same_judges():
    from masters.stages.judging import build_judge
    from rewards.judges import make_judge

    numeric = RunConfig.parse({"run_id": "a", "judge": {"kind": "numeric", "params": {"tolerance": 0.1}}})
    assert numeric.judge.params.tolerance == 0.1
    assert build_judge(numeric.judge).judge_id == make_judge("numeric", tolerance=0.1).judge_id
    default = RunConfig.parse({"run_id": "a"})
    assert default.judge.kind == "rule" and default.judge.params.model_dump() == {}
    assert build_judge(default.judge).judge_id == make_judge("rule").judge_id
    again = RunConfig.parse(numeric.model_dump(mode="json"))  # a dumped config reads back (sweeps do this)
    assert again == numeric


def test_a_registered_judge_is_one_registration_away_from_a_run_config():
    """A new judge: its params class and factory, one register call; run configs validate it then."""
    from pydantic import Field

    from masters.stages.judging import build_judge
    from rewards.judges import JUDGES, RuleJudge
    from schemas.config import StrictModel

    class PrefixParams(StrictModel):
        prefix: str = Field(description="the answer must start with this")

    JUDGES.register("prefix", PrefixParams, lambda p: RuleJudge(
        "prefix", lambda i: i.response.strip() or None, lambda x, i: x.startswith(p.prefix), p.model_dump()))
    try:
        cfg = RunConfig.parse({"run_id": "a", "judge": {"kind": "prefix", "params": {"prefix": "re"}}})
        assert build_judge(cfg.judge).kind == "prefix"
        with pytest.raises(ConfigError, match="judge.params.prefix: Field required"):
            RunConfig.parse({"run_id": "a", "judge": {"kind": "prefix"}})
    finally:
        del JUDGES["prefix"]
    with pytest.raises(ConfigError, match="judge.kind: unknown judge 'prefix'"):
        RunConfig.parse({"run_id": "a", "judge": {"kind": "prefix", "params": {"prefix": "re"}}})
