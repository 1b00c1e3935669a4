"""The `masters` command line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import pyarrow as pa
import typer
import yaml
from typer.core import TyperGroup

from schemas.config import CatalogConfig
from schemas.errors import ConfigError, MastersError



def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


class _Commands(TyperGroup):
    """The command group: every project error (schemas.errors.MastersError) a command raises
    becomes one red ``error: ...`` line and exit code 2, in one place; anything else is a bug and
    keeps its traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except MastersError as exc:
            _fail(exc)


app = typer.Typer(help="masters-distill: a versioned Gen-Data catalog, judges, rewards and an "
                       "offline GRPO trainer for Masters-style VLM distillation.", cls=_Commands,
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)

DEFAULT_CATALOG = "masters-catalog"


class State:
    catalog: str = DEFAULT_CATALOG
    data_path: Optional[str] = None
    snapshot_root: Optional[str] = None

    @classmethod
    def config(cls) -> CatalogConfig:
        if cls.catalog.startswith("ducklake:"):
            if not cls.data_path or not cls.snapshot_root:
                raise MastersError("a ducklake: catalog URI needs --data-path and --snapshot-root "
                                   "(or MASTERS_DATA_PATH and MASTERS_SNAPSHOT_ROOT)")
            return CatalogConfig(uri=cls.catalog, data_path=cls.data_path,
                                 snapshot_root=cls.snapshot_root)
        overrides = {k: v for k, v in (("data_path", cls.data_path),
                                       ("snapshot_root", cls.snapshot_root)) if v}
        base = CatalogConfig.for_directory(cls.catalog)
        return base.model_copy(update=overrides) if overrides else base


@app.callback()
def main(
    catalog: str = typer.Option(DEFAULT_CATALOG, "--catalog", "-c", envvar="MASTERS_CATALOG",
                                help="catalog folder (embedded default) or a ducklake: URI"),
    data_path: Optional[str] = typer.Option(None, envvar="MASTERS_DATA_PATH",
                                            help="Parquet data path (needed with a ducklake: URI)"),
    snapshot_root: Optional[str] = typer.Option(None, envvar="MASTERS_SNAPSHOT_ROOT",
                                                help="where snapshots are written"),
) -> None:
    State.catalog, State.data_path, State.snapshot_root = catalog, data_path, snapshot_root


@app.command()
def sql(
    query: str = typer.Argument(..., help="SQL over the catalog's tables, e.g. "
                                "\"SELECT source, count(*) FROM responses GROUP BY 1\""),
    version: Optional[int] = typer.Option(None, "--version", "-v", help="run against this catalog version"),
    fmt: str = typer.Option("table", "--format", "-f", help="table | csv | json | parquet"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="write to this file"),
    write: bool = typer.Option(False, "--write", help="allow statements that write"),
) -> None:
    """Query the catalog with SQL (read-only unless --write)."""
    from catalog import Catalog
    from masters.output import write_result

    cat = Catalog.open(State.config(), create=False) if write else \
        Catalog.open_read_only(State.config())
    with cat:
        result = cat.sql(query, version=version, write=write)
    write_result(result, fmt, output)


@app.command()
def versions(
    fmt: str = typer.Option("table", "--format", "-f", help="table | csv | json | parquet"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="write to this file"),
) -> None:
    """List catalog versions: id, time, message, metadata and rows added per table."""
    from catalog import Catalog
    from masters.output import write_result

    with Catalog.open_read_only(State.config()) as cat:
        rows = [{"version": v.version, "time": v.time, "message": v.message or "",
                 "metadata": json.dumps(v.metadata, sort_keys=True) if v.metadata else "",
                 "rows_added": ", ".join(f"{t}={n}" for t, n in sorted(v.rows_added.items()))}
                for v in cat.versions()]
    write_result(pa.Table.from_pylist(rows), fmt, output, max_rows=10_000)


@app.command()
def snapshot(
    name: str = typer.Option(..., "--name", "-n", help="snapshot name (a folder under the snapshot root)"),
    reward_config: str = typer.Option(..., "--reward-config", "-r", help="reward config id"),
    version: Optional[int] = typer.Option(None, "--version", "-v", help="catalog version (default: current)"),
    iteration: Optional[int] = typer.Option(None, "--iteration", "-i", help="only this iteration"),
    run_id: Optional[str] = typer.Option(None, "--run", help="only this run"),
    out: Optional[Path] = typer.Option(None, "--out", help="snapshot root (default: the catalog's)"),
) -> None:
    """Materialise an immutable snapshot folder (Parquet + card + manifest.json)."""
    from catalog import Catalog
    from catalog.snapshots import create_snapshot

    with Catalog.open(State.config(), create=False) as cat:
        info = create_snapshot(cat, name, reward_config, version=version, iteration=iteration,
                               run_id=run_id, root=out, progress=sys.stderr.isatty())
    state = "created" if info.created else "exists (not overwritten)"
    typer.echo(f"snapshot {info.name} {state}: {info.path}\n  catalog version "
               f"{info.catalog_version}, {info.num_rows} rows, manifest sha256 {info.manifest_sha256}")


@app.command()
def verify(target: str = typer.Argument(..., help="snapshot folder, or a snapshot name under the catalog's root")) -> None:
    """Check a snapshot folder against its manifest; names every missing or changed file."""
    from catalog.snapshots import find_snapshot
    from schemas.snapshot import manifest_sha256, verify_snapshot

    root = State.config().snapshot_root
    folder = find_snapshot(None, target, root=root)
    recorded = _recorded_manifest_sha(folder)
    manifest = verify_snapshot(folder, expected_manifest_sha256=recorded)
    checked = " and the catalog's record" if recorded else ""
    typer.echo(f"ok: {folder} matches its manifest{checked} ({len(manifest.files)} files, "
               f"{sum(manifest.row_counts.values())} rows, catalog version "
               f"{manifest.catalog_version}, manifest sha256 {manifest_sha256(folder)})")


def _recorded_manifest_sha(folder: Path) -> str | None:
    """The manifest sha256 the catalog recorded for this snapshot folder, when a catalog is there."""
    from catalog import Catalog
    from schemas.errors import CatalogError

    try:
        with Catalog.open_read_only(State.config()) as cat:
            rows = cat.sql("SELECT manifest_sha256, path FROM snapshots").to_pylist()
    except CatalogError:
        return None
    for row in rows:
        if Path(row["path"]).resolve() == folder.resolve():
            return row["manifest_sha256"]
    return None


@app.command()
def tables(name: Optional[str] = typer.Argument(None, help="one table (default: all)")) -> None:
    """Show the catalog's tables, their columns, types and documentation."""
    from schemas.tables import ALL_TABLES, field_doc, table_spec

    try:
        specs = [table_spec(name)] if name else list(ALL_TABLES)
    except KeyError as exc:
        raise MastersError(exc.args[0]) from None
    for spec in specs:
        typer.secho(f"{spec.name}  (id: {spec.id_column}) - {spec.doc}", bold=True)
        for field in spec.schema:
            null = "" if field.nullable else " not null"
            typer.echo(f"  {field.name:<24} {str(field.type) + null:<28} {field_doc(field)}")
        typer.echo("")


questions_app = typer.Typer(help="Add questions to the catalog (synthetic visual QA or any HF dataset).",
                            no_args_is_help=True)
app.add_typer(questions_app, name="questions")


@questions_app.command("synthetic")
def questions_synthetic(
    n: int = typer.Option(600, "--n", help="number of questions"),
    split: str = typer.Option("train", help="train / test / validation"),
    seed: int = typer.Option(0, help="generator seed"),
    image_size: int = typer.Option(112, help="image side in pixels"),
) -> None:
    """Render the built-in synthetic visual-QA questions and commit them to the catalog."""
    from catalog import Catalog
    from gendata.synthetic_vqa import SPLITS, synthetic_vqa
    from masters.questions import ingest_questions

    if split not in SPLITS:
        raise ConfigError(f"--split {split!r}: use one of {', '.join(SPLITS)}")
    qs = synthetic_vqa(n, split, seed, image_size)
    with Catalog.open(State.config()) as cat:
        res = ingest_questions(cat, qs, f"synthetic questions ({split}, seed {seed})")
    typer.echo(_ingest_summary(res))


@questions_app.command("hf")
def questions_hf(
    source: str = typer.Argument(..., help="save_to_disk folder, Parquet file/folder, load_dataset folder or Hub id"),
    image: str = typer.Option("image", help="image column"),
    question: str = typer.Option("question", help="question column"),
    answer: str = typer.Option("answer", help="answer column"),
    choices: Optional[str] = typer.Option(None, help="options column (multiple choice)"),
    qtype: Optional[str] = typer.Option(None, help="question-type column"),
    split: str = typer.Option("train", help="split to read"),
    name: Optional[str] = typer.Option(None, help="source name stored with each question"),
    skip_bad: bool = typer.Option(False, "--skip-bad", help="skip unusable rows (counted) instead of failing"),
    limit: Optional[int] = typer.Option(None, help="read at most this many rows"),
) -> None:
    """Read questions from a Hugging Face dataset by column mapping and commit them."""
    from catalog import Catalog
    from gendata.hf_source import ColumnMapping, hf_questions
    from masters.questions import ingest_questions

    mapping = ColumnMapping(image=image, question=question, answer=answer, choices=choices, qtype=qtype)
    qs = hf_questions(source, mapping, split=split, source_name=name, skip_bad=skip_bad, limit=limit)
    for problem in qs.problems:
        typer.echo(f"skipped {problem}", err=True)
    with Catalog.open(State.config()) as cat:
        res = ingest_questions(cat, qs, f"questions from {name or source} ({split})")
    typer.echo(_ingest_summary(res) + (f"; {qs.skipped} bad rows skipped" if qs.skipped else ""))


def _ingest_summary(res) -> str:
    return (f"version {res.version}: {res.added.get('questions', 0)} questions and "
            f"{res.added.get('images', 0)} images added, {res.skipped.get('questions', 0)} questions "
            "already present")


def _mapping(value: Optional[str], what: str) -> dict:
    """Inline JSON/YAML, or a path to a JSON/YAML file, as a dict."""
    import yaml

    if not value:
        return {}
    try:
        text = Path(value).read_text() if Path(value).is_file() else value
    except OSError:  # a long inline document is not a path
        text = value
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise MastersError(f"{what}: not valid JSON/YAML ({exc})") from None
    if not isinstance(doc, dict):
        raise MastersError(f"{what}: expected a mapping of keys to values, got {type(doc).__name__}")
    return doc


def _make_judge(name: str, judge_config: Optional[str]):
    from rewards.judges import build_judge

    return build_judge(name, _mapping(judge_config, "--judge-config"), where="--judge-config")


@app.command()
def judge(
    name: str = typer.Option("rule", "--judge", "-j", help="judge: rule, exact, numeric, choice, llm"),
    judge_config: Optional[str] = typer.Option(None, help="judge parameters: JSON/YAML text or file "
                                               "(llm: model, base_url, api_key_env, ...)"),
    iteration: Optional[int] = typer.Option(None, "--iteration", "-i", help="only this iteration"),
    batch_size: int = typer.Option(512, help="responses per commit"),
) -> None:
    """Judge every response that has no verdict of this judge yet (cached by response and judge)."""
    from catalog import Catalog
    from masters.rescore import judge_missing

    j = _make_judge(name, judge_config)
    with Catalog.open(State.config(), create=False) as cat:
        res = judge_missing(cat, j, iteration=iteration, batch_size=batch_size, progress=sys.stderr.isatty())
    states = ", ".join(f"{k} {v}" for k, v in sorted(res.states.items())) or "nothing to judge"
    typer.echo(f"judge {j.judge_id}: {res.judged} judged ({states}), {res.already} already judged; "
               f"versions {res.versions or '-'}")


@app.command()
def rescore(
    name: str = typer.Option("rule", "--judge", "-j", help="judge whose verdicts give R_acc"),
    judge_config: Optional[str] = typer.Option(None, help="judge parameters (JSON/YAML text or file)"),
    reward_config: Optional[str] = typer.Option(None, "--reward-config", "-r", help="reward config as JSON/YAML "
                                                "text or file: divergence, aggregation, w_acc, w_distill"),
    iteration: Optional[int] = typer.Option(None, "--iteration", "-i", help="only this iteration"),
    snapshot_name: Optional[str] = typer.Option(None, "--snapshot", help="also cut a snapshot of the result"),
) -> None:
    """Re-score without regenerating or retraining: judge what is missing, then append reward rows
    under the new reward config in one commit (responses are never touched)."""
    from catalog import Catalog
    from catalog.snapshots import create_snapshot
    from masters.rescore import judge_missing
    from masters.rescore import rescore as do_rescore
    from schemas.config import RewardConfig

    j = _make_judge(name, judge_config)
    config = RewardConfig.parse({**_mapping(reward_config, "--reward-config"), "judge_id": j.judge_id},
                                where="--reward-config")
    with Catalog.open(State.config(), create=False) as cat:
        jr = judge_missing(cat, j, iteration=iteration, progress=sys.stderr.isatty())
        res = do_rescore(cat, config, iteration=iteration)
        typer.echo(f"judged {jr.judged} missing verdicts; reward config {config.id}: {res.added} reward "
                   f"rows added, {res.skipped} already present (version {res.version}); "
                   f"{res.unrewarded} responses get none (unparseable verdict, empty response, a group "
                   "with fewer than two usable members, or a group not complete yet)")
        if snapshot_name:
            info = create_snapshot(cat, snapshot_name, config.id, iteration=iteration, progress=False)
            typer.echo(f"snapshot {info.name}: {info.path} ({info.num_rows} rows)")


def _assignments(items: list[str], what: str) -> dict:
    """``KEY=VALUE`` pairs, each value read as YAML (numbers, lists, mappings)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what} {item!r}: write KEY=VALUE (e.g. members.L.steps=3000)")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{what} {item!r}: the value is not valid YAML ({exc})") from None
    return out


@app.command()
def fixtures(
    force: bool = typer.Option(False, "--force", help="rebuild even when cached"),
    family: str = typer.Option("qwen2_vl", help="VLM family of the ladder (qwen2_vl, llava)"),
    questions: str = typer.Option("synthetic", "--questions", help="the task: synthetic (built in), hf:<dataset "
                                  "folder, Parquet or Hub id>, or catalog[:<embedded catalog folder>] (default: "
                                  "the --catalog one)"),
    image: str = typer.Option("image", help="hf: image column"),
    question: str = typer.Option("question", help="hf: question column"),
    answer: str = typer.Option("answer", help="hf: answer column"),
    choices: Optional[str] = typer.Option(None, help="hf: options column (multiple choice)"),
    qtype: Optional[str] = typer.Option(None, help="hf: question-type column"),
    source_name: Optional[str] = typer.Option(None, "--source-name", help="hf: source name stored with each "
                                              "question; catalog: only that source's questions"),
    train_split: str = typer.Option("train", help="split to warm up on (validation is carved from it)"),
    test_split: str = typer.Option("test", help="held-out split of the report"),
    name: Optional[str] = typer.Option(None, "--name", help="name the ladder: a run config then says "
                                       "ladder:<name>/<member>"),
    set_: list[str] = typer.Option([], "--set", help="override a ladder setting, KEY=VALUE (repeatable), e.g. "
                                   "members.L.steps=3000, ceiling.steps=2000, train_questions=2000"),
) -> None:
    """Build (or reuse) a tiny checkpoint ladder: student and teachers S < M < L warmed up by SFT,
    and the student's ceiling (its architecture trained on ground truth with a large budget)."""
    from masters.fixtures import LadderConfig, ensure_ladder, load_report
    from masters.ladder_questions import LadderQuestions

    kind, _, where = questions.partition(":")
    if kind not in ("synthetic", "hf", "catalog") or (kind == "hf" and not where):
        raise ConfigError(f"--questions {questions!r}: use synthetic, hf:<dataset> or catalog[:<folder>]")
    spec = LadderQuestions.parse(dict(source=kind, path=where or None, name=source_name, train_split=train_split,
                                      test_split=test_split,
                                      mapping=dict(image=image, question=question, answer=answer,
                                                   choices=choices, qtype=qtype)), where="--questions")
    config = LadderConfig(family=family, questions=spec).with_overrides(_assignments(set_, "--set"))
    catalog = State.config() if kind == "catalog" and not where else None
    folder = ensure_ladder(config, force=force, progress=True, name=name, catalog=catalog)
    report = load_report(folder)
    typer.echo(f"ladder at {folder} (built in {report['build_seconds']} s)"
               + (f"; run configs name it ladder:{name}/<member>" if name else ""))
    typer.echo(f"  chance level {report['chance']['overall']:.3f} on {report['chance']['n']} held-out questions")
    for member, m in report["models"].items():
        flag = m["at_chance"]
        note = ("  AT CHANCE" if flag["overall"] else "") + (
            f"  (at chance on {', '.join(flag['types'])})" if flag["types"] and not flag["overall"] else "")
        typer.echo(f"  {member:<8} {m['params']:>9,} params  {m['steps']:>5} SFT steps  held-out accuracy "
                   f"{m['test_accuracy']:.3f}  validation {m.get('validation_accuracy', float('nan')):.3f}{note}")


@app.command()
def roundtrip(
    questions: int = typer.Option(16, help="synthetic questions to write"),
    name: str = typer.Option("roundtrip", help="snapshot name"),
) -> None:
    """Write a small synthetic Gen-Data set (no models) to the catalog, commit it twice (the second
    adds nothing), snapshot it, verify it and load it back with `datasets`."""
    from catalog import Catalog
    from catalog.snapshots import create_snapshot
    from masters.synthetic_gendata import synthetic_gendata
    from schemas.snapshot import verify_snapshot

    tables, reward_config = synthetic_gendata(num_questions=questions)
    with Catalog.open(State.config()) as cat:
        for attempt in (1, 2):
            with cat.commit("synthetic gen-data (roundtrip)", stage="roundtrip") as tx:
                for table_name, table in tables.items():
                    tx.append(table_name, table)
            added = sum(tx.result.added.values())
            skipped = sum(tx.result.skipped.values())
            typer.echo(f"commit {attempt}: version {tx.result.version}, {added} rows added, "
                       f"{skipped} already present")
        info = create_snapshot(cat, name, reward_config.id, progress=False)
    verify_snapshot(info.path)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets

    ds = datasets.load_dataset(str(info.path), split="train")
    typer.echo(f"snapshot {info.name} at {info.path}: verified, loads with datasets "
               f"({ds.num_rows} rows, image: {type(ds[0]['image']).__name__})")


# --- the loop -------------------------------------------------------------------------------


def _load_run_config(path: str):
    from masters.run_config import load_run_config

    return load_run_config(path)


@app.command()
def validate(config: str = typer.Argument(..., help="run config YAML")) -> None:
    """Check a run config without running anything (unknown keys and bad values are named)."""
    cfg = _load_run_config(config)
    ladder = ", ".join(f"{t.model} from iteration {t.start}" for t in cfg.teachers)
    typer.echo(f"{config}: valid. run {cfg.run_id}: {cfg.iterations} iterations, mask ratios "
               f"{cfg.schedule.ratios()}, teachers {ladder}, {cfg.teacher_responses}+{cfg.student_responses} "
               f"responses per question, judge {cfg.judge.kind}, Gen-Data "
               + (f"on Ray, {cfg.production.shards} shards" if cfg.production.launcher == "ray" else "inline"))


def _run_and_report(cfg, html: Optional[str], png: Optional[str], through: Optional[int] = None) -> None:
    from catalog import Catalog
    from masters.loop import run
    from masters.plan import run_dir
    from masters.report import build_report, render_png

    with Catalog.open(State.config()) as cat:
        result = run(cfg, cat, progress=True, report=lambda s: typer.echo(s.line()), through=through)
        out = Path(html) if html else run_dir(cfg, cat.config) / "report.html"
        page = build_report(cat, cfg.run_id, out)
        measured = cat.sql("SELECT e.model_id, e.accuracy, m.name, m.role FROM evaluations e LEFT JOIN "
                           "(SELECT DISTINCT model_id, name, role FROM models) m USING (model_id) "
                           "WHERE e.run_id = $r AND e.iteration IS NULL", params={"r": cfg.run_id}).to_pylist()
    _accuracy_table(result, measured)
    if result.iterations and len(result.iterations) == cfg.iterations:
        from masters.plan import resolve_model
        from schemas import ids

        last = ids.checkpoint_id(resolve_model(cfg.teachers[-1].model, progress=False))
        largest = next((m for m in measured if m["model_id"] == last), None)
        start, final = result.start_accuracy["accuracy"], result.iterations[-1].accuracy
        if largest and largest["accuracy"] > start:
            typer.echo(f"gap to teacher {largest['name']} closed: {(final - start) / (largest['accuracy'] - start):.0%} "
                       f"({start:.3f} -> {final:.3f}, teacher {largest['accuracy']:.3f})")
    typer.echo(f"report: {page}")
    if png:
        typer.echo(f"report rendered: {render_png(page, Path(png))}")
    typer.echo(f"final student: {result.final_student} ({result.seconds:.0f} s)")


def _accuracy_table(result, measured: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"held-out accuracy, run {result.run_id}")
    for col in ("model", "mask ratio", "teacher", "accuracy"):
        table.add_column(col, justify="left" if col == "model" else "right")
    table.add_row("starting student", "", "", f"{result.start_accuracy['accuracy']:.3f}")
    for s in result.iterations:
        table.add_row(f"student after iteration {s.iteration}", f"{s.mask_ratio:.2f}", s.teacher,
                      f"{s.accuracy:.3f}")
    for m in sorted(measured, key=lambda m: (m["role"] != "teacher", m["accuracy"])):
        name = m["name"] or m["model_id"][:12]
        label = f"teacher {name} (unmasked)" if m["role"] == "teacher" else (
            "ceiling (the student's architecture, SFT on ground truth)" if name == "ceiling" else name)
        table.add_row(label, "", "", f"{m['accuracy']:.3f}")
    Console().print(table)


@app.command("run")
def run_cmd(
    config: str = typer.Argument(..., help="run config YAML (see configs/run/*.yaml)"),
    report: Optional[str] = typer.Option(None, "--report", help="report HTML path (default: <run dir>/report.html)"),
    png: Optional[str] = typer.Option(None, "--png", help="also render the report to this PNG (headless Chromium)"),
    through: Optional[int] = typer.Option(None, "--through", help="stop after this iteration (0-based): e.g. "
                                          "between `masters worker` jobs producing each iteration's Gen-Data"),
) -> None:
    """Run the Masters loop (or resume it: what the catalog holds is not done again)."""
    _run_and_report(_load_run_config(config), report, png, through)


WORKER_STAGES = {"generate": ("iteration", "generate-teacher", "generate-student"),
                 "all": ("iteration", "generate-teacher", "generate-student", "score", "judge", "rewards")}


@app.command()
def worker(
    stage_name: str = typer.Argument(..., metavar="STAGE", help="generate (register + teacher + student), score, "
                                     "judge, rewards, or all (every stage of the iteration, in order); or one stage: "
                                     "iteration, generate-teacher, generate-student"),
    run_config: str = typer.Option(..., "--run", help="the run config YAML (the same file every shard reads)"),
    iteration: int = typer.Option(..., "--iteration", "-i", help="the iteration (0-based)"),
    shard: str = typer.Option("0/1", "--shard", help="K/N: this process does shard K (0..N-1) of N"),
) -> None:
    """One shard of one iteration's Gen-Data, for schedulers other than Ray (a SLURM array task,
    a Kubernetes job): ask the catalog what this shard still lacks, produce it, commit each batch.
    Shards never overlap (a stable hash of each question) and a re-run does only what is missing.
    Several workers at once need a catalog several processes may write (ducklake:sqlite:,
    ducklake:postgres:); `masters run` with the same config then finds the stages done and goes on."""
    from catalog import Catalog
    from masters.loop import _counted, ensure_questions
    from masters.plan import RunPlan
    from masters.production import InlineLauncher
    from masters.stages import Shard, stage, stage_scope

    names = WORKER_STAGES.get(stage_name, (stage_name,))
    try:
        stages = [stage(n) for n in names]
    except KeyError:
        raise MastersError(f"unknown stage {stage_name!r}: use generate, score, judge, rewards or all "
                           "(or iteration, generate-teacher, generate-student)") from None
    sh = Shard.parse(shard)
    cfg = _load_run_config(run_config)
    if not 0 <= iteration < cfg.iterations:
        raise MastersError(f"--iteration {iteration}: run {cfg.run_id} has iterations 0..{cfg.iterations - 1}")
    with Catalog.open(State.config()) as cat:
        plan = RunPlan.build(cfg, cat.config, progress=False)
        scope = plan.scope(iteration)
        ensure_questions(cat, cfg)
        cat.delete_orphaned_files()  # files older than an hour that no version references
        launcher = InlineLauncher(sh, progress=sys.stderr.isatty(), threads=cfg.production.threads_per_shard)
        try:
            for s in stages:
                res = launcher.run(s, cat, stage_scope(s, scope))
                added = ", ".join(f"+{n} {t}" for t, n in res.added.items() if n) or "nothing new"
                added += "".join(f", {_counted(n, what)}" for what, n in res.left_out.items() if n)
                typer.echo(f"{s.name} it{iteration} shard {sh}: {res.units} units, {added}, "
                           f"{len(res.versions)} commits ({res.seconds:.1f} s)")
        finally:
            launcher.close()


@app.command()
def demo(
    iterations: Optional[int] = typer.Option(None, help="iterations (default 5)"),
    report: Optional[str] = typer.Option(None, "--report", help="report HTML path"),
    png: Optional[str] = typer.Option(None, "--png", help="also render the report to this PNG (headless Chromium)"),
) -> None:
    """The embedded default end to end on CPU: tiny ladder, synthetic visual QA, rule judge, five
    iterations of masked-teacher Gen-Data and offline GRPO, an accuracy table and a report."""
    from masters.demo import demo_config

    cfg = demo_config(iterations=iterations)
    if iterations is not None:
        cfg = cfg.model_copy(update={"run_id": f"demo-{iterations}"})
    _run_and_report(cfg, report, png)


@app.command("eval")
def eval_cmd(
    checkpoint: str = typer.Argument(..., help="checkpoint folder or ladder:<member>"),
    split: str = typer.Option("test", help="question split in the catalog"),
    judge_name: str = typer.Option("rule", "--judge", help="judge kind (rule, exact, numeric, choice, llm)"),
    judge_config: Optional[str] = typer.Option(None, "--judge-config", help="judge parameters (JSON or YAML file)"),
    limit: Optional[int] = typer.Option(None, help="at most this many questions"),
    max_new_tokens: int = typer.Option(8, help="answer length limit (greedy)"),
) -> None:
    """Held-out accuracy of a checkpoint, overall and per question type, judged like the loop."""
    from catalog import Catalog
    from masters.evaluate import evaluate
    from gendata.questions import QuestionSet
    from masters.plan import resolve_model
    from masters.stages.queries import split_questions

    folder = resolve_model(checkpoint)
    judge = _make_judge(judge_name, judge_config)
    with Catalog.open_read_only(State.config()) as cat:
        qs = QuestionSet(*split_questions(cat, split, limit))
    if qs.questions.num_rows == 0:
        raise MastersError(f"the catalog has no {split!r} questions")
    res = evaluate(folder, qs, max_new_tokens=max_new_tokens, progress=True, judge=judge)
    typer.echo(f"{folder}: accuracy {res.accuracy:.3f} on {res.n} {split} questions (judge {judge.kind})")
    for qtype, acc in res.per_type.items():
        typer.echo(f"  {qtype:<16} {acc:.3f}")


@app.command("report")
def report_cmd(
    run_id: str = typer.Argument(..., help="the run to report on"),
    out: str = typer.Option("report.html", "--out", help="HTML path"),
    png: Optional[str] = typer.Option(None, "--png", help="also render it to this PNG (headless Chromium)"),
) -> None:
    """Write the HTML report of a run from the catalog."""
    from catalog import Catalog
    from masters.report import build_report, render_png

    with Catalog.open_read_only(State.config()) as cat:
        page = build_report(cat, run_id, Path(out))
    typer.echo(f"report: {page}")
    if png:
        typer.echo(f"rendered: {render_png(page, Path(png))}")


@app.command()
def ablate(
    config: Optional[str] = typer.Option(None, "--config", help="run config to ablate (default: the demo's)"),
    seeds: str = typer.Option("0,1,2,3,4", help="comma-separated seeds"),
    steps: int = typer.Option(40, help="optimizer steps per iteration for every trained arm (equal budget)"),
    iterations: Optional[int] = typer.Option(None, help="iterations (default: the config's)"),
    arms: str = typer.Option(",".join(("base", "naive", "progressive", "masters", "masters-one-teacher",
                                       "sft-ground-truth")), help="comma-separated arms"),
    sweep_: list[str] = typer.Option([], "--sweep", help="instead of the arms, the full loop at each value of "
                                     "a setting: KEY=V1,V2,... (repeatable), e.g. reward.w_distill=0,0.5,1,2, "
                                     "responses=2+2,4+4, mask.r_max=0.2,0.4, reward.divergence=jsd,kl_forward, "
                                     "judge=rule,exact"),
    set_: list[str] = typer.Option([], "--set", help="override a run-config setting, KEY=VALUE (repeatable)"),
    report: Optional[str] = typer.Option(None, "--report", help="report HTML path"),
) -> None:
    """The paper's comparisons on the embedded task at equal training budget over several seeds:
    base student / naive distillation / mask-progressive without rewards / full Masters / ladder
    vs one large teacher / SFT on ground truth (upper bound). Prints each arm's mean with its 95%
    interval and the paired differences of the paper's ordering, and writes them into the report.
    With --sweep: one setting's values instead of the arms."""
    from catalog import Catalog
    from masters.ablate import ARMS, ablate as run_ablation
    from masters.demo import demo_config
    from masters.plan import run_dir
    from masters.report import build_report
    from masters.sweep import parse_sweep, sweep as run_sweep, with_value

    base = _load_run_config(config) if config else demo_config(run_id="ablate")
    if iterations:
        base = base.model_copy(update={"iterations": iterations, "mask": None})
    for key, value in _assignments(set_, "--set").items():
        base = with_value(base, key, value, where="--set")
    try:
        seed_list = [int(x) for x in seeds.split(",") if x.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {seeds!r}: write comma-separated integers, e.g. 0,1,2") from None
    arm_list = tuple(a.strip() for a in arms.split(",") if a.strip())
    unknown = [a for a in arm_list if a not in ARMS]
    if unknown or not seed_list:
        raise MastersError(f"arms must be among {', '.join(ARMS)} (got {unknown}) and seeds non-empty")
    sweeps = [parse_sweep(s) for s in sweep_]
    result, swept = None, []
    with Catalog.open(State.config()) as cat:
        if sweeps:
            for key, values in sweeps:
                swept.append(run_sweep(cat, base, key, values, seed_list, steps, progress=True,
                                       on_result=lambda v, sd, acc, k=key: typer.echo(
                                           f"{k}={v} seed {sd}: accuracy {acc:.3f}")))
        else:
            result = run_ablation(cat, base, seed_list, steps, arm_list, progress=True,
                                  on_result=lambda a, sd, acc: typer.echo(f"{a} seed {sd}: accuracy {acc:.3f}"))
        page = None
        shown = (f"{base.run_id}-masters-i{base.iterations}-k{steps}-s{seed_list[0]}"
                 if (result and "masters" in arm_list) or any(s["replays_gendata"] for s in swept)
                 else swept[0]["points"][0]["run_ids"][0] if swept else None)
        if shown:
            out = Path(report) if report else run_dir(base, cat.config).parent / f"{base.run_id}-report.html"
            page = build_report(cat, shown, out, ablation=result, sweeps=swept,
                                title=f"masters-distill ablations ({base.run_id})")
    ci = lambda x: "" if x is None else f" +- {x:.3f}"  # noqa: E731
    if result:
        typer.echo(result["note"])
        for a in result["arms"]:
            typer.echo(f"  {a['arm']:<22} {a['mean']:.3f}{ci(a['ci95'])}   per seed "
                       + ", ".join(f"{x:.3f}" for x in a["per_seed"]))
        for p in result["pairs"]:
            typer.echo(f"  {p['first']} - {p['second']}: {p['mean']:+.3f}{ci(p['ci95'])} (paired, {p['n']} seeds): "
                       f"{p['verdict']}")
        typer.echo(f"results: {result['path']} ({result['seconds']:.0f} s)")
    for s in swept:
        typer.echo(s["note"])
        for p in s["points"]:
            typer.echo(f"  {s['key']}={p['value']:<10} {p['mean']:.3f}{ci(p['ci95'])}   per seed "
                       + ", ".join(f"{x:.3f}" for x in p["per_seed"]))
        typer.echo(f"results: {s['path']} ({s['seconds']:.0f} s)")
    if page:
        typer.echo(f"report: {page}")


# --- the Hub --------------------------------------------------------------------------------


@app.command()
def export(
    snapshot: str = typer.Argument(..., help="snapshot name (under the catalog's snapshot root) or folder"),
    out: str = typer.Option(..., "--out", help="folder to write (replaced if it exists)"),
    with_token_stats: bool = typer.Option(False, "--with-token-stats", help="include the per-token summaries"),
    license_: str = typer.Option("other", "--license", help="license in the dataset card"),
) -> None:
    """Write a snapshot as a Hub dataset folder (one config per table, card, masters.yaml)."""
    from catalog import Catalog
    from catalog.hub_export import export_for_hub

    with Catalog.open_read_only(State.config()) as cat:
        res = export_for_hub(cat, snapshot, out, with_token_stats=with_token_stats, license=license_)
    typer.echo(f"{res.folder}: " + ", ".join(f"{c} {n}" for c, n in res.row_counts.items()))


@app.command()
def publish(
    snapshot: str = typer.Argument(..., help="snapshot name or folder"),
    repo: str = typer.Option(..., "--repo", help="Hub dataset repository OWNER/NAME"),
    private: bool = typer.Option(False, "--private", help="create the repository private"),
    revision: Optional[str] = typer.Option(None, "--revision", help="publish to this branch instead of "
                                           "replacing main (created if needed)"),
    with_token_stats: bool = typer.Option(False, "--with-token-stats", help="include the per-token summaries "
                                          "(large; needed to re-score the distillation reward after import)"),
    license_: str = typer.Option("other", "--license", help="license in the dataset card"),
) -> None:
    """Publish a snapshot to the Hugging Face Hub as a dataset (one commit; none if already there).
    The token comes from HF_TOKEN or `hf auth login`."""
    import tempfile

    from catalog import Catalog
    from catalog.hub_export import export_for_hub
    from catalog.publish import publish_folder

    with tempfile.TemporaryDirectory(prefix="masters-publish-") as tmp:
        with Catalog.open_read_only(State.config()) as cat:
            res = export_for_hub(cat, snapshot, Path(tmp) / "export", with_token_stats=with_token_stats,
                                 license=license_)
        typer.echo("exported: " + ", ".join(f"{c} {n}" for c, n in res.row_counts.items()))
        out = publish_folder(res.folder, repo, private=private, revision=revision)
    if out.changed:
        typer.echo(f"published {res.snapshot} to {repo}@{out.revision}: commit {out.commit} ({out.url})")
    else:
        typer.echo(f"{repo}@{out.revision} already holds snapshot {res.snapshot}: nothing to publish")


@app.command("import")
def import_cmd(
    source: str = typer.Argument(..., help="a Hub dataset OWNER/NAME, or a local folder of one"),
    revision: Optional[str] = typer.Option(None, "--revision", help="branch or commit on the Hub"),
) -> None:
    """Load a published Gen-Data dataset into the catalog (one commit; re-importing adds nothing)."""
    import tempfile

    from catalog import Catalog
    from catalog.hub_import import import_gendata
    from catalog.publish import fetch_published

    with tempfile.TemporaryDirectory(prefix="masters-import-") as tmp:
        folder = Path(source) if Path(source).is_dir() else fetch_published(source, Path(tmp) / "d",
                                                                           revision=revision)
        with Catalog.open(State.config()) as cat:
            res = import_gendata(cat, folder, source)
    added = ", ".join(f"{t} +{n}" for t, n in res.added.items() if n)
    skipped = sum(res.skipped.values())
    typer.echo(f"imported {source}: version {res.version}; {added or 'nothing new'}"
               + (f"; {skipped} rows already present" if skipped else ""))


if __name__ == "__main__":
    app()
