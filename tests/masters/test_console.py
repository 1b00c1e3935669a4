"""A quiet console: `masters run` shows one labelled bar per stage and one summary line per
iteration; the trainer's logs go to the run folder, and the libraries' messages a user cannot
act on (datasets' bars, DeepSpeed's accelerator detection, transformers' log dicts) are not shown."""

import json
import re

import yaml

STAGE_BARS = {"iteration", "generate-teacher", "generate-student", "score", "judge", "rewards", "snapshot rows",
              "train", "evaluate"}
NOISE = ("'loss':", "'train_runtime'", "{'", "select sources", "Flattening", "Generating train split",
         "Setting accelerator", "ds_accelerator", "Writing model shards", "chat format")


def bar_labels(stderr: str) -> list[str]:
    """The label of every progress bar refresh on a console (tqdm writes 'label: 40%|...| 2/5 [...]')."""
    segments = re.split(r"[\r\n]", stderr)
    bars = [s for s in segments if re.search(r"\[[^\]]*(/s|s/\w+)\]\s*$", s)]
    return [s.split(": ")[0].strip() if re.match(r"^[\w -]+: ", s) else s for s in bars]


def test_loop_console_has_stage_bars_iteration_lines_and_the_trainer_log_in_the_run_folder(
        tiny_pair, tmp_path, masters_cli):
    student, teacher = tiny_pair("qwen2_vl")
    doc = {"run_id": "q", "iterations": 1, "questions": {"train": 6, "test": 8}, "student": str(student),
           "teachers": [{"model": str(teacher)}], "teacher_responses": 2, "student_responses": 2,
           "sampling": {"max_new_tokens": 8}, "train": {"max_steps": 10, "batch_size": 4, "learning_rate": 1e-3}}
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    proc = masters_cli("--catalog", tmp_path / "cat", "run", cfg)
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    for noise in NOISE:
        assert noise not in console, f"{noise!r} on the console:\n{console[-3000:]}"
    labels = bar_labels(proc.stderr)
    assert set(labels) <= STAGE_BARS, sorted(set(labels) - STAGE_BARS)  # no unlabelled per-step bar
    assert "train" in labels and "score" in labels
    iteration_lines = [line for line in proc.stdout.splitlines() if line.startswith("iter ")]
    assert len(iteration_lines) == 1 and iteration_lines[0].startswith("iter 0: teacher")
    (log,) = (tmp_path / "cat").rglob("trainer_log.jsonl")  # the run folder: runs/q/students/iter1
    assert log.parent.name == "iter1" and log.parent.parent.parent.name == "q"
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [line["step"] for line in lines if "loss" in line] == [5, 10]  # the loop logs every 5 steps
    assert all("masters/jsd" in line for line in lines if "loss" in line)
    assert lines[-1]["step"] == 10 and "train_runtime" in lines[-1]  # the final summary of the training
