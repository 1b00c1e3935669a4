"""Landing question sets in the catalog (questions + their images, one commit)."""

from __future__ import annotations

from catalog import Catalog, CommitResult
from gendata.questions import QuestionSet


def ingest_questions(catalog: Catalog, qs: QuestionSet, message: str, **metadata) -> CommitResult:
    with catalog.commit(message, stage="questions", **metadata) as tx:
        tx.append("images", qs.images)
        tx.append("questions", qs.questions)
    return tx.result
