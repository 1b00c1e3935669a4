"""The tiny checkpoint ladder: cached by code + config, one shared tokenizer, and held-out
accuracy ordered L > M > S > student."""

import shutil
from pathlib import Path

import pytest

from masters.fixtures import (HASHED_MODULES, LADDER_ORDER, LadderConfig, MemberConfig, ensure_ladder,
                              ladder_hash, load_report)

ROOT = Path(__file__).resolve().parents[2]


def quick_config(**kw):
    tiny = dict(hidden=32, layers=1, vision_hidden=16, vision_layers=1, steps=2)
    return LadderConfig(train_questions=24, eval_questions=12, batch_size=4,
                        members={m: MemberConfig(**tiny) for m in LADDER_ORDER}, **kw)


def test_hash_follows_config_and_code(tmp_path):
    base = ladder_hash(quick_config())
    assert ladder_hash(quick_config()) == base
    assert ladder_hash(quick_config(seed=1)) != base
    for rel in HASHED_MODULES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    assert ladder_hash(quick_config(), root=tmp_path) == base
    (tmp_path / "trainer/sft.py").write_text((tmp_path / "trainer/sft.py").read_text() + "\n# changed\n")
    assert ladder_hash(quick_config(), root=tmp_path) != base


def test_build_is_cached_and_shares_one_tokenizer(tmp_path, monkeypatch):
    monkeypatch.setenv("MASTERS_CACHE", str(tmp_path / "cache"))
    folder = ensure_ladder(quick_config(), progress=False)
    report = load_report(folder)
    assert set(report["models"]) == set(LADDER_ORDER)
    tokenizers = {(folder / "models" / m / "tokenizer.json").read_bytes() for m in LADDER_ORDER}
    assert len(tokenizers) == 1  # one tokenizer, byte for byte
    for m in LADDER_ORDER:
        assert Path(report["models"][m]["path"]) == folder / "models" / m
        assert (folder / "models" / m / "meta.json").exists()
    stamp = (folder / "report.json").stat().st_mtime_ns
    assert ensure_ladder(quick_config(), progress=False) == folder  # reused...
    assert (folder / "report.json").stat().st_mtime_ns == stamp     # ...not rebuilt
    assert ensure_ladder(quick_config(), force=True, progress=False) == folder
    assert (folder / "report.json").stat().st_mtime_ns != stamp     # --force rebuilds
    assert not [p for p in folder.parent.iterdir() if ".build-" in p.name]


@pytest.mark.slow
def test_ladder_accuracy_is_ordered_on_held_out_rows():
    """Builds the default ladder (minutes on 2 cores, once; cached after) and measures each
    model on held-out questions it never saw, with the evaluation helper."""
    from gendata.synthetic_vqa import synthetic_vqa
    from masters.evaluate import evaluate

    folder = ensure_ladder(LadderConfig(), progress=False)
    held_out = synthetic_vqa(300, "test", seed=12345)
    acc = {m: evaluate(folder / "models" / m, held_out).accuracy for m in LADDER_ORDER}
    print("held-out accuracy:", acc)
    assert acc["L"] > acc["M"] + 0.04
    assert acc["M"] > acc["S"] + 0.04
    assert acc["S"] > acc["student"] + 0.04
    student = evaluate(folder / "models" / "student", held_out)
    assert all(e["response"].strip() for e in student.examples)  # well-formed, if weak
