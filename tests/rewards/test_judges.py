import pytest

from rewards.judges import JUDGES, JudgeItem, build_judge, make_judge, verdict_rows
from schemas.errors import ConfigError, UnknownKindError
from schemas.tables import VERDICTS


def item(response, answer, answer_type="word", choices=()):
    return JudgeItem("r1", "q?", answer, answer_type, response, tuple(choices))


@pytest.mark.parametrize("judge,it,score,extracted", [
    ("exact", item("Red.", "red"), 1.0, "Red."),
    ("exact", item("blue", "red"), 0.0, "blue"),
    ("numeric", item("about 102", "100", "number"), 1.0, "102"),
    ("numeric", item("110", "100", "number"), 0.0, "110"),
    ("choice", item("The answer is (B)", "B", "letter", ["x", "y"]), 1.0, "B"),
    ("choice", item("y", "B", "letter", ["x", "y"]), 1.0, "B"),
    ("rule", item("3", "3", "number"), 1.0, "3"),
    ("rule", item("C. circle", "C", "letter", ["a", "b", "circle"]), 1.0, "C"),
])
def test_rule_judges(judge, it, score, extracted):
    (v,) = make_judge(judge).judge([it])
    assert (v.state, v.score, v.extracted_answer) == ("ok", score, extracted)


@pytest.mark.parametrize("judge,it", [
    ("numeric", item("no idea", "7", "number")),
    ("choice", item("I cannot tell", "A", "letter", ["x", "y"])),
    ("exact", item("   ", "red")),
])
def test_no_answer_is_unparseable_never_a_silent_zero(judge, it):
    (v,) = make_judge(judge).judge([it])
    assert v.state == "unparseable" and v.score is None and v.error


def test_a_broken_judge_is_an_error_state():
    j = make_judge("exact")
    j.match = lambda x, i: 1 / 0
    (v,) = j.judge([item("red", "red")])
    assert v.state == "error" and v.score is None and "ZeroDivisionError" in v.error


def test_ids_rows_and_registry():
    a, b = make_judge("numeric"), make_judge("numeric", tolerance=0.1)
    assert a.judge_id != b.judge_id and a.judge_id == make_judge("numeric").judge_id
    items = [item("red", "red"), item("", "red")]
    rows = verdict_rows(a, items, a.judge(items))
    assert rows.schema.equals(VERDICTS.schema) and rows.column("state").to_pylist() == ["ok", "unparseable"]
    assert set(JUDGES) >= {"exact", "numeric", "choice", "rule"}
    with pytest.raises(UnknownKindError, match="unknown judge 'llm-typo'; known: rule, exact, numeric, choice, llm"):
        make_judge("llm-typo")


@pytest.mark.parametrize("response,answer,ok", [("1234567", "1234567", True), ("2,500,000 units", "2500000", True),
                                                ("0.00001", "0.00001", True), ("1234567", "1300000", False)])
def test_numeric_judge_keeps_the_number_as_written(response, answer, ok):
    (v,) = make_judge("numeric").judge([item(response, answer, "number")])
    assert v.state == "ok" and v.score == float(ok)


@pytest.mark.parametrize("judge,response,answer_type,score", [
    ("rule", "57%", "number", 1.0), ("numeric", "about 56.5", "number", 1.0), ("rule", "0.9", "number", 0.0),
    ("exact", "Fifty-seven percent", "word", 1.0),
])
def test_any_accepted_answer_counts(judge, response, answer_type, score):
    it = JudgeItem("r1", "share?", "0.57", answer_type, response, answers=("0.57", "57", "fifty-seven percent"))
    assert it.accepted == ("0.57", "57", "fifty-seven percent")
    (v,) = make_judge(judge).judge([it])
    assert (v.state, v.score) == ("ok", score)
    (alone,) = make_judge(judge).judge([JudgeItem("r1", "share?", "0.57", answer_type, response)])
    assert alone.score == (1.0 if response == "0.57" else 0.0)


def test_build_judge_validates_params_and_names_where():
    """One builder from (kind, params, where): a bad parameter is a ConfigError naming where it came from."""
    assert build_judge("numeric", {"tolerance": 0.1}, where="--judge-config").judge_id == \
        make_judge("numeric", tolerance=0.1).judge_id
    with pytest.raises(ConfigError, match="invalid --judge-config:\n  - tolerence: unknown key"):
        build_judge("numeric", {"tolerence": 0.1}, where="--judge-config")
    with pytest.raises(ConfigError, match="--judge-config:\n  - tolerance: .*finite"):
        build_judge("numeric", {"tolerance": float("nan")}, where="--judge-config")
    with pytest.raises(ConfigError, match="judge.params:\n  - tolerance: unknown key"):
        build_judge("exact", {"tolerance": 0.1}, where="judge.params")
    with pytest.raises(ConfigError, match="invalid judge 'numeric' parameters:\n  - tolerence: unknown key"):
        make_judge("numeric", tolerence=0.1)  # keywords are checked the same way
    with pytest.raises(UnknownKindError, match="unknown judge 'lmm'; known: rule, exact, numeric, choice, llm"):
        build_judge("lmm", {}, where="--judge-config")
