"""Every shipped config under configs/ is valid for what reads it."""

import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def test_every_shipped_config_is_checked():
    checked = {*CONFIGS.glob("trainer/*.yaml"), *CONFIGS.glob("deepspeed/*.json"), *CONFIGS.glob("accelerate/*.yaml"),
               *CONFIGS.glob("run/*.yaml")}
    assert checked == {p for p in CONFIGS.rglob("*") if p.is_file()}


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("trainer/*.yaml")), ids=lambda p: p.name)
def test_trainer_configs_parse(path):
    from trainer.__main__ import load_config

    cfg = load_config(path.stem, str(path), [])
    assert cfg.model and cfg.snapshot and cfg.output_dir


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("deepspeed/*.json")), ids=lambda p: p.name)
def test_deepspeed_configs_are_zero3_and_save_full_weights(path):
    from deepspeed.runtime.zero.config import DeepSpeedZeroConfig

    doc = json.loads(path.read_text())
    zero = DeepSpeedZeroConfig(**doc["zero_optimization"])  # DeepSpeed's own validation
    assert zero.stage == 3 and zero.gather_16bit_weights_on_model_save


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("accelerate/*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_point_at_a_shipped_deepspeed_file(path):
    doc = yaml.safe_load(path.read_text())
    assert doc["distributed_type"] == "DEEPSPEED"
    ds = doc["deepspeed_config"]
    assert (ROOT / ds["deepspeed_config_file"]).is_file()
    # with deepspeed_config_file, accelerate refuses these beside it (measured on accelerate 1.x)
    assert "mixed_precision" not in doc and "zero3_init_flag" not in ds


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("run/*.yaml")), ids=lambda p: p.name)
def test_run_configs_validate(path):
    from masters.run_config import load_run_config

    cfg = load_run_config(path)
    assert cfg.schedule.ratios()[0] == cfg.schedule.r_max and cfg.schedule.ratios()[-1] == 0.0
    for shipped in (cfg.train.deepspeed, cfg.train.accelerate_config):
        if shipped:
            assert (ROOT / shipped).is_file()


def test_the_shipped_demo_config_is_what_masters_demo_runs():
    from masters.demo import demo_config
    from masters.run_config import load_run_config

    assert load_run_config(CONFIGS / "run" / "demo.yaml") == demo_config()
