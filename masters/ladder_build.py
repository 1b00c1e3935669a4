"""The ladder build itself, run by ``masters.fixtures`` as ``python -m masters.ladder_build
<folder>`` in a child process with pinned numerics. Reads ``ladder-config.json`` and the question
splits the parent wrote into the folder; trains the tokenizer on the train texts, warms up each
member (and the ceiling) by SFT on the train split, measures each on validation and test and
writes ``report.json`` (with the task's chance level and which members are within noise of it).
A user error is written to ``error.txt`` for the parent to raise."""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

from masters.fixtures import CEILING, LADDER_ORDER, LadderConfig
from masters.ladder_questions import LadderData, at_chance, chance_levels
from schemas.errors import MastersError


def build(out: Path, progress: bool = True) -> dict:
    import datasets
    import torch
    import transformers
    from tqdm.auto import tqdm

    from gendata.hf_generate import load_vlm
    from gendata.tiny_vlm import TinySize, build_tiny_vlm, family, param_count, train_tokenizer
    from masters.evaluate import evaluate
    from masters.sft_data import write_sft_folder
    from trainer.config import SFTRunConfig
    from trainer.sft import train_sft

    started = time.perf_counter()
    config = LadderConfig.model_validate_json((out / "ladder-config.json").read_text())
    torch.set_num_threads(config.threads)
    transformers.utils.logging.disable_progress_bar()  # one bar for the build
    datasets.disable_progress_bars()
    fam = family(config.family)
    data = LadderData.read(out / "data" / "questions")
    texts = [q["question"] + " " + q["answer"] for q in data.train.questions.to_pylist()]
    tokenizer = train_tokenizer(texts, fam.special_tokens, config.vocab_size, fam.image_placeholder)
    sft_dir = write_sft_folder(data.train, out / "data" / "sft-train", "sft-train")
    chance = chance_levels(data.train, data.test)
    report = {"family": config.family, "config": config.model_dump(mode="json"), "chance": chance,
              "questions": {s: qs.questions.num_rows for s, qs in data.splits().items()},
              "questions_content_id": data.content_id(), "models": {},
              # what the child actually ran with (the pin holds if the capability is AVX2 on any CPU)
              "numerics": {"threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                           "cuda": torch.cuda.is_available()}}
    student = config.members["student"]
    plan = [(name, config.members[name], i) for i, name in enumerate(LADDER_ORDER)]
    # the ceiling: the student's architecture and initial weights, trained with the ceiling budget
    plan.append((CEILING, student.model_copy(update={"steps": config.ceiling.steps,
                                                       "learning_rate": config.ceiling.learning_rate}), 0))
    bar = tqdm(total=sum(m.steps for _, m, _ in plan), desc="building the tiny ladder", unit="step",
               disable=not progress)
    final = out.parent / out.name.split(".build-")[0].lstrip(".")
    for name, m, init_seed in plan:
        t0 = time.perf_counter()
        size = TinySize(m.hidden, m.layers, m.heads, m.kv_heads, m.vision_hidden, m.vision_layers, m.vision_heads)
        init = build_tiny_vlm(config.family, size, tokenizer, out / "init" / name, config.image_size,
                              seed=config.seed + init_seed)
        metrics = train_sft(SFTRunConfig(
            model=str(init), snapshot=str(sft_dir), output_dir=str(out / "models" / name),
            max_steps=m.steps, batch_size=config.batch_size, learning_rate=m.learning_rate,
            seed=config.seed, logging_steps=max(1, m.steps // 5), progress=False))
        shutil.rmtree(out / "models" / name / "trainer_state", ignore_errors=True)
        bar.update(m.steps)
        train_s = time.perf_counter() - t0
        model_and_processor = load_vlm(out / "models" / name)
        entry = {"path": str(final / "models" / name), "params": param_count(model_and_processor[0]),
                 "size": asdict(size), "steps": m.steps, "learning_rate": m.learning_rate,
                 "train_seconds": round(train_s, 1), "train_metrics": metrics}
        for split, qs in (("validation", data.validation), ("test", data.test)):
            if qs.questions.num_rows == 0:
                continue
            result = evaluate(out / "models" / name, qs, model_and_processor=model_and_processor)
            entry[f"{split}_accuracy"], entry[f"{split}_accuracy_per_type"] = result.accuracy, result.per_type
            entry[f"{split}_n"] = result.n
        entry["at_chance"] = at_chance(entry["test_accuracy"], entry["test_accuracy_per_type"], chance)
        report["models"][name] = entry
    bar.close()
    shutil.rmtree(out / "init", ignore_errors=True)
    report["build_seconds"] = round(time.perf_counter() - started, 1)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    try:
        build(out, progress="--quiet" not in argv)
    except (MastersError, ValueError) as exc:
        (out / "error.txt").write_text(str(exc))
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

