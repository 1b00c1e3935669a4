"""The tiny checkpoint ladder: cached by code + config + questions, one shared tokenizer, built in
a child process with pinned numerics (reproducible), a ceiling, chance flags, any question set;
held-out accuracy ordered L > M > S > student."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from masters.fixtures import (HASHED_MODULES, LADDER_ORDER, MEMBERS, CeilingConfig, LadderConfig, MemberConfig,
                              ensure_ladder, ladder_hash, load_report)
from schemas.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(hidden=32, layers=1, vision_hidden=16, vision_layers=1, steps=2)


def quick_config(**kw):
    return LadderConfig(train_questions=24, validation_questions=6, eval_questions=12, batch_size=4,
                        members={m: MemberConfig(**TINY) for m in LADDER_ORDER}, ceiling=CeilingConfig(steps=3), **kw)


def test_hash_follows_config_questions_and_code(tmp_path):
    base = ladder_hash(quick_config())
    assert ladder_hash(quick_config()) == base
    assert ladder_hash(quick_config(seed=1)) != base
    assert ladder_hash(quick_config(), "other-questions") != base
    for rel in HASHED_MODULES:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    assert ladder_hash(quick_config(), root=tmp_path) == base
    (tmp_path / "trainer/sft.py").write_text((tmp_path / "trainer/sft.py").read_text() + "\n# changed\n")
    assert ladder_hash(quick_config(), root=tmp_path) != base


def test_overrides_are_typed():
    cfg = quick_config().with_overrides({"members.L.steps": 7, "ceiling.steps": 9})
    assert cfg.members["L"].steps == 7 and cfg.ceiling.steps == 9
    with pytest.raises(ConfigError, match="stepz"):
        quick_config().with_overrides({"members.L.stepz": 7})
    with pytest.raises(ConfigError, match="members.L.steps"):
        quick_config().with_overrides({"members.L.steps": -1})
    with pytest.raises(ConfigError, match="missing M"):
        quick_config().with_overrides({"members": {m: TINY for m in ("student", "S", "L")}})


def test_build_is_cached_and_shares_one_tokenizer(tmp_path, monkeypatch):
    monkeypatch.setenv("MASTERS_CACHE", str(tmp_path / "cache"))
    folder = ensure_ladder(quick_config(), progress=False)
    report = load_report(folder)
    assert set(report["models"]) == set(MEMBERS)
    tokenizers = {(folder / "models" / m / "tokenizer.json").read_bytes() for m in MEMBERS}
    assert len(tokenizers) == 1  # one tokenizer, byte for byte
    for m in MEMBERS:
        entry = report["models"][m]
        assert Path(entry["path"]) == folder / "models" / m
        assert (folder / "models" / m / "meta.json").exists()
        assert entry["validation_n"] == 6 and entry["test_n"] == 12 and "at_chance" in entry
    assert report["models"]["ceiling"]["size"] == report["models"]["student"]["size"]  # the student's architecture
    assert report["models"]["ceiling"]["steps"] == 3
    # three disjoint splits; validation is carved from train (the train split's generator)
    import pyarrow.parquet as pq

    ids = {s: set(pq.read_table(folder / "data" / "questions" / f"{s}-questions.parquet").column("question_id")
                  .to_pylist()) for s in ("train", "validation", "test")}
    assert len(ids["validation"]) == 6 and not ids["validation"] & (ids["train"] | ids["test"])
    stamp = (folder / "report.json").stat().st_mtime_ns
    assert ensure_ladder(quick_config(), progress=False) == folder  # reused...
    assert (folder / "report.json").stat().st_mtime_ns == stamp     # ...not rebuilt
    assert ensure_ladder(quick_config(), force=True, progress=False) == folder
    assert (folder / "report.json").stat().st_mtime_ns != stamp     # --force rebuilds
    assert not [p for p in folder.parent.iterdir() if ".build-" in p.name]


@pytest.mark.slow
def test_builds_are_identical_whatever_the_parent_environment(tmp_path):
    """Two builds, from parents with other thread counts and vector units, give the same
    weights: the child pins them (here the CPU has AVX-512 and the child reports AVX2)."""
    code = ("import sys; from tests.masters.test_fixtures import quick_config; from masters.fixtures import "
            "ensure_ladder; print(ensure_ladder(quick_config(), force=True, progress=False))")
    weights = []
    for i, env in enumerate(({"OMP_NUM_THREADS": "1"}, {"ATEN_CPU_CAPABILITY": "default", "MKL_NUM_THREADS": "1"})):
        full = {**os.environ, "PYTHONPATH": str(ROOT), "MASTERS_CACHE": str(tmp_path / f"cache{i}"), **env}
        proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=full, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        folder = Path(proc.stdout.strip().splitlines()[-1])
        report = load_report(folder)
        assert report["numerics"]["threads"] == 2 and report["numerics"]["cpu_capability"] == "AVX2"
        weights.append({m: (folder / "models" / m / "model.safetensors").read_bytes() for m in MEMBERS})
        weights[-1]["accuracy"] = [report["models"][m]["test_accuracy"] for m in MEMBERS]
    assert weights[0] == weights[1]


def _stripes_dataset(folder: Path, n_train: int = 36, n_test: int = 18) -> Path:
    """Another visual task than the built-in one: horizontal stripes on a coloured background;
    two question types (count the stripes, name the background)."""
    import io
    import random

    import datasets
    from PIL import Image, ImageDraw

    colours = {"red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 70, 230)}

    def rows(n, seed):
        rng, out = random.Random(seed), {"image": [], "prompt": [], "target": [], "kind": []}
        for i in range(n):
            bg = rng.choice(list(colours))
            stripes = rng.randint(1, 4)
            img = Image.new("RGB", (56, 56), colours[bg])
            d = ImageDraw.Draw(img)
            for k in range(stripes):
                d.rectangle([0, 4 + 12 * k, 55, 9 + 12 * k], fill=(255, 255, 255))
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            kind = ("stripes", "background")[i % 2]
            out["image"].append({"bytes": buf.getvalue(), "path": None})
            out["prompt"].append("How many white stripes are there?" if kind == "stripes"
                                 else "What colour is the background?")
            out["target"].append(stripes if kind == "stripes" else bg)  # an int column, and a text column
            out["kind"].append(kind)
        return datasets.Dataset.from_dict(out, features=datasets.Features({
            "image": datasets.Image(), "prompt": datasets.Value("string"),
            "target": datasets.Value("string"), "kind": datasets.Value("string")}))

    ds = datasets.DatasetDict({"train": rows(n_train, 0), "test": rows(n_test, 1)})
    ds.save_to_disk(str(folder))
    return folder


def test_ladder_on_an_hf_dataset_of_another_task(tmp_path, masters_cli):
    data = _stripes_dataset(tmp_path / "stripes")
    members = {m: TINY for m in LADDER_ORDER}
    env_cache = {"MASTERS_CACHE": str(tmp_path / "cache")}
    proc = masters_cli("fixtures", "--questions", f"hf:{data}", "--question", "prompt", "--answer", "target",
                       "--qtype", "kind", "--source-name", "stripes", "--name", "stripes", "--set", f"members={json.dumps(members)}",
                       "--set", "ceiling.steps=2", "--set", "validation_questions=6", "--set", "batch_size=4",
                       env=env_cache)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "ladder:stripes/<member>" in proc.stdout and "chance level" in proc.stdout
    assert "AT CHANCE" in proc.stdout  # two SFT steps learn nothing, and the report says so
    folder = Path(proc.stdout.split("ladder at ")[1].split(" (built")[0])
    report = load_report(folder)
    assert set(report["chance"]["per_type"]) == {"stripes", "background"}
    assert report["questions"] == {"train": 30, "validation": 6, "test": 18}
    assert all(report["models"][m]["at_chance"]["overall"] for m in MEMBERS)
    # the tokenizer was trained on this task's texts
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder / "models" / "student")
    assert len(tok.tokenize(" stripes")) == 1
    # a run config names its members ladder:stripes/<member>
    import masters.fixtures as fx
    from masters.plan import resolve_model

    old = os.environ.get("MASTERS_CACHE")
    os.environ["MASTERS_CACHE"] = env_cache["MASTERS_CACHE"]
    try:
        assert resolve_model("ladder:stripes/L") == folder / "models" / "L"
        with pytest.raises(ConfigError, match="no ladder named 'other'"):
            resolve_model("ladder:other/L")
        with pytest.raises(ConfigError, match="a ladder has"):
            resolve_model("ladder:stripes/XL")
        assert fx.named_ladder("stripes") == folder
    finally:
        if old is None:
            os.environ.pop("MASTERS_CACHE")
        else:
            os.environ["MASTERS_CACHE"] = old
    # the same questions (same source name) from another folder are the same ladder: cached by
    # content, not by path
    shutil.copytree(data, tmp_path / "copy")
    again = masters_cli("fixtures", "--questions", f"hf:{tmp_path / 'copy'}", "--question", "prompt", "--answer",
                        "target", "--qtype", "kind", "--source-name", "stripes", "--set", f"members={json.dumps(members)}", "--set",
                        "ceiling.steps=2", "--set", "validation_questions=6", "--set", "batch_size=4", env=env_cache)
    assert again.returncode == 0 and f"ladder at {folder} " in again.stdout


@pytest.mark.slow
def test_ladder_accuracy_is_ordered_on_held_out_rows():
    """Builds the default ladder (minutes on 2 cores, once; cached after) and measures each
    model on held-out questions it never saw, with the evaluation helper."""
    from gendata.synthetic_vqa import synthetic_vqa
    from masters.evaluate import evaluate

    folder = ensure_ladder(LadderConfig(), progress=False)
    held_out = synthetic_vqa(300, "test", seed=12345)
    acc = {m: evaluate(folder / "models" / m, held_out).accuracy for m in MEMBERS}
    print("held-out accuracy:", acc)
    assert acc["L"] > acc["M"] + 0.04
    assert acc["M"] > acc["S"] + 0.04
    assert acc["S"] > acc["student"] + 0.04
    assert acc["ceiling"] > acc["student"] + 0.1  # headroom for distillation
    student = evaluate(folder / "models" / "student", held_out)
    assert all(e["response"].strip() for e in student.examples)  # well-formed, if weak
