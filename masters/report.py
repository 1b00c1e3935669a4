"""The run report: one self-contained HTML page (PNG plots inlined as data URIs) built from the
catalog alone: accuracy per iteration beside the teachers and the starting student, reward and
divergence distributions per source and iteration, the mask schedule, judge verdict counts, the
responses left out of training (empty ones, skipped groups), the catalog versions the run produced, and the ablation table (with 95% intervals and the paired
differences of the paper's ordering) and sweeps when there are any. `render_png`
screenshots it with headless Chromium (to check how it looks, or to attach it elsewhere)."""

from __future__ import annotations

import base64
import html
import io
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from catalog import Catalog  # noqa: E402
from masters.mismatch import logprob_mismatch  # noqa: E402
from masters.stages.queries import EMPTY, MIN_GROUP  # noqa: E402
from schemas.errors import MastersError  # noqa: E402

COLOURS = {"teacher": "#c0392b", "student": "#2874a6"}


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _table(headers: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return "" if v is None else str(v)


def report_data(catalog: Catalog, run_id: str) -> dict:
    q = catalog.sql
    iters = q("SELECT iteration, iteration_id, mask_ratio, teacher_model_id, student_model_id FROM iterations "
              "WHERE run_id = $r ORDER BY iteration", params={"r": run_id}).to_pylist()
    if not iters:
        raise MastersError(f"the catalog has no run {run_id!r}; runs: "
                           + (", ".join(q("SELECT DISTINCT run_id FROM iterations ORDER BY 1").column(0).to_pylist())
                              or "none yet"))
    names = {r["model_id"]: r["name"] for r in q("SELECT model_id, name FROM models").to_pylist()}
    all_evals = q("SELECT e.model_id, e.iteration, e.accuracy, e.per_type, e.n, e.split FROM evaluations e "
                  "WHERE e.run_id = $r ORDER BY e.iteration, e.created_at", params={"r": run_id}).to_pylist()
    evals = [e for e in all_evals if e["iteration"] is not None]
    roles = {r["model_id"]: r["role"] for r in q("SELECT model_id, role FROM models").to_pylist()}
    teachers = {names.get(e["model_id"], e["model_id"][:12]): e["accuracy"] for e in all_evals
                if e["iteration"] is None and roles.get(e["model_id"]) == "teacher"}
    # the reward config the run's snapshots carry (a later re-scoring of the run adds others)
    rewards = q("SELECT it.iteration, r.source, w.reward, w.divergence, w.r_acc FROM rewards w "
                "JOIN responses r USING (response_id, iteration_id) JOIN iterations it USING (iteration_id) "
                "WHERE it.run_id = $r AND w.reward_config_id IN (SELECT s.reward_config_id FROM snapshots s "
                "JOIN iterations i2 ON i2.iteration_id = s.iteration_id WHERE i2.run_id = $r)",
                params={"r": run_id}).to_pylist()
    verdicts = q("SELECT it.iteration, r.source, v.state, v.score, count(*) AS n FROM verdicts v "
                 "JOIN responses r USING (response_id, iteration_id) JOIN iterations it USING (iteration_id) "
                 "WHERE it.run_id = $r GROUP BY ALL ORDER BY ALL", params={"r": run_id}).to_pylist()
    # per iteration: responses, the empty ones, groups with too few non-empty members (queries.EMPTY)
    left = q(f"SELECT it.iteration, count(*) AS responses, count(*) FILTER (WHERE {EMPTY}) AS empty "
             "FROM responses r JOIN iterations it USING (iteration_id) WHERE it.run_id = $r GROUP BY ALL ORDER BY 1",
             params={"r": run_id}).to_pylist()
    skipped = q(f"SELECT it.iteration, count(*) AS n FROM (SELECT iteration_id, group_id FROM responses "
                f"GROUP BY ALL HAVING count(*) FILTER (WHERE NOT ({EMPTY})) < {MIN_GROUP}) g "
                "JOIN iterations it USING (iteration_id) WHERE it.run_id = $r GROUP BY ALL",
                params={"r": run_id}).to_pylist()
    rewarded = q("SELECT it.iteration, count(DISTINCT w.response_id) AS n FROM rewards w JOIN iterations it "
                 "USING (iteration_id) WHERE it.run_id = $r AND w.reward_config_id IN (SELECT s.reward_config_id "
                 "FROM snapshots s JOIN iterations i2 ON i2.iteration_id = s.iteration_id WHERE i2.run_id = $r) "
                 "GROUP BY ALL", params={"r": run_id}).to_pylist()
    skipped_by = {r["iteration"]: r["n"] for r in skipped}
    rewarded_by = {r["iteration"]: r["n"] for r in rewarded}
    left_out = [{**r, "groups_skipped": skipped_by.get(r["iteration"], 0),
                 "rewarded": rewarded_by.get(r["iteration"], 0)} for r in left]
    snaps = q("SELECT s.name, s.catalog_version, s.num_rows, s.manifest_sha256 FROM snapshots s "
              "JOIN iterations it ON it.iteration_id = s.iteration_id WHERE it.run_id = $r "
              "ORDER BY s.catalog_version", params={"r": run_id}).to_pylist()
    versions = [v for v in catalog.versions() if v.rows_added]
    return {"run_id": run_id, "iterations": iters, "names": names, "evals": evals, "teachers": teachers,
            "rewards": rewards, "mismatch": logprob_mismatch(catalog, run_id),
            "verdicts": verdicts, "snapshots": snaps, "versions": versions, "left_out": left_out}


def _accuracy_plot(data: dict, teachers: dict[str, float]) -> str:
    evals = sorted(data["evals"], key=lambda e: e["iteration"])
    xs = [e["iteration"] + 1 for e in evals]
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    ax.plot(xs, [e["accuracy"] for e in evals], "o-", color=COLOURS["student"], label="student")
    for i, (name, acc) in enumerate(sorted(teachers.items(), key=lambda kv: kv[1])):
        ax.axhline(acc, ls="--", lw=1, color=plt.cm.Reds(0.45 + 0.2 * i), label=f"teacher {name}")
    ax.set_xlabel("iterations completed (0 = the starting student)")
    ax.set_ylabel("held-out accuracy")
    ax.set_xticks(xs)
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return _png(fig)


def _sweep_plot(sweep: dict) -> str:
    """Held-out accuracy per swept value, with 95% intervals (when there are several seeds)."""
    points = sweep["points"]
    xs = list(range(len(points)))
    fig, ax = plt.subplots(figsize=(5.2, 3.0))
    err = [p["ci95"] or 0.0 for p in points]
    ax.errorbar(xs, [p["mean"] for p in points], yerr=err, fmt="o-", color=COLOURS["student"], capsize=4)
    for p, x in zip(points, xs):
        ax.plot([x] * len(p["per_seed"]), p["per_seed"], ".", color="#999")
    ax.set_xticks(xs, [p["value"] for p in points])
    ax.set_xlabel(sweep["key"])
    ax.set_ylabel("held-out accuracy")
    ax.grid(alpha=0.3)
    return _png(fig)


def ablation_section(ablation: dict | None, sweeps: list[dict]) -> list[str]:
    """The ablation table (mean, 95% interval, per seed), the paired differences of the paper's
    ordering with their verdicts, and each sweep as a table and a plot."""
    parts = []
    if ablation:
        parts += ["<h2>Ablations</h2>", f"<p class=muted>{html.escape(ablation.get('note', ''))}</p>",
                  _table(["arm", "mean accuracy", "95% interval", "seeds", "per seed"],
                         [[a["arm"], a["mean"], _interval(a), len(a["per_seed"]),
                           ", ".join(f"{x:.3f}" for x in a["per_seed"])] for a in ablation["arms"]])]
        if ablation.get("pairs"):
            parts += ["<h3>The paper's ordering, paired by seed</h3>",
                      _table(["claim", "mean difference", "95% interval", "seeds", "verdict"],
                             [[f"{p['first']} > {p['second']}", p["mean"], _interval(p), p["n"], p["verdict"]]
                              for p in ablation["pairs"]])]
    for sweep in sweeps:
        parts += [f"<h2>Sweep: {html.escape(sweep['key'])}</h2>", f"<p class=muted>{html.escape(sweep['note'])}</p>",
                  _table([sweep["key"], "mean accuracy", "95% interval", "per seed", "run ids"],
                         [[p["value"], p["mean"], _interval(p), ", ".join(f"{x:.3f}" for x in p["per_seed"]),
                           ", ".join(p["run_ids"])] for p in sweep["points"]]),
                  f"<img src='{_sweep_plot(sweep)}' alt='sweep of {html.escape(sweep['key'])}'>"]
    return parts


def _interval(row: dict) -> str:
    return "" if row.get("ci95") is None else f"[{row['low']:.3f}, {row['high']:.3f}]"


def _distribution_plot(data: dict, field: str, label: str) -> str:
    iters = sorted({r["iteration"] for r in data["rewards"]})
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    width = 0.38
    for k, source in enumerate(("teacher", "student")):
        vals = [[r[field] for r in data["rewards"] if r["iteration"] == i and r["source"] == source
                 and r[field] is not None] for i in iters]
        pos = [i + (k - 0.5) * width for i in iters]
        keep = [(p, v) for p, v in zip(pos, vals) if v]
        if keep:
            bp = ax.boxplot([v for _, v in keep], positions=[p for p, _ in keep], widths=width * 0.9,
                            patch_artist=True, manage_ticks=False)
            for patch in bp["boxes"]:
                patch.set_facecolor(COLOURS[source])
                patch.set_alpha(0.55)
            ax.plot([], [], "s", color=COLOURS[source], alpha=0.55, label=source)
    ax.set_xticks(iters)
    ax.set_xlabel("iteration")
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _schedule_plot(data: dict) -> str:
    its = data["iterations"]
    fig, ax = plt.subplots(figsize=(6.4, 2.6))
    ax.plot([r["iteration"] for r in its], [r["mask_ratio"] for r in its], "o-", color="#7d3c98")
    ax.set_ylim(-0.01, max(0.05, max(r["mask_ratio"] for r in its)) * 1.3)
    for r in its:
        ax.annotate(data["names"].get(r["teacher_model_id"], "?"), (r["iteration"], r["mask_ratio"]),
                    textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    ax.set_xlabel("iteration")
    ax.set_ylabel("teacher mask ratio")
    ax.set_xticks([r["iteration"] for r in its])
    ax.grid(alpha=0.3)
    return _png(fig)


def _verdict_plot(data: dict) -> str:
    iters = sorted({v["iteration"] for v in data["verdicts"]})
    cats = [("correct", lambda v: v["state"] == "ok" and v["score"] == 1),
            ("wrong", lambda v: v["state"] == "ok" and v["score"] != 1),
            ("unparseable", lambda v: v["state"] == "unparseable"),
            ("error", lambda v: v["state"] == "error")]
    colours = ["#27ae60", "#e67e22", "#95a5a6", "#c0392b"]
    fig, ax = plt.subplots(figsize=(6.4, 3.0))
    labels = [f"{i}/{s[0]}" for i in iters for s in ("teacher", "student")]
    bottom = [0] * len(labels)
    for (name, pred), colour in zip(cats, colours):
        counts = [sum(v["n"] for v in data["verdicts"] if v["iteration"] == i and v["source"] == s and pred(v))
                  for i in iters for s in ("teacher", "student")]
        ax.bar(labels, counts, bottom=bottom, color=colour, label=name)
        bottom = [b + c for b, c in zip(bottom, counts)]
    ax.set_xlabel("iteration / source (t = masked teacher, s = student)")
    ax.set_ylabel("verdicts")
    ax.set_ylim(0, max(bottom + [1]) * 1.3)
    ax.legend(fontsize=8, ncol=4, loc="upper center")
    return _png(fig)


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:980px;margin:24px auto;
color:#222;padding:0 16px}h1{font-size:1.5em}h2{font-size:1.15em;margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;
text-align:right}th{background:#f4f6f7}td:first-child,th:first-child{text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:8px}.grid img{max-width:480px}.muted{color:#777;font-size:.85em}"""


def build_report(catalog: Catalog, run_id: str, out: Path, *, ablation: dict | None = None,
                 sweeps: list[dict] | None = None, title: str | None = None) -> Path:
    """Write the report to ``out`` (an .html file) and return its path."""
    data = report_data(catalog, run_id)
    teachers = data["teachers"]
    evals = sorted(data["evals"], key=lambda e: e["iteration"])
    acc_rows = [["starting student" if e["iteration"] == -1 else f"student after iteration {e['iteration']}",
                 data["names"].get(e["model_id"], e["model_id"][:12]), e["accuracy"], e["n"]] for e in evals]
    acc_rows += [[f"teacher {k}", k, v, None] for k, v in sorted(teachers.items())]
    types = sorted({t for e in evals for t in json.loads(e["per_type"])})
    type_rows = [[("start" if e["iteration"] == -1 else f"iter {e['iteration']}")]
                 + [json.loads(e["per_type"]).get(t) for t in types] for e in evals]
    it_rows = [[r["iteration"], r["mask_ratio"], data["names"].get(r["teacher_model_id"], "?"),
                data["names"].get(r["student_model_id"], "?")] for r in data["iterations"]]
    snap_rows = [[s["name"], s["catalog_version"], s["num_rows"], s["manifest_sha256"][:16]] for s in data["snapshots"]]
    ver_rows = [[v.version, str(v.time)[:19], v.message or "",
                 ", ".join(f"{t} +{n}" for t, n in sorted(v.rows_added.items()))] for v in data["versions"]]
    parts = [f"<h1>{html.escape(title or 'masters-distill run ' + run_id)}</h1>",
             f"<p class=muted>run <b>{html.escape(run_id)}</b>: {len(data['iterations'])} iterations, "
             f"{sum(s['num_rows'] for s in data['snapshots'])} training rows in {len(data['snapshots'])} snapshots. "
             "Everything on this page was read from the Gen-Data catalog.</p>",
             "<h2>Held-out accuracy</h2>", _table(["model", "checkpoint", "accuracy", "questions"], acc_rows),
             f"<img src='{_accuracy_plot(data, teachers)}' alt='accuracy per iteration'>",
             "<h3>Per question type</h3>", _table(["model"] + types, type_rows)]
    parts += ablation_section(ablation, sweeps or [])
    parts += ["<h2>Rewards and divergence</h2><div class=grid>",
              f"<img src='{_distribution_plot(data, 'reward', 'reward R')}' alt='reward distribution'>",
              f"<img src='{_distribution_plot(data, 'divergence', 'divergence D (JSD, per token)')}' "
              "alt='divergence distribution'></div>",
              "<h2>Mask schedule and teachers</h2>",
              f"<img src='{_schedule_plot(data)}' alt='mask schedule'>",
              _table(["iteration", "mask ratio", "teacher", "student"], it_rows),
              "<h2>Judge verdicts</h2>", f"<img src='{_verdict_plot(data)}' alt='verdict counts'>",
              "<h2>Responses left out</h2>",
              "<p class=muted>An empty response (its engine emitted no token, e.g. an immediate end of sequence) "
              "is not scored and gets no reward: its group is rewarded over its other members, and a group left "
              f"with fewer than {MIN_GROUP} non-empty responses is skipped. Responses without a reward row "
              "otherwise had an unparseable verdict.</p>",
              _table(["iteration", "responses", "empty (no token)", f"groups skipped (< {MIN_GROUP} non-empty)",
                      "rewarded"], [[r["iteration"], r["responses"], r["empty"], r["groups_skipped"], r["rewarded"]]
                                    for r in data["left_out"]]),
              "<h2>Behaviour vs teacher-forced log-probs</h2>",
              "<p class=muted>Per token, |log-prob the generating engine gave - log-prob the scoring pass computed "
              "for the same model| (the train/inference mismatch; teacher log-probs are stored to 0.001 nats).</p>",
              _table(["iteration", "source", "responses", "tokens", "mean |Δ|", "max |Δ|"],
                     [[m["iteration"], m["source"], m["responses"], m["tokens"], f"{m['mean_abs']:.2e}",
                       f"{m['max_abs']:.2e}"] for m in data["mismatch"]])
              if data["mismatch"] else "<p class=muted>No engine log-probs stored for this run.</p>",
              "<h2>Snapshots and catalog versions</h2>", _table(["snapshot", "catalog version", "rows", "manifest sha256"],
                                                               snap_rows),
              "<details><summary>catalog versions</summary>",
              _table(["version", "time", "message", "rows added"], ver_rows), "</details>"]
    page = f"<!doctype html><html><head><meta charset=utf-8><title>{html.escape(run_id)}</title>" \
           f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page)
    return out


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def render_png(page: Path, png: Path, width: int = 1100, height: int = 3200) -> Path:
    """Screenshot the report with headless Chromium (no network, no GPU)."""
    exe = chromium()
    if exe is None:
        raise MastersError("no Chromium found to render the report (install the `chromium` package)")
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                               "--disable-background-networking", "--no-first-run", "--disable-extensions",
                               f"--user-data-dir={profile}", f"--window-size={width},{height}",
                               f"--screenshot={Path(png).absolute()}", Path(page).absolute().as_uri()],
                              capture_output=True, text=True, timeout=120)
    if proc.returncode != 0 or not Path(png).is_file():
        raise MastersError(f"Chromium could not render {page}: {proc.stderr[-500:]}")
    return Path(png)
