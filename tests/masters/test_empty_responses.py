"""Empty responses (a generation engine can emit no token at all, e.g. an immediate EOS) have an
explicit state: they are never scored, their group is rewarded over its non-empty members, a
group left with fewer than two non-empty members is skipped, and both are counted (stage
result, iteration line, run.json, report) instead of leaving the group incomplete forever."""

import json

import pyarrow as pa


def _config(tiny_pair):
    student, teacher = tiny_pair("qwen2_vl")
    return {"run_id": "e", "iterations": 1, "questions": {"train": 6, "test": 8},
            "student": str(student), "teachers": [{"model": str(teacher)}], "judge": {"kind": "exact"},
            "teacher_responses": 2, "student_responses": 2, "sampling": {"max_new_tokens": 8},
            "train": {"max_steps": 2, "batch_size": 4, "learning_rate": 1e-3}}


def _emptied(table: pa.Table, empty: set[str]) -> pa.Table:
    """The responses with those made empty, as an engine that stopped at once writes them."""
    rows = table.to_pylist()
    for r in rows:
        if r["response_id"] in empty:
            r.update(token_ids=[], text="", num_tokens=0, finish_reason="stop", behaviour_logprobs=[])
    return pa.Table.from_pylist(rows, schema=table.schema)


def test_empty_responses_are_marked_and_their_groups_proceed(tiny_pair, tmp_path):
    from catalog import Catalog
    from masters.loop import ensure_questions, run
    from masters.plan import RunPlan
    from masters.report import build_report
    from masters.run_config import RunConfig
    from masters.stages import GENERATE_STUDENT, GENERATE_TEACHER, REGISTER, REWARD, SCORE, run_stage

    cfg = RunConfig.parse(_config(tiny_pair))
    # the iteration's responses as the engine made them, generated in another catalog ...
    with Catalog.open(tmp_path / "gen") as gen:
        ensure_questions(gen, cfg)
        scope = RunPlan.build(cfg, gen.config, progress=False).scope(0)
        for s in (REGISTER, GENERATE_TEACHER, GENERATE_STUDENT):
            run_stage(s, gen, scope)
        generated = gen.sql("SELECT * FROM responses ORDER BY group_id, source, sample_index")
    groups: dict[str, list[str]] = {}
    for r in generated.select(["group_id", "response_id"]).to_pylist():
        groups.setdefault(r["group_id"], []).append(r["response_id"])
    assert len(groups) == 6 and {len(m) for m in groups.values()} == {4}
    (g1, members1), (g2, members2) = list(groups.items())[:2]
    # ... one member of a group came back empty, three of another's (one usable member left)
    empty = {members1[0], *members2[:3]}
    with Catalog.open(tmp_path / "cat") as cat:
        cat.append("responses", _emptied(generated, empty), "responses generated elsewhere", stage="generate",
                   iteration=0)
        result = run(cfg, cat, progress=False)
        (summary,) = result.iterations
        non_empty = set(generated.column("response_id").to_pylist()) - empty
        scored = set(cat.sql("SELECT response_id FROM token_stats").column(0).to_pylist())
        assert scored == non_empty  # every non-empty response scored, no empty one
        ok = set(cat.sql("SELECT response_id FROM verdicts WHERE state = 'ok'").column(0).to_pylist())
        rewards = cat.sql("SELECT group_id, response_id FROM rewards").to_pylist()
        by_group: dict[str, set[str]] = {}
        for r in rewards:
            by_group.setdefault(r["group_id"], set()).add(r["response_id"])
        # the group with one empty member is rewarded over its three others
        assert by_group.get(g1) == set(members1[1:]) & ok and by_group[g1]
        assert g2 not in by_group  # one usable member: no group to normalise over, skipped
        assert {r["response_id"] for r in rewards} == (non_empty - set(members2)) & ok
        # both are counted: in the stage results, the iteration's line and run.json
        scope = RunPlan.build(cfg, cat.config, progress=False).scope(0)
        again = {s.name: run_stage(s, cat, s_scope) for s, s_scope in
                 ((SCORE, scope), (REWARD, scope.rewarding()))}
        assert again["score"].units == 0 and again["rewards"].units == 0  # nothing is left dangling
        assert again["score"].left_out == {"empty responses": 4}
        assert again["rewards"].left_out == {"groups skipped": 1}
        assert summary.left_out == {"empty responses": 4, "groups skipped": 1}
        assert "4 empty responses" in summary.line() and "1 group skipped" in summary.line()
        run_json = json.loads((result.final_student.parent.parent / "run.json").read_text())
        assert run_json["iterations"][0]["left_out"] == {"empty responses": 4, "groups skipped": 1}
        # a re-score under another config rewards the same responses as the stage did
        from masters.rescore import rescore
        from schemas.config import RewardConfig

        judge_id = cat.sql("SELECT DISTINCT judge_id FROM verdicts").column(0).to_pylist()[0]
        other = RewardConfig(judge_id=judge_id, w_distill=0.5)
        rescore(cat, other)
        rescored = cat.sql("SELECT response_id FROM rewards WHERE reward_config_id = $c", params={"c": other.id})
        assert set(rescored.column(0).to_pylist()) == {r["response_id"] for r in rewards}
        page = build_report(cat, "e", tmp_path / "report.html").read_text()
    assert "Responses left out" in page
    assert "<tr><td>0</td><td>24</td><td>4</td><td>1</td>" in page
