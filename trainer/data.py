"""Reading snapshot folders for training: verify the manifest, load with `datasets`, shape rows
into TRL's conversational prompt-completion format with the image beside them. And what a
training shows and keeps: its log dicts as JSON lines in the output folder (``TrainerLog``), one
labelled bar (``StepBar``), the libraries' own bars and messages silenced (``quiet_libraries``)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import datasets
import torch
import transformers
from tqdm.auto import tqdm
from transformers import TrainerCallback

from schemas.errors import SnapshotError
from schemas.snapshot import DATA_DIR, SFT_COLUMNS, Manifest, manifest_sha256, verify_snapshot


def load_verified(folder: str | os.PathLike) -> tuple[datasets.Dataset, Manifest, str]:
    """The snapshot's rows, its manifest and the manifest's sha256, after checking every file.
    A missing, changed or incomplete file raises SnapshotVerificationError naming it."""
    folder = Path(folder)
    manifest = verify_snapshot(folder)
    digest = manifest_sha256(folder)
    files = sorted(str(p) for p in (folder / DATA_DIR).glob("*.parquet"))
    # the Arrow cache is keyed by the verified manifest: a different snapshot never reuses it
    cache = Path(os.environ.get("MASTERS_DATASETS_CACHE", Path.home() / ".cache" / "masters-distill" / "datasets"))
    ds = datasets.load_dataset("parquet", data_files={"train": files}, split="train",
                               cache_dir=str(cache / digest[:16]))
    expected = sum(manifest.row_counts.values())
    if ds.num_rows != expected:
        raise SnapshotError(f"{folder}: {ds.num_rows} rows read, manifest says {expected}")
    return ds, manifest, digest


def to_prompt_completion(ds: datasets.Dataset, folder: str | os.PathLike = "") -> datasets.Dataset:
    """Keep prompt/image/completion and make prompt and completion conversational, the shape
    TRL's vision collator renders with the processor's chat template."""
    missing = [c for c in SFT_COLUMNS if c not in ds.column_names]
    if missing:
        raise SnapshotError(f"snapshot {folder} has no column {missing[0]!r}; SFT needs "
                            f"{', '.join(SFT_COLUMNS)}")
    ds = ds.select_columns(list(SFT_COLUMNS))
    return ds.map(lambda row: {"prompt": [{"role": "user", "content": row["prompt"]}],
                               "completion": [{"role": "assistant", "content": row["completion"]}]},
                  desc="chat format")


TRAINER_LOG = "trainer_log.jsonl"


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence, at their source, what the libraries a training calls print and a user cannot act
    on: datasets' progress bars (generating the snapshot's split, selecting and flattening rows,
    formatting them), transformers' (writing model shards), and DeepSpeed's accelerator
    auto-detection, which warns "Setting accelerator to CPU" on stdout when it is first imported
    on a machine without CUDA: there the trainer trains on the CPU (``use_cpu``), so DeepSpeed is
    told so (``DS_ACCELERATOR=cpu``, unless the user set it). Each is restored on exit."""
    ds_bars = datasets.utils.logging.is_progress_bar_enabled()
    tf_bars = transformers.utils.logging.is_progress_bar_enabled()
    set_accelerator = "DS_ACCELERATOR" not in os.environ and not torch.cuda.is_available()
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    if set_accelerator:
        os.environ["DS_ACCELERATOR"] = "cpu"
    try:
        yield
    finally:
        if set_accelerator:
            os.environ.pop("DS_ACCELERATOR", None)
        if ds_bars:
            datasets.enable_progress_bars()
        if tf_bars:
            transformers.utils.logging.enable_progress_bar()


def quiet_env() -> dict[str, str]:
    """The environment variables ``quiet_libraries`` sets, for a training in a child process
    (``accelerate launch``: its launcher imports DeepSpeed before any of our code runs)."""
    if "DS_ACCELERATOR" not in os.environ and not torch.cuda.is_available():
        return {"DS_ACCELERATOR": "cpu"}
    return {}


class TrainerLog(TrainerCallback):
    """Every log dict of the Trainer (the logged steps' metrics, then the training's summary) as
    one JSON line of ``path``, written by the main process as it is logged. A training resumed
    from a checkpoint first drops the lines of the steps after it (they are run again), so each
    step appears once; a fresh training starts the file over."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept = []
        if state.global_step > 0 and self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:  # a line cut short by a kill
                    continue
                if entry.get("step", 0) <= state.global_step and "train_runtime" not in entry:
                    kept.append(line + "\n")
        self.path.write_text("".join(kept))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            entry = {"step": state.global_step, "epoch": state.epoch, **logs}
            with open(self.path, "a") as f:
                f.write(json.dumps(entry, default=str) + "\n")


class StepBar(TrainerCallback):
    """One bar per training, labelled like the loop's stage bars, counting optimizer steps; no
    metrics are written under it (they are in ``TrainerLog``'s file and meta.json)."""

    def __init__(self, label: str = "train"):
        self.label, self.bar = label, None

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc=self.label, unit="step")

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def quiet_callbacks(trainer, output_dir: str | os.PathLike, progress: bool, print_logs: bool = False) -> None:
    """The console and logs of a training: the log dicts to ``output_dir``/trainer_log.jsonl
    (and to ``report_to``, as the Trainer does), printed only when ``print_logs``; one labelled
    bar when ``progress``. Built with ``disable_tqdm=True``: transformers then adds no per-step
    bar of its own but its PrinterCallback, which prints every log dict."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(ProgressCallback)
    if not print_logs:
        trainer.remove_callback(PrinterCallback)
    trainer.add_callback(TrainerLog(Path(output_dir) / TRAINER_LOG))
    if progress:
        trainer.add_callback(StepBar())
