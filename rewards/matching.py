"""Answer matching primitives for the rule-based judges: normalised exact match, ChartQA's relaxed
numeric accuracy, and multiple-choice letter extraction. Pure functions."""

from __future__ import annotations

import re
import string

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?%?")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
_LETTER_PATTERNS = [
    re.compile(r"^\s*\(?([A-Z])\)?\s*[.:)]?\s*$"),                      # "B", "(B)", "B."
    re.compile(r"\b(?i:answer|option|choice)\s*(?i:is|:)?\s*\(?([A-Z])\b\)?"),  # letter: upper case
    re.compile(r"^\s*\(?([A-Z])[.):]\s"),                                # "B. square"
]


def normalise(text: str) -> str:
    """Lower-case, strip punctuation, articles and extra spaces."""
    text = text.lower().strip()
    text = "".join(ch for ch in text if ch not in set(string.punctuation) - {"-", "."})
    text = text.rstrip(".")
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, truth: str) -> bool:
    return normalise(prediction) == normalise(truth)


def find_number(text: str) -> str | None:
    """The first number in ``text`` as written (thousands separators dropped), or None."""
    m = _NUMBER.search(_THOUSANDS.sub("", text))
    return m.group(0) if m else None


def parse_number(text: str) -> float | None:
    """The first number in ``text``, None when there is none. A "%" sign is dropped and the
    number kept as written ("45%" is 45): chart answers state percentages as numbers of percent.
    (ChartQA's reference scorer divides by 100 instead; both sides are treated alike here.)"""
    found = find_number(text)
    return float(found.rstrip("%")) if found else None


def relaxed_numeric_match(prediction: str, truth: str, tolerance: float = 0.05) -> bool:
    """ChartQA's relaxed accuracy: |pred - gt| <= 5% of |gt|; exact match when gt is 0 or not a
    number."""
    gt = parse_number(truth) if _NUMBER.fullmatch(_THOUSANDS.sub("", truth.strip())) else None
    if gt is None:
        return exact_match(prediction, truth)
    pred = parse_number(prediction)
    if pred is None:
        return False
    if gt == 0:
        return pred == 0
    return abs(pred - gt) <= tolerance * abs(gt)


def extract_letter(text: str, n_choices: int = 26) -> str | None:
    """The option letter a free-text response picks, or None."""
    valid = string.ascii_uppercase[:n_choices]
    for pattern in _LETTER_PATTERNS:
        m = pattern.search(text.strip())
        if m and m.group(1).upper() in valid:
            return m.group(1).upper()
    return None


def extract_choice(prediction: str, choices: list[str] | tuple[str, ...] | None = None) -> str | None:
    """The option letter a response picks: a letter it states, or the one option it names."""
    letter = extract_letter(prediction, len(choices) if choices else 26)
    if letter is None and choices:  # the response may name the option instead of its letter
        named = [i for i, c in enumerate(choices) if exact_match(prediction, c)]
        letter = string.ascii_uppercase[named[0]] if len(named) == 1 else None
    return letter


def choice_match(prediction: str, truth: str, choices: list[str] | None = None) -> bool:
    letter = extract_choice(prediction, choices)
    return letter is not None and letter == truth.strip().upper()


def match_answer(prediction: str, truth: str, answer_type: str, choices: list[str] | None = None) -> bool:
    """Dispatch by answer type: word -> exact, number -> relaxed numeric, letter -> choice."""
    if answer_type == "number":
        return relaxed_numeric_match(prediction, truth)
    if answer_type == "letter":
        return choice_match(prediction, truth, choices)
    return exact_match(prediction, truth)


def match_any(prediction: str, truths: list[str] | tuple[str, ...], answer_type: str,
              choices: list[str] | None = None) -> bool:
    """``match_answer`` against every accepted answer: any of them counts."""
    return any(match_answer(prediction, truth, answer_type, choices) for truth in truths)
