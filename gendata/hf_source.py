"""Questions from any Hugging Face dataset, by column mapping: a local `save_to_disk` folder, a
folder `datasets.load_dataset` understands, Parquet files, or a Hub id when online.

An answer cell may hold a string, a number (typed ``number``) or a list of accepted answers
(ChartQA's ``label``): every one is kept in ``answers``, the first is ``answer``. With options,
an answer may be a letter, a 0-based index (AI2D) or an option's text; it becomes the letter.

Bad rows (missing image, unreadable image bytes, empty question or answer) are reported by row
and source; they are never dropped silently. ``skip_bad=True`` skips them and counts them.
"""

from __future__ import annotations

import io
import math
import os
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from pydantic import Field

from gendata.questions import QuestionSet, QuestionSetBuilder, _probe, format_prompt
from schemas.config import StrictModel
from schemas.errors import ConfigError, InputError, MastersError, SourceDataError

_NUMERIC = re.compile(r"^\s*[-+]?\d+(?:\.\d+)?%?\s*$")
EXPECTED = ("expected a `save_to_disk` folder, a Parquet file or a folder of them, a folder "
            "`datasets.load_dataset` reads, or a Hub dataset id")


class ColumnMapping(StrictModel):
    """Which dataset column holds what."""

    image: str = Field("image", description="image column (Image feature, bytes, {'bytes','path'} or a path)")
    question: str = Field("question", description="question text column")
    answer: str = Field("answer", description="ground-truth answer column")
    choices: str | None = Field(None, description="list-of-options column for multiple choice")
    qtype: str | None = Field(None, description="question-type column (default: the source name)")


def load_any(source: str | os.PathLike, split: str = "train") -> datasets.Dataset:
    """A `save_to_disk` folder, Parquet file(s) or folder, a `load_dataset` folder, or a Hub id.
    A path that does not exist, an empty folder or a file that cannot be read (a truncated
    Parquet file, say) is an InputError naming it."""
    path = Path(source)
    if not path.exists() and _looks_local(str(source)):
        raise InputError(f"{source} does not exist: {EXPECTED}")
    try:
        empty = path.is_dir() and not any(path.iterdir())
    except OSError as exc:
        raise InputError(f"{source}: cannot be read ({exc.strerror}); {EXPECTED}") from None
    if empty:
        raise InputError(f"{source}: the folder is empty; {EXPECTED}")
    try:
        if path.is_dir() and ((path / "state.json").exists() or (path / "dataset_dict.json").exists()):
            loaded = datasets.load_from_disk(str(path))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise ConfigError(f"{source} has no split {split!r}; it has {', '.join(loaded)}")
                loaded = loaded[split]
            return loaded
        files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path] if path.suffix == ".parquet" else []
        _check_parquet(files)
        if path.is_file() and path.suffix == ".parquet":
            return datasets.load_dataset("parquet", data_files=str(path), split="train")
        if path.is_dir() and not (path / "README.md").exists() and files:
            return datasets.load_dataset("parquet", data_files=[str(f) for f in files], split="train")
        return datasets.load_dataset(str(source), split=split)  # a load_dataset folder or a Hub id
    except MastersError:
        raise
    except (OSError, ValueError, pa.ArrowException, datasets.exceptions.DatasetsError) as exc:
        what = "cannot be read as a dataset" if path.exists() else \
            "is no local file or folder, and no Hub dataset of that name could be loaded"
        raise InputError(f"{source} {what} ({type(exc).__name__}: {exc}); {EXPECTED}") from None


def _looks_local(source: str) -> bool:
    """A path, not a Hub id (``name`` or ``owner/name``): absolute, relative with ./ ../ ~, a
    file name with a data suffix, or more than two parts."""
    return (Path(source).is_absolute() or source.startswith((".", "~")) or source.count("/") > 1
            or Path(source).suffix in {".parquet", ".arrow", ".csv", ".json", ".jsonl"})


def _check_parquet(files) -> None:
    """Each file's footer can be read (a truncated copy or download has lost it)."""
    for f in files:
        try:
            pq.read_metadata(f)
        except (OSError, pa.ArrowException) as exc:
            raise InputError(f"{f}: not a readable Parquet file ({exc}); expected a complete Parquet "
                             "file: a truncated download or copy loses its footer, so fetch or "
                             "write it again") from None


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


def _answer_text(value: Any) -> tuple[str, bool]:
    """One answer as text, and whether it is a number (an int or float cell; a string is typed
    by its content later). Floats are written out in full: 1e-05 is "0.00001", 26.0 is "26"."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "", False
    if isinstance(value, bool):
        return str(value), False
    if isinstance(value, int):
        return str(value), True
    if isinstance(value, float):
        return format(Decimal(repr(value)).normalize(), "f"), True
    return str(value).strip(), False


def _answer_texts(value: Any) -> list[tuple[str, bool]]:
    """The accepted answers a cell holds: one value, or a list of them (ChartQA's ``label``),
    without empty and repeated ones, in order."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    out: dict[str, bool] = {}
    for v in values:
        text, numeric = _answer_text(v)
        if text and text not in out:
            out[text] = numeric
    return list(out.items())


def hf_questions(source: str | os.PathLike, mapping: ColumnMapping | None = None, *,
                 split: str = "train", source_name: str | None = None,
                 skip_bad: bool = False, limit: int | None = None) -> QuestionSet:
    """Read ``source`` into a question set (rows with ids, images stored once)."""
    mapping = mapping or ColumnMapping()
    # a local dataset is named by its folder or file, never by where it lies on this machine
    # (the name is published with every question and hashed into its id)
    name = source_name or (Path(source).expanduser().resolve().name if Path(source).expanduser().exists()
                           else str(source))
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
        answers = _answer_texts(row[mapping.answer])
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
        if not answers:
            problems.append(f"{where}: empty answer (column {mapping.answer!r})")
            continue
        choices = [str(c) for c in (row[mapping.choices] or [])] if mapping.choices else []
        if choices:  # multiple choice: each answer must become an option's letter
            letters = [(a, _as_letter(a, choices)) for a, _ in answers]
            wrong = [a for a, letter in letters if letter is None]
            if wrong:
                problems.append(f"{where}: answer {wrong[0]!r} is neither an option letter "
                                f"(A-{chr(64 + len(choices))}), an option index, nor one of the options")
                continue
            answers = [(letter, False) for letter in dict.fromkeys(letter for _, letter in letters)]
        first, numeric = answers[0]  # the question's type is its first (SFT target) answer's
        answer_type = "letter" if choices else ("number" if numeric or _NUMERIC.match(first) else "word")
        builder.add(image=data, question=format_prompt(question, choices), answer=first,
                    answers=[a for a, _ in answers], split=split,
                    qtype=str(row[mapping.qtype]) if mapping.qtype else name,
                    answer_type=answer_type, choices=choices, meta={"row": i}, image_info=info)
    if problems and not skip_bad:
        raise SourceDataError(name, problems, ds.num_rows)
    return builder.build(skipped=len(problems), problems=problems)
