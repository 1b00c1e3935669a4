import pytest

from rewards.judges import JUDGES, JudgeItem, make_judge, verdict_rows
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
    with pytest.raises(ValueError, match="known: exact"):
        make_judge("llm-typo")


@pytest.mark.parametrize("response,answer,ok", [("1234567", "1234567", True), ("2,500,000 units", "2500000", True),
                                                ("0.00001", "0.00001", True), ("1234567", "1300000", False)])
def test_numeric_judge_keeps_the_number_as_written(response, answer, ok):
    (v,) = make_judge("numeric").judge([item(response, answer, "number")])
    assert v.state == "ok" and v.score == float(ok)
