"""Swap judges and re-score without regenerating or retraining: verdicts computed only when
missing, reward rows appended under a new config id in one commit, no backend called, every
response file byte-identical."""

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from masters.cli import app
from rewards.judges import JUDGES, RuleJudge

runner = CliRunner()


def digest_tree(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def no_backends(filled_catalog):
    """No backend can run on this catalog: every checkpoint it names (the synthetic models' paths)
    is missing, so generating or scoring would fail loading its model (load_vlm raises OSError).
    Nothing is patched: re-scoring must simply never need a model."""
    cat, _, _ = filled_catalog
    paths = cat.read("models", columns=["path"]).column("path").to_pylist()
    assert paths and not any(Path(p).exists() for p in paths)


@pytest.fixture
def spy_judge(monkeypatch):
    calls = []

    def factory():
        j = RuleJudge("spy", lambda i: i.response.strip() or None, lambda x, i: x.lower() == i.answer.lower())
        real = j.judge

        def judge(items):
            calls.append(len(items))
            return real(items)
        j.judge = judge
        return j

    monkeypatch.setitem(JUDGES, "spy", factory)
    return calls


def invoke(cat_dir, *args):
    return runner.invoke(app, ["--catalog", str(cat_dir), *args], catch_exceptions=False)


def test_rescore_touches_no_response_and_calls_no_backend(filled_catalog, catalog_dir, no_backends, spy_judge):
    cat, tables, old_config = filled_catalog
    before_version = cat.current_version()
    cat.close()
    responses_dir = catalog_dir / "data" / "main" / "responses"
    stats_dir = catalog_dir / "data" / "main" / "token_stats"
    before = {**digest_tree(responses_dir), **digest_tree(stats_dir)}
    n = tables["responses"].num_rows

    out = invoke(catalog_dir, "rescore", "--judge", "spy", "--reward-config",
                 '{"divergence": "kl_forward", "w_distill": 0.5}', "--snapshot", "rescored")
    assert out.exit_code == 0, out.output
    assert spy_judge == [n]  # every response judged once...
    assert f"{n} reward rows added" in out.output and "snapshot rescored" in out.output
    out2 = invoke(catalog_dir, "rescore", "--judge", "spy", "--reward-config",
                  '{"divergence": "kl_forward", "w_distill": 0.5}')
    assert spy_judge == [n] and "0 reward rows added" in out2.output  # ...and never again
    assert {**digest_tree(responses_dir), **digest_tree(stats_dir)} == before  # byte-identical

    from catalog import Catalog

    with Catalog.open_read_only(catalog_dir) as cat:
        versions = [v for v in cat.versions() if v.version > before_version]
        stages = [v.metadata.get("stage") for v in versions]
        assert stages == ["judge", "rescore", "snapshot"]  # rewards + config in ONE commit
        assert versions[1].rows_added == {"reward_configs": 1, "rewards": n}
        configs = cat.sql("SELECT reward_config_id, divergence, w_distill FROM reward_configs "
                          "ORDER BY w_distill").to_pylist()
        assert [c["divergence"] for c in configs] == ["kl_forward", "jsd"]
        new_id = configs[0]["reward_config_id"]
        assert new_id != old_config.id
        assert cat.count("responses") == n and cat.count("rewards") == 2 * n
        # the new rewards follow the new weights: R = r_acc + 0.5 * r_distill
        rows = cat.sql("SELECT r_acc, r_distill, reward FROM rewards WHERE reward_config_id = $c",
                       params={"c": new_id}).to_pylist()
        assert all(abs(r["reward"] - (r["r_acc"] + 0.5 * r["r_distill"])) < 1e-9 for r in rows)
        # and the divergence is the forward KL: 2x the JSD in the synthetic summaries
        d = cat.sql("SELECT avg(w.divergence) FROM rewards w WHERE reward_config_id = $c",
                    params={"c": new_id}).column(0)[0].as_py()
        d_old = cat.sql("SELECT avg(divergence) FROM rewards WHERE reward_config_id = $c",
                        params={"c": old_config.id}).column(0)[0].as_py()
        assert d == pytest.approx(2 * d_old, rel=1e-2)


def test_judge_verb_judges_only_what_is_missing(filled_catalog, catalog_dir, spy_judge):
    cat, tables, _ = filled_catalog
    cat.close()
    first = invoke(catalog_dir, "judge", "--judge", "spy", "--batch-size", "20")
    n = tables["responses"].num_rows
    assert first.exit_code == 0 and spy_judge == [20, 20, n - 40]
    again = invoke(catalog_dir, "judge", "--judge", "spy")
    assert spy_judge == [20, 20, n - 40] and f"0 judged (nothing to judge), {n} already judged" in again.output


def test_bad_reward_config_names_the_key(filled_catalog, catalog_dir):
    cat, _, _ = filled_catalog
    cat.close()
    out = runner.invoke(app, ["--catalog", str(catalog_dir), "rescore", "--reward-config", '{"w_accc": 2}'])
    assert out.exit_code == 2 and "w_accc: unknown key" in out.output
    out = runner.invoke(app, ["--catalog", str(catalog_dir), "rescore", "--judge", "nope"])
    assert out.exit_code == 2 and "unknown judge 'nope'" in out.output


def test_a_response_scored_twice_is_rewarded_once(filled_catalog, catalog_dir):
    import pyarrow as pa

    from masters.rescore import rescore
    from schemas.config import RewardConfig

    cat, tables, config = filled_catalog
    # a second scoring of every response (another scoring run, say): the same summaries under other
    # ids, which sort after the first ones
    again = tables["token_stats"].set_column(0, "stats_id", pa.array(
        ["z" + s[1:] for s in tables["token_stats"].column("stats_id").to_pylist()]))
    assert cat.append("token_stats", again, "scored again").added["token_stats"] == again.num_rows
    new = RewardConfig(judge_id=config.judge_id, w_distill=0.25)
    res = rescore(cat, new)
    assert res.added == tables["responses"].num_rows
    used = cat.sql("SELECT DISTINCT token_stats_id FROM rewards WHERE reward_config_id = $c",
                   params={"c": new.id}).column(0).to_pylist()
    assert sorted(used) == sorted(tables["token_stats"].column("stats_id").to_pylist())  # first by id


def test_the_readme_sql_examples_run(filled_catalog, spy_judge):
    import re
    from pathlib import Path

    from masters.rescore import judge_missing
    from rewards.judges import make_judge

    cat, tables, config = filled_catalog
    judge_missing(cat, make_judge("spy"))
    spy_id = make_judge("spy").judge_id
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = [b for b in re.findall(r"```sql\n(.*?)```", readme, re.DOTALL) if "JUDGE_A" in b or "REWARD_CONFIG" in b]
    assert len(blocks) == 3
    out = [cat.sql(b.replace("JUDGE_A", config.judge_id).replace("JUDGE_B", spy_id)
                   .replace("REWARD_CONFIG", config.id)) for b in blocks]
    assert out[0].column("responses")[0].as_py() == tables["responses"].num_rows
    assert 0 <= out[0].column("agreement")[0].as_py() <= 1
    assert set(out[1].column("source").to_pylist()) == {"teacher", "student"}
    flipped = out[2].num_rows
    agreement = out[0].column("agreement")[0].as_py()
    assert flipped == round((1 - agreement) * tables["responses"].num_rows)


def test_error_verdicts_are_retried_as_new_attempts(filled_catalog, monkeypatch):
    from masters.rescore import judge_missing, rescore
    from rewards.judges import Verdict, make_judge
    from schemas import ids
    from schemas.config import RewardConfig

    cat, tables, _ = filled_catalog
    n = tables["responses"].num_rows
    state = {"fail": True}

    def factory():
        j = make_judge("exact")
        j.kind = "flaky"
        real = j.judge

        def judge(items):
            if state["fail"]:  # e.g. the endpoint was down: every verdict an explicit error
                return [Verdict(None, "error", error="ConnectionError") for _ in items]
            return real(items)
        j.judge = judge
        return j

    monkeypatch.setitem(JUDGES, "flaky", factory)
    flaky = make_judge("flaky")
    first = judge_missing(cat, flaky)
    assert first.states == {"error": n}
    config = RewardConfig(judge_id=flaky.judge_id)
    assert rescore(cat, config).added == 0  # nothing rewarded from errors (never a silent 0)
    state["fail"] = False
    second = judge_missing(cat, flaky)
    assert second.judged == n and second.states.get("ok", 0) + second.states.get("unparseable", 0) == n
    rid = tables["responses"].column("response_id")[0].as_py()
    kept = cat.sql("SELECT verdict_id, state FROM verdicts WHERE response_id = $r AND judge_id = $j ORDER BY state",
                   params={"r": rid, "j": flaky.judge_id}).to_pylist()
    assert [k["state"] for k in kept][0] == "error" and len(kept) == 2  # both attempts are kept
    assert {k["verdict_id"] for k in kept} == {ids.verdict_id(rid, flaky.judge_id), ids.verdict_id(rid, flaky.judge_id, 1)}
    assert judge_missing(cat, flaky).judged == 0
    assert rescore(cat, config).added > 0


def test_a_catalog_of_both_encodings_rescores_and_snapshots(both_encodings_catalog):
    """Iteration 0 scored before fx/2 (its rows fx16/1), iteration 1 after: re-scoring rewards
    both from their own codec, and a snapshot decodes each row from its own."""
    import datasets
    import numpy as np

    from catalog.snapshots import create_snapshot
    from masters.rescore import rescore
    from schemas import token_codec as codec
    from schemas.config import RewardConfig

    cat, made, config = both_encodings_catalog
    new = RewardConfig(judge_id=config.judge_id, divergence="kl_forward", aggregation="sum", w_distill=0.5)
    res = rescore(cat, new)
    assert res.added == sum(t["responses"].num_rows for t in made.values())
    got = {r["response_id"]: r["divergence"] for r in cat.sql(
        "SELECT response_id, divergence FROM rewards WHERE reward_config_id = $c", params={"c": new.id}).to_pylist()}
    for iteration, tables in made.items():
        for row in tables["token_stats"].to_pylist():
            if row["encoding"] == codec.FX2:
                want, tol = row["kl_forward_sum"], 1e-12
            else:
                want, tol = float(np.sum(codec.decode_kl(row["kl_forward"]), dtype=np.float64)), 1e-9
            assert got[row["response_id"]] == pytest.approx(want, abs=tol)
    snap = create_snapshot(cat, "both", new.id, progress=False)
    rows = datasets.load_dataset(str(snap.path), split="train").to_list()
    assert {r["iteration"] for r in rows} == {0, 1} and len(rows) == res.added
    stats = {r["response_id"]: r for t in made.values() for r in t["token_stats"].to_pylist()}
    responses = {r["response_id"]: r for t in made.values() for r in t["responses"].to_pylist()}
    for r in rows:
        s = stats[r["response_id"]]
        one = codec.decode_table(cat.sql("SELECT * FROM token_stats WHERE stats_id = $s", params={"s": s["stats_id"]}),
                                 [responses[r["response_id"]]["token_ids"]]).to_pylist()[0]
        for name in ("student_logprobs", "teacher_logprobs", "teacher_topk_ids", "teacher_topk_logprobs"):
            assert r[name] == pytest.approx(one[name])
        assert len(r["teacher_topk_ids"]) == s["num_tokens"] * s["top_k"]
        if s["encoding"] == codec.FX16:  # the stored ids, in their stored order
            assert r["teacher_topk_ids"] == s["teacher_topk_ids"]
        else:  # as sets per token, the synthetic top-k ids
            assert s["teacher_topk_ids"] == [] and len(s["fx2_topk_ids"]) > 0
