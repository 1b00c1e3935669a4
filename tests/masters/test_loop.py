"""The Masters loop on tiny checkpoints: iterations, lineage in SQL, resume after kills."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TABLES = ("questions", "images", "models", "iterations", "responses", "token_stats", "verdicts", "rewards",
          "snapshots", "evaluations")



def lineage_sql(student_name: str) -> str:
    """README's lineage query (the one documented is the one tested), for one student."""
    import re

    readme = (ROOT / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```sql\n(.*?)```", readme, re.DOTALL) if "generated_by" in b]
    return block.replace("'demo/student@iter5'", f"'{student_name}'")


def _config(tiny_pair, family="qwen2_vl", **kw):
    student, teacher = tiny_pair(family)
    doc = {"run_id": "t", "iterations": 2, "questions": {"train": 6, "test": 8},
           "student": str(student), "teachers": [{"model": str(teacher)}],
           "teacher_responses": 2, "student_responses": 2, "sampling": {"max_new_tokens": 8},
           "train": {"max_steps": 3, "batch_size": 4, "learning_rate": 1e-3}, **kw}
    return doc


def test_two_iterations_register_lineage(tiny_pair, catalog_dir):
    from catalog import Catalog
    from masters.loop import run
    from masters.run_config import RunConfig
    from schemas import ids

    cfg = RunConfig.parse(_config(tiny_pair))
    lines = []
    with Catalog.open(catalog_dir) as cat:
        result = run(cfg, cat, progress=False, report=lambda s: lines.append(s.line()))
        assert len(result.iterations) == 2 and len(lines) == 2 and lines[1].startswith("iter 1:")
        first, second = result.iterations
        assert second.student_in == first.student_out  # the trained student generates next
        student2 = ids.checkpoint_id(Path(second.student_out))
        row = cat.sql("SELECT * FROM models WHERE model_id = $m", params={"m": student2}).to_pylist()[0]
        assert row["parent_model_id"] == ids.checkpoint_id(Path(first.student_out))
        assert row["snapshot_name"] == "t-iter1" and row["role"] == "student"
        lineage = cat.sql(lineage_sql("t/student@iter2") + " ORDER BY r.response_id").to_pylist()
        evals = cat.sql("SELECT iteration FROM evaluations WHERE run_id = 't' ORDER BY iteration NULLS FIRST")
        assert evals.column(0).to_pylist() == [None, -1, 0, 1]  # teacher, start, after each iteration
        from masters.mismatch import logprob_mismatch  # every token's engine log-prob, beside the scored one

        tokens = cat.sql("SELECT it.iteration, r.source, sum(r.num_tokens)::INT AS n FROM responses r "
                         "JOIN iterations it USING (iteration_id) WHERE it.run_id = 't' "
                         "AND r.behaviour_logprobs IS NOT NULL GROUP BY ALL").to_pylist()
        mismatch = logprob_mismatch(cat, "t")
        assert {(m["iteration"], m["source"]): m["tokens"] for m in mismatch} == \
            {(t["iteration"], t["source"]): t["n"] for t in tokens} and len(mismatch) == 4
        assert all(m["mean_abs"] < 1e-2 for m in mismatch), mismatch  # one model, two passes: a small gap
    snap = next(p for p in (catalog_dir / "snapshots").iterdir() if p.name == "t-iter1")
    trained_on = sorted(pq.read_table(snap / "data", columns=["response_id"]).column(0).to_pylist())
    assert [r["response_id"] for r in lineage] == trained_on  # SQL lineage = the snapshot's rows
    assert {r["iteration"] for r in lineage} == {1}
    assert {r["source"] for r in lineage} == {"teacher", "student"}
    assert {r["generated_by"] for r in lineage if r["source"] == "student"} == {ids.checkpoint_id(Path(first.student_out))}
    meta = json.loads((Path(second.student_out) / "meta.json").read_text())
    assert meta["catalog_version"] == lineage[0]["catalog_version"]
    _check_report(catalog_dir)


def _check_report(catalog_dir):
    """The report is one self-contained page that headless Chromium renders."""
    import re

    from PIL import Image

    from catalog import Catalog
    from masters.report import build_report, render_png

    from masters.ablate import summarise

    arms, pairs = summarise({"naive": {0: 0.4, 1: 0.6}, "base": {0: 0.1}})
    ablation = {"note": "n", "arms": arms, "pairs": pairs}
    sweep = {"key": "reward.w_distill", "note": "n", "points": [
        {"value": v, "mean": m, "ci95": 0.01, "low": m - 0.01, "high": m + 0.01, "per_seed": [m], "run_ids": [f"p{v}"]}
        for v, m in (("0", 0.25), ("2", 0.31))]}
    with Catalog.open_read_only(catalog_dir) as cat:
        page = build_report(cat, "t", catalog_dir / "report.html", ablation=ablation, sweeps=[sweep])
    text = page.read_text()
    assert "Behaviour vs teacher-forced log-probs" in text and "No engine log-probs" not in text
    # accuracy, R, D, schedule, verdicts, the sweep's plot
    assert len(re.findall(r"<img src='data:image/png;base64,", text)) == 6
    assert "Sweep: reward.w_distill" in text and "[0.300, 0.320]" in text
    assert not re.search(r"(src|href)=['\"]?(http|file|/)", text)  # nothing outside the page
    for needed in ("starting student", "student after iteration 1", "t-iter0", "t-iter1", "0.400, 0.600",
                   "teacher", "95% interval", "naive &gt; base"):
        assert needed in text
    png = render_png(page, catalog_dir / "report.png", height=1600)
    img = Image.open(png).convert("L")
    assert img.size == (1100, 1600)
    assert len(set(img.resize((64, 64)).tobytes())) > 20  # drawn, not a blank page


def _state(catalog):
    from catalog import Catalog

    with Catalog.open_read_only(catalog) as cat:
        counts = {t: cat.count(t) for t in TABLES}
        dupes = {t: cat.sql(f"SELECT count(*) - count(DISTINCT {key}) FROM {t}").column(0)[0].as_py()
                 for t, key in [("responses", "response_id"), ("token_stats", "stats_id"), ("verdicts", "verdict_id"),
                                ("rewards", "reward_id"), ("models", "model_id"), ("snapshots", "snapshot_id"),
                                ("evaluations", "evaluation_id")]}
        responses = set(cat.sql("SELECT response_id FROM responses").column(0).to_pylist())
    return counts, dupes, responses


@pytest.mark.slow
def test_resume_after_kills_at_every_stage(tiny_pair, tmp_path, masters_cli):
    def _masters(catalog, cfg_path, fault=None):
        return masters_cli("--catalog", catalog, "run", cfg_path, fault=fault)

    doc = _config(tiny_pair)
    doc["questions"]["train"] = 10
    doc["output_dir"] = None
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    reference = _masters(tmp_path / "reference", cfg)
    assert reference.returncode == 0, reference.stderr[-3000:]
    # the same run, killed (SIGKILL) at one point after another, each time restarted by the same command
    killed = tmp_path / "killed"
    faults = ["generate:1", "score:1", "judged:1", "snapshot:1", "train:1", "train-saved:1", "registered:1",
              "generate:2", "score:1", "train-saved:1"]
    for fault in faults:
        proc = _masters(killed, cfg, fault)
        assert proc.returncode == -9, f"{fault}: {proc.returncode} {proc.stderr[-2000:]}"
    final = _masters(killed, cfg)
    assert final.returncode == 0, final.stderr[-3000:]
    again = _masters(killed, cfg)  # a finished run is a no-op
    assert again.returncode == 0
    ref_counts, ref_dupes, ref_responses = _state(tmp_path / "reference")
    counts, dupes, responses = _state(killed)
    assert counts == ref_counts
    assert set(dupes.values()) == {0} and set(ref_dupes.values()) == {0}
    assert responses == ref_responses  # same seeds, same students: the very same responses
    assert "iter 1:" in final.stdout and "final student" in final.stdout
    assert not list((killed / "runs" / "t" / "students").glob(".*partial"))


@pytest.mark.slow
def test_ablation_arms_run_at_equal_budget(tiny_pair, catalog_dir):
    from catalog import Catalog
    from masters.ablate import ablate
    from masters.run_config import RunConfig

    student, teacher = tiny_pair("qwen2_vl")
    doc = _config(tiny_pair)
    doc["teachers"] = [{"model": str(student)}, {"model": str(teacher), "start": 1}]  # a two-rung ladder
    base = RunConfig.parse({**doc, "run_id": "abl"})
    seen = []
    with Catalog.open(catalog_dir) as cat:
        out = ablate(cat, base, [0, 1], steps=2, progress=False, on_result=lambda *a: seen.append(a))
        runs = set(cat.sql("SELECT DISTINCT run_id FROM iterations").column(0).to_pylist())
        # every trained arm's Gen-Data is in the catalog under its own run id
        assert {"abl-naive-i2-k2-s0", "abl-progressive-i2-k2-s1", "abl-masters-i2-k2-s0",
                "abl-masters-one-teacher-i2-k2-s1"} <= runs
        naive_teacher = cat.sql("SELECT DISTINCT teacher_model_id FROM iterations WHERE run_id = 'abl-naive-i2-k2-s0'")
        one = cat.sql("SELECT DISTINCT teacher_model_id FROM iterations WHERE run_id = 'abl-masters-one-teacher-i2-k2-s0'")
        ladder = cat.sql("SELECT teacher_model_id FROM iterations WHERE run_id = 'abl-masters-i2-k2-s0' ORDER BY iteration")
    from schemas import ids

    largest = ids.checkpoint_id(teacher)
    assert naive_teacher.column(0).to_pylist() == [largest] and one.column(0).to_pylist() == [largest]
    assert ladder.column(0).to_pylist() == [ids.checkpoint_id(student), largest]
    arms = {a["arm"]: a for a in out["arms"]}
    assert list(arms) == ["base", "naive", "progressive", "masters", "masters-one-teacher", "sft-ground-truth"]
    assert len(arms["base"]["per_seed"]) == 1 and all(len(arms[a]["per_seed"]) == 2 for a in list(arms)[1:])
    assert all(0 <= x <= 1 for a in arms.values() for x in a["per_seed"])
    assert all(a["ci95"] is not None for a in list(arms.values())[1:])  # two seeds: an interval
    assert [(p["first"], p["second"]) for p in out["pairs"]] == [
        ("masters", "progressive"), ("progressive", "naive"), ("naive", "base"), ("masters", "masters-one-teacher"),
        ("sft-ground-truth", "masters")]
    masters_by_seed = dict(zip(arms["masters"]["seeds"], arms["masters"]["per_seed"]))
    naive_by_seed = dict(zip(arms["naive"]["seeds"], arms["naive"]["per_seed"]))
    pair = next(p for p in out["pairs"] if p["second"] == "base")
    assert pair["mean"] == pytest.approx(sum(naive_by_seed.values()) / 2 - arms["base"]["mean"])
    assert masters_by_seed.keys() == {0, 1}
    assert len(seen) == 11 and Path(out["path"]).is_file()
    truth = json.loads((catalog_dir / "runs" / "abl-sft-ground-truth-i2-k2-s1" / "students" / "sft-ground-truth"
                        / "meta.json").read_text())
    assert truth["metrics"]["steps"] == 2 * base.iterations  # the upper bound at the same budget, on the answers
    rows = pq.read_table(catalog_dir / "runs" / "abl-sft-ground-truth-i2-k2-s1" / "data" / "sft-ground-truth" / "data")
    assert sorted(rows.column("completion").to_pylist()) == sorted(rows.column("answer").to_pylist())
    sft_meta = json.loads((catalog_dir / "runs" / "abl-naive-i2-k2-s0" / "students" / "naive" / "meta.json").read_text())
    assert sft_meta["metrics"]["steps"] == 2 * base.iterations  # the same optimizer steps as the loop's arms


@pytest.mark.slow
def test_masters_demo_command(tmp_path):
    """`masters demo` on the cached tiny ladder (one iteration here; the README's command runs five)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "masters.cli", "--catalog", str(tmp_path / "demo"), "demo",
                           "--iterations", "1", "--report", str(tmp_path / "r.html")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert "iter 0: teacher ladder:M r=0.20" in out
    for row in ("starting student", "student after iteration 0", "teacher M (unmasked)"):
        assert row in out
    assert (tmp_path / "r.html").is_file() and "final student" in out
    assert "'loss':" not in out and "'train_runtime':" not in out  # no trainer metrics dicts on the console
    for noise in ("select sources", "Flattening", "Generating train split"):  # datasets' bars, silenced
        assert noise not in out + proc.stderr
    assert (tmp_path / "demo" / "runs" / "demo-1" / "students" / "iter1" / "trainer_log.jsonl").is_file()


@pytest.mark.slow
def test_loop_trains_under_accelerate_zero3_and_refuses_a_changed_config(tiny_pair, tmp_path, monkeypatch):
    from catalog import Catalog
    from masters.loop import run
    from masters.run_config import RunConfig
    from schemas.errors import MastersError

    monkeypatch.chdir(tmp_path)  # not the checkout: the shipped configs are found from any directory
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    doc = _config(tiny_pair, iterations=1)
    doc["train"].update(launcher="accelerate", accelerate_config="configs/accelerate/zero3.yaml", num_processes=2,
                        batch_size=2)
    with Catalog.open(tmp_path / "cat") as cat:
        result = run(RunConfig.parse(doc), cat, progress=False)
        meta = json.loads((Path(result.final_student) / "meta.json").read_text())
        assert meta["processes"] == 2 and meta["deepspeed"] is True
        changed = {**doc, "train": {**doc["train"], "learning_rate": 5e-4}}
        with pytest.raises(MastersError, match="trained with other settings"):
            run(RunConfig.parse(changed), cat, progress=False)
        other_mask = {**doc, "mask": {"kind": "constant", "r_max": 0.1, "iterations": 1}}
        with pytest.raises(MastersError, match="made with another configuration"):
            run(RunConfig.parse(other_mask), cat, progress=False)
