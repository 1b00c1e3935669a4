"""The tiny checkpoint ladder of the embedded default: a student and teachers S < M < L of one
real VLM architecture, sharing one locally trained tokenizer, warmed up by SFT on the synthetic
train split so that held-out accuracy is L > M > S > student.

Built once and cached under ``~/.cache/masters-distill/fixtures/<family>-<hash>/`` where the hash
covers the ladder config and the source of every module that shapes the result (plus the
torch/transformers/trl versions); a change to either builds a new ladder. Builds are locked
(one builder at a time) and atomic (a folder appears only complete).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import asdict
from pathlib import Path

from pydantic import Field
from tqdm.auto import tqdm

from schemas.config import StrictModel

LADDER_ORDER = ("student", "S", "M", "L")


class MemberConfig(StrictModel):
    """One model of the ladder: its dimensions and its warm-up."""

    hidden: int = Field(description="language-model hidden size")
    layers: int = Field(description="language-model layers")
    heads: int = Field(4, description="attention heads")
    kv_heads: int = Field(2, description="key/value heads")
    vision_hidden: int = Field(description="vision-tower width")
    vision_layers: int = Field(description="vision-tower depth")
    vision_heads: int = Field(2, description="vision attention heads")
    steps: int = Field(description="SFT warm-up steps")
    learning_rate: float = Field(1e-3, description="SFT learning rate")


class LadderConfig(StrictModel):
    """The whole ladder. Defaults: the embedded default (Qwen2-VL, 112 px images)."""

    family: str = Field("qwen2_vl", description="VLM family (gendata.tiny_vlm.FAMILIES)")
    image_size: int = Field(112, description="image side in pixels (a multiple of 28)")
    vocab_size: int = Field(512, description="BPE vocabulary size of the shared tokenizer")
    train_questions: int = Field(3000, description="synthetic train questions for the warm-up")
    eval_questions: int = Field(300, description="held-out test questions for the report")
    batch_size: int = Field(16, description="SFT batch size")
    seed: int = Field(0, description="data and init seed")
    members: dict[str, MemberConfig] = Field(default_factory=lambda: {
        "student": MemberConfig(hidden=48, layers=2, vision_hidden=32, vision_layers=1, steps=150,
                                learning_rate=3e-3),
        "S": MemberConfig(hidden=64, layers=2, vision_hidden=32, vision_layers=2, steps=300,
                          learning_rate=2e-3),
        "M": MemberConfig(hidden=96, layers=3, vision_hidden=48, vision_layers=2, steps=500,
                          learning_rate=1e-3),
        "L": MemberConfig(hidden=128, layers=4, vision_hidden=64, vision_layers=3, steps=1500,
                          learning_rate=1e-3),
    }, description="student, S, M, L")


HASHED_MODULES = ("gendata/tiny_vlm.py", "gendata/processor_shims.py", "gendata/synthetic_vqa.py",
                  "gendata/questions.py", "trainer/sft.py", "trainer/data.py", "trainer/checkpoints.py",
                  "schemas/snapshot.py", "schemas/snapshot_folder.py", "masters/sft_data.py",
                  "masters/fixtures.py")


def ladder_hash(config: LadderConfig, root: Path | None = None) -> str:
    import torch
    import transformers
    import trl

    root = root or Path(__file__).resolve().parents[1]
    h = hashlib.sha256(config.model_dump_json().encode())
    for rel in HASHED_MODULES:
        h.update(rel.encode() + b"\0" + (root / rel).read_bytes())
    h.update(f"{torch.__version__}|{transformers.__version__}|{trl.__version__}".encode())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    base = os.environ.get("MASTERS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "masters-distill")
    return Path(base) / "fixtures"


def ladder_dir(config: LadderConfig) -> Path:
    return cache_root() / f"{config.family}-{ladder_hash(config)}"


def load_report(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())


def ensure_ladder(config: LadderConfig | None = None, force: bool = False, progress: bool = True) -> Path:
    """The ladder folder for ``config``: reused when cached, built otherwise (or when ``force``)."""
    config = config or LadderConfig()
    final = ladder_dir(config)
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder; others wait, then reuse its result
        if final.exists() and (final / "report.json").exists() and not force:
            return final
        tmp = final.parent / f".{final.name}.build-{uuid.uuid4().hex[:8]}"
        try:
            build_ladder(config, tmp, progress)
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def build_ladder(config: LadderConfig, out: Path, progress: bool = True) -> dict:
    from gendata.hf_generate import load_vlm
    from gendata.synthetic_vqa import synthetic_vqa
    from gendata.tiny_vlm import TinySize, build_tiny_vlm, family, param_count, train_tokenizer
    from masters.evaluate import evaluate
    from masters.sft_data import write_sft_folder
    from trainer.config import SFTRunConfig
    from trainer.sft import train_sft

    import datasets
    import transformers

    started = time.perf_counter()
    # one bar for the build instead of transformers'/datasets' per-file bars
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    fam = family(config.family)
    missing = [m for m in LADDER_ORDER if m not in config.members]
    if missing:
        raise ValueError(f"ladder config lacks member {missing[0]!r}; it needs {', '.join(LADDER_ORDER)}")
    train = synthetic_vqa(config.train_questions, "train", config.seed, config.image_size)
    test = synthetic_vqa(config.eval_questions, "test", config.seed, config.image_size)
    texts = [q["question"] + " " + q["answer"] for q in train.questions.to_pylist()]
    tokenizer = train_tokenizer(texts, fam.special_tokens, config.vocab_size, fam.image_placeholder)
    sft_dir = write_sft_folder(train, out / "data" / "sft-train", "sft-train")
    report = {"family": config.family, "config": config.model_dump(), "models": {}}
    steps = sum(config.members[m].steps for m in LADDER_ORDER)
    bar = tqdm(total=steps, desc="building the tiny ladder", unit="step", disable=not progress)
    for i, name in enumerate(LADDER_ORDER):
        m = config.members[name]
        t0 = time.perf_counter()
        size = TinySize(m.hidden, m.layers, m.heads, m.kv_heads, m.vision_hidden, m.vision_layers, m.vision_heads)
        init = build_tiny_vlm(config.family, size, tokenizer, out / "init" / name, config.image_size,
                              seed=config.seed + i)
        metrics = train_sft(SFTRunConfig(
            model=str(init), snapshot=str(sft_dir), output_dir=str(out / "models" / name),
            max_steps=m.steps, batch_size=config.batch_size, learning_rate=m.learning_rate,
            seed=config.seed, logging_steps=max(1, m.steps // 5), progress=False))
        shutil.rmtree(out / "models" / name / "trainer_state", ignore_errors=True)
        bar.update(m.steps)
        train_s = time.perf_counter() - t0
        model_and_processor = load_vlm(out / "models" / name)
        result = evaluate(out / "models" / name, test, model_and_processor=model_and_processor)
        model = model_and_processor[0]
        report["models"][name] = {"path": str(final_path(out, name)), "params": param_count(model),
                                  "size": asdict(size), "steps": m.steps, "train_seconds": round(train_s, 1),
                                  "train_metrics": metrics, "test_accuracy": result.accuracy,
                                  "test_accuracy_per_type": result.per_type, "test_n": result.n}
    bar.close()
    shutil.rmtree(out / "init", ignore_errors=True)
    report["build_seconds"] = round(time.perf_counter() - started, 1)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def final_path(building: Path, name: str) -> Path:
    """Where a member lives once the build folder is renamed into place."""
    final = building.parent / building.name.split(".build-")[0].lstrip(".")
    return final / "models" / name
