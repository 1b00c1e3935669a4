"""Questions from any Hugging Face dataset, by column mapping: a local `save_to_disk` folder, a
folder `datasets.load_dataset` understands, Parquet files, or a Hub id when online.

Bad rows (missing image, unreadable image bytes, empty question or answer) are reported by row
and source; they are never dropped silently. ``skip_bad=True`` skips them and counts them.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Any

import datasets
from PIL import Image
from pydantic import Field

from gendata.questions import QuestionSet, QuestionSetBuilder, _probe, format_prompt
from schemas.config import StrictModel
from schemas.errors import ConfigError, SourceDataError

_NUMERIC = re.compile(r"^\s*[-+]?\d+(?:\.\d+)?%?\s*$")


class ColumnMapping(StrictModel):
    """Which dataset column holds what."""

    image: str = Field("image", description="image column (Image feature, bytes, {'bytes','path'} or a path)")
    question: str = Field("question", description="question text column")
    answer: str = Field("answer", description="ground-truth answer column")
    choices: str | None = Field(None, description="list-of-options column for multiple choice")
    qtype: str | None = Field(None, description="question-type column (default: the source name)")


def load_any(source: str | os.PathLike, split: str = "train") -> datasets.Dataset:
    """A `save_to_disk` folder, Parquet file(s) or folder, a `load_dataset` folder, or a Hub id."""
    path = Path(source)
    if path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise ConfigError(f"{source} has no split {split!r}; it has {', '.join(loaded)}")
            loaded = loaded[split]
        return loaded
    if path.is_file() and path.suffix == ".parquet":
        return datasets.load_dataset("parquet", data_files=str(path), split="train")
    if path.is_dir() and not (path / "README.md").exists() and list(path.rglob("*.parquet")):
        files = sorted(str(p) for p in path.rglob("*.parquet"))
        return datasets.load_dataset("parquet", data_files=files, split="train")
    return datasets.load_dataset(str(source), split=split)  # a load_dataset folder or a Hub id


def _image_bytes(value: Any) -> bytes | None:
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, Image.Image):
        buf = io.BytesIO()
        value.save(buf, format="PNG")
        return buf.getvalue()
    if isinstance(value, dict):
        if value.get("bytes"):
            return bytes(value["bytes"])
        if value.get("path") and Path(value["path"]).is_file():
            return Path(value["path"]).read_bytes()
        return None
    if isinstance(value, str) and Path(value).is_file():
        return Path(value).read_bytes()
    return None


def _as_letter(answer: str, choices: list[str]) -> str | None:
    letters = [chr(65 + i) for i in range(len(choices))]
    if answer.upper() in letters and len(answer) == 1:
        return answer.upper()
    if answer.isdigit() and int(answer) < len(choices):  # a 0-based option index
        return letters[int(answer)]
    named = [i for i, c in enumerate(choices) if c.strip().lower() == answer.strip().lower()]
    return letters[named[0]] if len(named) == 1 else None


def hf_questions(source: str | os.PathLike, mapping: ColumnMapping | None = None, *,
                 split: str = "train", source_name: str | None = None,
                 skip_bad: bool = False, limit: int | None = None) -> QuestionSet:
    """Read ``source`` into a question set (rows with ids, images stored once)."""
    mapping = mapping or ColumnMapping()
    name = source_name or str(source)
    ds = load_any(source, split)
    wanted = [c for c in (mapping.image, mapping.question, mapping.answer, mapping.choices, mapping.qtype) if c]
    absent = [c for c in wanted if c not in ds.column_names]
    if absent:
        raise ConfigError(f"{name}: no column {absent[0]!r} (columns: {', '.join(ds.column_names)}); "
                          "set the column mapping")
    if isinstance(ds.features.get(mapping.image), datasets.Image):
        ds = ds.cast_column(mapping.image, datasets.Image(decode=False))  # raw bytes, decoded by us
    if limit is not None:
        ds = ds.select(range(min(limit, ds.num_rows)))
    builder = QuestionSetBuilder(name)
    problems: list[str] = []
    for i, row in enumerate(ds):
        where = f"row {i} of {name}"
        question = (row[mapping.question] or "").strip() if isinstance(row[mapping.question], str) else ""
        answer = row[mapping.answer]
        answer = str(answer).strip() if answer is not None else ""
        data = _image_bytes(row[mapping.image])
        if data is None:
            problems.append(f"{where}: missing image (column {mapping.image!r})")
            continue
        try:
            info = _probe(data)
        except Exception as exc:  # PIL raises several types for corrupt data
            problems.append(f"{where}: unreadable image bytes ({type(exc).__name__}: {exc})")
            continue
        if not question:
            problems.append(f"{where}: empty question (column {mapping.question!r})")
            continue
        if not answer:
            problems.append(f"{where}: empty answer (column {mapping.answer!r})")
            continue
        choices = [str(c) for c in (row[mapping.choices] or [])] if mapping.choices else []
        if choices:  # multiple choice: the answer must become the option's letter
            letter = _as_letter(answer, choices)
            if letter is None:
                problems.append(f"{where}: answer {answer!r} is neither an option letter "
                                f"(A-{chr(64 + len(choices))}), an option index, nor one of the options")
                continue
            answer = letter
        answer_type = "letter" if choices else ("number" if _NUMERIC.match(answer) else "word")
        builder.add(image=data, question=format_prompt(question, choices), answer=answer,
                    split=split, qtype=str(row[mapping.qtype]) if mapping.qtype else name,
                    answer_type=answer_type, choices=choices, meta={"row": i}, image_info=info)
    if problems and not skip_bad:
        raise SourceDataError(name, problems, ds.num_rows)
    return builder.build(skipped=len(problems), problems=problems)
