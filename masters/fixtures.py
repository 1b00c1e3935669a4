"""The tiny checkpoint ladder: a student and teachers S < M < L of one real VLM architecture,
sharing one locally trained tokenizer, warmed up by SFT on a task's train split so that held-out
accuracy is L > M > S > student; plus the *ceiling*, the student's architecture trained on ground
truth with a large budget (how far distillation could take the student at best).

The task is the built-in synthetic visual QA by default, or any question set
(``masters.ladder_questions``: an HF dataset by column mapping, or a catalog's questions).
Built once and cached under ``~/.cache/masters-distill/fixtures/<family>-<hash>/``, where the hash
covers the ladder config, the questions' content, the source of every module that shapes the
result and the torch/transformers/trl versions. Builds are locked (one builder at a time) and
atomic (a folder appears only complete). A ladder may be given a name (``ladder:<name>/<member>``
in a run config).

Reproducible: the build runs in a child process (``masters.ladder_build``) whose numerics are
pinned (``pinned_env``: CPU only, a fixed thread count, ATen, MKL and oneDNN held to their AVX2
code paths), so builds on x86-64 machines with AVX2 and the same package versions give the same
weights whatever their core count or newer vector units.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

from pydantic import Field, model_validator

from masters.ladder_questions import LadderData, LadderQuestions, load_ladder_data
from schemas.config import CatalogConfig, StrictModel, set_dotted
from schemas.errors import ConfigError, MastersError

LADDER_ORDER = ("student", "S", "M", "L")
CEILING = "ceiling"
MEMBERS = LADDER_ORDER + (CEILING,)
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class MemberConfig(StrictModel):
    """One model of the ladder: its dimensions and its warm-up."""

    hidden: int = Field(gt=0, description="language-model hidden size")
    layers: int = Field(gt=0, description="language-model layers")
    heads: int = Field(4, gt=0, description="attention heads")
    kv_heads: int = Field(2, gt=0, description="key/value heads")
    vision_hidden: int = Field(gt=0, description="vision-tower width")
    vision_layers: int = Field(gt=0, description="vision-tower depth")
    vision_heads: int = Field(2, gt=0, description="vision attention heads")
    steps: int = Field(gt=0, description="SFT warm-up steps")
    learning_rate: float = Field(1e-3, gt=0, description="SFT learning rate")


class CeilingConfig(StrictModel):
    """The student's architecture (and initial weights) trained on ground truth with a large budget."""

    steps: int = Field(1500, gt=0, description="SFT steps")
    learning_rate: float = Field(2e-3, gt=0, description="SFT learning rate")


def _default_members() -> dict[str, MemberConfig]:
    # sized on the validation split so that the student starts low with a ceiling well above it
    # (the vision tower's width is what the student's ceiling depends on most) and L is above both
    return {
        "student": MemberConfig(hidden=64, layers=2, vision_hidden=48, vision_layers=2, steps=150,
                                learning_rate=2e-3),
        "S": MemberConfig(hidden=64, layers=2, vision_hidden=48, vision_layers=2, steps=400, learning_rate=2e-3),
        "M": MemberConfig(hidden=80, layers=2, vision_hidden=64, vision_layers=2, steps=800, learning_rate=2e-3),
        "L": MemberConfig(hidden=96, layers=3, vision_hidden=64, vision_layers=2, steps=2500, learning_rate=2e-3),
    }


class LadderConfig(StrictModel):
    """The whole ladder. Defaults: the embedded default (Qwen2-VL, 112 px images, synthetic QA)."""

    family: str = Field("qwen2_vl", description="VLM family (gendata.tiny_vlm.FAMILIES)")
    questions: LadderQuestions = Field(default_factory=LadderQuestions, description="the task")
    image_size: int = Field(112, gt=0, description="image side in pixels (a multiple of 28)")
    vocab_size: int = Field(512, gt=0, description="BPE vocabulary size of the shared tokenizer")
    train_questions: int = Field(6000, gt=0, description="train questions for the warm-up (at most, for a source)")
    validation_questions: int = Field(600, ge=0, description="validation questions carved from train (tuning)")
    eval_questions: int = Field(600, gt=0, description="held-out test questions of the report (at most)")
    batch_size: int = Field(16, gt=0, description="SFT batch size")
    seed: int = Field(0, description="data and init seed")
    threads: int = Field(2, gt=0, description="torch threads of the build (pinned: part of the result)")
    members: dict[str, MemberConfig] = Field(default_factory=_default_members, description="student, S, M, L")
    ceiling: CeilingConfig = Field(default_factory=CeilingConfig, description="the student's upper bound")

    @model_validator(mode="after")
    def _members(self):
        missing = [m for m in LADDER_ORDER if m not in self.members]
        unknown = [m for m in self.members if m not in LADDER_ORDER]
        if missing or unknown:
            raise ValueError(f"members must be exactly {', '.join(LADDER_ORDER)}"
                             + (f"; missing {', '.join(missing)}" if missing else "")
                             + (f"; unknown {', '.join(unknown)}" if unknown else ""))
        return self

    def with_overrides(self, assignments: dict) -> "LadderConfig":
        """This config with dotted-key overrides (``members.L.steps``: 3000), validated."""
        doc = self.model_dump()
        for key, value in assignments.items():
            set_dotted(doc, key, value, "ladder overrides")
        return LadderConfig.parse(doc, where="ladder overrides")


HASHED_MODULES = ("gendata/tiny_vlm.py", "gendata/processor_shims.py", "gendata/synthetic_vqa.py",
                  "gendata/questions.py", "trainer/sft.py", "trainer/data.py", "trainer/checkpoints.py",
                  "schemas/snapshot.py", "schemas/snapshot_folder.py", "masters/sft_data.py",
                  "masters/fixtures.py", "masters/ladder_build.py", "masters/ladder_questions.py",
                  "masters/evaluate.py", "rewards/matching.py")


def pinned_env(threads: int) -> dict[str, str]:
    """The environment of the build's child process: what fixes its floating-point results."""
    n = str(threads)
    return {"CUDA_VISIBLE_DEVICES": "", "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2",
            "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "PYTHONHASHSEED": "0",
            "TOKENIZERS_PARALLELISM": "false", "DS_ACCELERATOR": "cpu"}


def ladder_hash(config: LadderConfig, content_id: str = "", root: Path | None = None) -> str:
    import torch
    import transformers
    import trl

    root = root or Path(__file__).resolve().parents[1]
    # the questions count by content, not by where they were read from
    h = hashlib.sha256(config.model_dump_json(exclude={"questions": {"path"}}).encode())
    h.update(content_id.encode())
    for rel in HASHED_MODULES:
        h.update(rel.encode() + b"\0" + (root / rel).read_bytes())
    h.update(f"{torch.__version__}|{transformers.__version__}|{trl.__version__}".encode())
    return h.hexdigest()[:16]


def cache_root() -> Path:
    base = os.environ.get("MASTERS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "masters-distill")
    return Path(base) / "fixtures"


def load_data(config: LadderConfig, catalog: CatalogConfig | None = None) -> LadderData:
    return load_ladder_data(config.questions, train=config.train_questions, validation=config.validation_questions,
                            test=config.eval_questions, seed=config.seed, image_size=config.image_size,
                            catalog=catalog)


def ladder_dir(config: LadderConfig, data: LadderData | None = None) -> Path:
    content = "" if config.questions.source == "synthetic" else (data or load_data(config)).content_id()
    return cache_root() / f"{config.family}-{ladder_hash(config, content)}"


def load_report(folder: Path) -> dict:
    return json.loads((folder / "report.json").read_text())


def ensure_ladder(config: LadderConfig | None = None, force: bool = False, progress: bool = True,
                  name: str | None = None, catalog: CatalogConfig | None = None) -> Path:
    """The ladder folder for ``config``: reused when cached, built otherwise (or when ``force``);
    ``name`` records it for ``ladder:<name>/<member>``."""
    config = config or LadderConfig()
    if name is not None and not re.match(NAME_PATTERN, name):
        raise ConfigError(f"ladder name {name!r}: use letters, digits, '_', '.', '-'")
    data = None if config.questions.source == "synthetic" else load_data(config, catalog)
    final = ladder_dir(config, data)
    final.parent.mkdir(parents=True, exist_ok=True)
    with open(final.parent / f".{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder; others wait, then reuse its result
        if not (final.exists() and (final / "report.json").exists() and not force):
            tmp = final.parent / f".{final.name}.build-{uuid.uuid4().hex[:8]}"
            try:
                _build_in_child(config, data or load_data(config, catalog), tmp, progress)
                if final.exists():
                    shutil.rmtree(final)
                os.rename(tmp, final)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    if name is not None:
        named = cache_root() / "named"
        named.mkdir(parents=True, exist_ok=True)
        record = named / f"{name}.json"
        tmp_record = named / f".{name}.json.tmp"
        tmp_record.write_text(json.dumps({"folder": str(final), "config": config.model_dump(mode="json")}, indent=2))
        os.replace(tmp_record, record)
    return final


def _build_in_child(config: LadderConfig, data: LadderData, out: Path, progress: bool) -> None:
    out.mkdir(parents=True)
    data.write(out / "data" / "questions")
    (out / "ladder-config.json").write_text(config.model_dump_json(indent=2))
    from trainer.data import quiet_env

    env = {**os.environ, **pinned_env(config.threads), **quiet_env()}
    proc = subprocess.run([sys.executable, "-m", "masters.ladder_build", str(out)] + ([] if progress else ["--quiet"]),
                          env=env, cwd=Path(__file__).resolve().parents[1])
    error = out / "error.txt"
    if error.exists():
        raise MastersError(error.read_text().strip())
    if proc.returncode != 0:
        raise MastersError(f"building the ladder failed (exit {proc.returncode}); see the output above")


def named_ladder(name: str) -> Path:
    """The folder of the ladder built with ``--name name``."""
    record = cache_root() / "named" / f"{name}.json"
    if not record.is_file():
        known = sorted(p.stem for p in record.parent.glob("*.json")) if record.parent.is_dir() else []
        raise ConfigError(f"no ladder named {name!r}" + (f" (named ladders: {', '.join(known)})" if known else "")
                          + f": build it with `masters fixtures --questions ... --name {name}`")
    folder = Path(json.loads(record.read_text())["folder"])
    if not (folder / "report.json").is_file():
        raise ConfigError(f"ladder {name!r} was at {folder}, which is gone (cache cleared?): build it again with "
                          f"`masters fixtures --questions ... --name {name}` (its config: {record})")
    return folder


def resolve_ladder_ref(ref: str, progress: bool = True) -> Path:
    """``<member>`` of the default ladder, or ``<name>/<member>`` of a named one."""
    name, _, member = ref.rpartition("/")
    if member not in MEMBERS:
        raise ConfigError(f"ladder:{ref}: a ladder has {', '.join(MEMBERS)} (ladder:<member> or "
                          "ladder:<name>/<member>)")
    folder = named_ladder(name) if name else ensure_ladder(progress=progress)
    return folder / "models" / member
