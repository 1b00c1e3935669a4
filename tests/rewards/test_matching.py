import pytest

from rewards.matching import (choice_match, exact_match, extract_letter, match_answer, normalise,
                              parse_number, relaxed_numeric_match)


@pytest.mark.parametrize("pred,truth,ok", [
    ("Red.", "red", True), ("the red", "red", True), ("  RED  ", "red", True),
    ("dark red", "red", False), ("blue", "red", False),
])
def test_exact(pred, truth, ok):
    assert exact_match(pred, truth) is ok


@pytest.mark.parametrize("pred,truth,ok", [
    ("3", "3", True), ("The value is 3.", "3", True), ("102", "100", True), ("106", "100", False),
    ("45%", "45", True), ("4", "5", False), ("0", "0", True), ("0.01", "0", False),
    ("1,000", "1000", True), ("no idea", "7", False), ("-2", "-2", True),
    ("yes", "yes", True),  # not numeric: exact match
])
def test_relaxed_numeric(pred, truth, ok):
    assert relaxed_numeric_match(pred, truth) is ok


@pytest.mark.parametrize("text,letter", [
    ("B", "B"), ("(C)", "C"), ("D.", "D"), ("The answer is A", "A"), ("Answer: (B)", "B"),
    ("The answer is a circle", None),
    ("B. square", "B"), ("square", None), ("I cannot tell", None),
])
def test_letter_extraction(text, letter):
    assert extract_letter(text, 4) == letter


def test_choice_by_name_and_dispatch():
    assert choice_match("square", "B", ["circle", "square", "triangle"])
    assert not choice_match("star", "B", ["circle", "square", "triangle"])
    assert choice_match("The answer is a circle", "C", ["square", "star", "circle"]) is False  # no letter, not an option name
    assert choice_match("circle", "C", ["square", "star", "circle"])
    assert match_answer("4", "4", "number") and match_answer("B", "B", "letter", ["x", "y"])
    assert normalise("A Blue!") == "blue"
    assert parse_number("about 12.5 units") == 12.5


@pytest.mark.parametrize("pred,truths,answer_type,ok", [
    ("57%", ["0.57", "57%"], "number", True), ("0.57", ["0.57", "57%"], "number", True),
    ("0.9", ["0.57", "57%"], "number", False), ("brazil", ["Brazil", "Brasil"], "word", True),
    ("Brasil", ["Brazil", "Brasil"], "word", True), ("Chile", ["Brazil", "Brasil"], "word", False),
])
def test_match_any_accepted_answer(pred, truths, answer_type, ok):
    from rewards.matching import match_any

    assert match_any(pred, truths, answer_type) is ok
