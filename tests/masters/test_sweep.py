"""`masters ablate --sweep`: points are runs under their own run ids; reward-weight and judge
sweeps replay the reference run's Gen-Data (no response or token_stats row added), generation
sweeps produce their own."""

import json
from pathlib import Path

import pytest

from masters.run_config import RunConfig
from masters.sweep import parse_sweep, replays, with_value
from schemas.errors import ConfigError


def _base(tiny_pair, **kw):
    student, teacher = tiny_pair("qwen2_vl")
    return RunConfig.parse({"run_id": "sw", "iterations": 2, "questions": {"train": 4, "test": 6},
                            "student": str(student), "teachers": [{"model": str(teacher)}],
                            "teacher_responses": 2, "student_responses": 2, "sampling": {"max_new_tokens": 6},
                            "train": {"batch_size": 4, "learning_rate": 1e-3}, **kw})


def test_sweep_specs_parse_and_apply(tiny_pair):
    assert parse_sweep("reward.w_distill=0,0.5,1,2") == ("reward.w_distill", [0, 0.5, 1, 2])
    assert parse_sweep("responses=2+2,4+4")[1] == ["2+2", "4+4"]
    for bad in ("reward.w_distill", "reward.w_distill=1", "=1,2"):
        with pytest.raises(ConfigError):
            parse_sweep(bad)
    base = _base(tiny_pair)
    assert with_value(base, "responses", "8+8").teacher_responses == 8
    assert with_value(base, "mask.r_max", 0.4).schedule.ratio(0) == pytest.approx(0.4)
    assert with_value(base, "reward.divergence", "kl_reverse").reward.divergence == "kl_reverse"
    assert with_value(base, "judge", "exact").judge.kind == "exact"
    with pytest.raises(ConfigError, match="w_distil"):
        with_value(base, "reward.w_distil", 1)  # a typo is refused like in a config file
    with pytest.raises(ConfigError):
        with_value(base, "responses", "4")
    assert replays("reward.w_distill") and replays("judge") and replays("reward.divergence")
    assert not replays("responses") and not replays("mask.r_max")


def _counts(cat):
    return {t: cat.count(t) for t in ("responses", "token_stats", "verdicts", "rewards")}


@pytest.mark.slow
def test_weight_and_judge_sweeps_add_no_gendata(tiny_pair, catalog_dir):
    from catalog import Catalog
    from masters.ablate import arm_config
    from masters.loop import run
    from masters.sweep import sweep

    base = _base(tiny_pair)
    with Catalog.open(catalog_dir) as cat:
        run(arm_config(base, "masters", 0, 2), cat, progress=False)  # the reference run: all the Gen-Data
        before = _counts(cat)
        out = sweep(cat, base, "reward.w_distill", [0, 2], [0], steps=2, progress=False)
        after_weights = _counts(cat)
        out_judge = sweep(cat, base, "judge", ["rule", "exact"], [0], steps=2, progress=False)
        after_judge = _counts(cat)
        point_runs = cat.sql("SELECT DISTINCT run_id FROM evaluations WHERE run_id LIKE 'sw-sweep-%'")
        runs = set(point_runs.column(0).to_pylist())
    for key in ("responses", "token_stats"):
        assert after_weights[key] == before[key] and after_judge[key] == before[key]
    # two new reward configs, each rewarding what the reference's rewarded (complete groups, final verdicts)
    assert after_weights["rewards"] == 3 * before["rewards"]
    assert after_weights["verdicts"] == before["verdicts"]  # the same judge: nothing judged again
    assert after_judge["verdicts"] == before["verdicts"] + before["responses"]  # the exact judge, once
    assert out["replays_gendata"] and [p["value"] for p in out["points"]] == ["0", "2"]
    assert {r for p in out["points"] + out_judge["points"] for r in p["run_ids"]} <= runs  # each point its own run
    assert Path(out["path"]).is_file() and json.loads(Path(out["path"]).read_text())["key"] == "reward.w_distill"
    # the points trained different students on the same Gen-Data
    w0, w2 = (catalog_dir / "runs" / p["run_ids"][0] / "students" / "iter2" for p in out["points"])
    assert (w0 / "model.safetensors").read_bytes() != (w2 / "model.safetensors").read_bytes()


@pytest.mark.slow
def test_generation_sweep_points_generate_their_own(tiny_pair, catalog_dir):
    from catalog import Catalog
    from masters.sweep import sweep

    base = _base(tiny_pair, iterations=1)
    with Catalog.open(catalog_dir) as cat:
        out = sweep(cat, base, "responses", ["1+1", "2+2"], [0], steps=1, progress=False)
        per_run = {r["run_id"]: r["n"] for r in cat.sql(
            "SELECT it.run_id, count(*) AS n FROM responses r JOIN iterations it USING (iteration_id) "
            "GROUP BY 1").to_pylist()}
    (small,), (large,) = (p["run_ids"] for p in out["points"])
    assert per_run[small] == 4 * 2 and per_run[large] == 4 * 4  # 4 train questions x responses per question
    assert not out["replays_gendata"]
