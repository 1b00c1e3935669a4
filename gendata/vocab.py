"""The vocabulary a teacher and a student share.

Token-level distillation compares two distributions over the same token ids, so the teacher and
the student must share a tokenizer. That is checked over the tokenizers' ids (id -> token
string, for every id each tokenizer defines), not by comparing ``get_vocab()`` tables, whose
added-token entries may differ in form between members of one family. One tokenizer may extend
the other with tokens past its end: the shared ids are then the shorter one's.

Their LM heads may be padded to different widths (real families pad to a multiple of 64 or 128:
151,936 or 152,064 rows for 151,665 Qwen2 tokens). The padding rows are not tokens: scoring
compares the distributions over the shared ids only, each renormalised over them
(``gendata/scoring.py``), and generation never samples a padding id.

Cross-tokenizer distillation (aligning two different vocabularies) is not in scope.
"""

from __future__ import annotations

from pathlib import Path

from schemas.errors import MastersError


def _tokens(folder: Path) -> list[str]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    return tok.convert_ids_to_tokens(list(range(len(tok))))


def check_shared_tokenizer(teacher: str | Path, student: str | Path) -> int:
    """The number of ids the two tokenizers share (ids 0..n-1); a MastersError when they differ."""
    t, s = _tokens(Path(teacher)), _tokens(Path(student))
    n = min(len(t), len(s))
    for i in range(n):
        if t[i] != s[i]:
            raise MastersError(
                f"teacher {teacher} and student {student} have different tokenizers: token id {i} is "
                f"{t[i]!r} for the teacher and {s[i]!r} for the student. Masters compares the two models' "
                "distributions token id by token id, so they must share a tokenizer (pick a teacher of the "
                "student's family); distilling across tokenizers would need a vocabulary alignment, which "
                "is not supported yet")
    return n


def head_width(model) -> int:
    """Rows of the model's LM head (its padded vocabulary)."""
    return int(model.get_output_embeddings().weight.shape[0])


def shared_vocab_size(teacher, student, n: int) -> int:
    """The ids scoring compares (0..n-1: the shared tokenizer's), which both heads must cover."""
    for what, model in (("teacher", teacher), ("student", student)):
        width = head_width(model)
        if width < n:
            raise MastersError(f"the {what}'s LM head has {width} rows, fewer than the tokenizer's {n} ids: "
                               "the checkpoint does not belong to this tokenizer")
    return n
