"""Questions from a Hugging Face dataset saved locally in the test, bad rows included."""

import io

import datasets
import pytest
from PIL import Image

from gendata.hf_source import ColumnMapping, hf_questions
from schemas.errors import ConfigError, SourceDataError


def png(colour):
    buf = io.BytesIO()
    Image.new("RGB", (20, 20), colour).save(buf, format="PNG")
    return buf.getvalue()


ROWS = [
    {"img": {"bytes": png("red"), "path": None}, "q": "What colour?", "a": "red", "opts": []},
    {"img": {"bytes": png("blue"), "path": None}, "q": "Which one?", "a": "B", "opts": ["red", "blue"]},
    {"img": {"bytes": png("red"), "path": None}, "q": "How many?", "a": "3", "opts": []},
]


def save(tmp_path, rows, how="save_to_disk"):
    features = datasets.Features({"img": datasets.Image(), "q": datasets.Value("string"),
                                  "a": datasets.Value("string"),
                                  "opts": datasets.List(datasets.Value("string"))})
    ds = datasets.Dataset.from_list(rows, features=features)
    target = tmp_path / how
    if how == "save_to_disk":
        ds.save_to_disk(str(target))
    else:
        target.mkdir()
        ds.to_parquet(str(target / "part-0.parquet"))
    return target


MAPPING = ColumnMapping(image="img", question="q", answer="a", choices="opts")


@pytest.mark.parametrize("how", ["save_to_disk", "parquet"])
def test_good_rows_become_questions_with_images_once(tmp_path, how):
    qs = hf_questions(save(tmp_path, ROWS, how), MAPPING, source_name="mini")
    rows = qs.questions.to_pylist()
    assert [r["answer"] for r in rows] == ["red", "B", "3"]
    assert [r["answer_type"] for r in rows] == ["word", "letter", "number"]
    assert rows[1]["question"] == "Which one?\nA. red\nB. blue" and rows[1]["choices"] == ["red", "blue"]
    assert qs.images.num_rows == 2  # the red image is stored once
    assert rows[0]["image_id"] == rows[2]["image_id"] and all(r["source"] == "mini" for r in rows)
    assert qs.skipped == 0


def test_bad_rows_are_reported_by_row_and_source(tmp_path):
    bad = ROWS + [
        {"img": {"bytes": b"\x89PNG-not-really", "path": None}, "q": "x?", "a": "1", "opts": []},
        {"img": {"bytes": png("green"), "path": None}, "q": "   ", "a": "green", "opts": []},
        {"img": None, "q": "Where?", "a": "here", "opts": []},
    ]
    folder = save(tmp_path, bad)
    with pytest.raises(SourceDataError) as err:
        hf_questions(folder, MAPPING, source_name="mini")
    msg = str(err.value)
    assert "3 bad row(s) of 6 in mini" in msg
    assert "row 3 of mini: unreadable image bytes" in msg
    assert "row 4 of mini: empty question (column 'q')" in msg
    assert "row 5 of mini: missing image (column 'img')" in msg
    assert "--skip-bad" in msg
    qs = hf_questions(folder, MAPPING, source_name="mini", skip_bad=True)
    assert qs.questions.num_rows == 3 and qs.skipped == 3 and len(qs.problems) == 3


def test_mapping_errors_name_the_column(tmp_path):
    with pytest.raises(ConfigError, match="no column 'question'.*img, q, a, opts"):
        hf_questions(save(tmp_path, ROWS), ColumnMapping(image="img"))


def test_questions_land_in_the_catalog(tmp_path):
    from catalog import Catalog
    from masters.questions import ingest_questions

    qs = hf_questions(save(tmp_path, ROWS), MAPPING, source_name="mini")
    with Catalog.open(tmp_path / "cat") as cat:
        first = ingest_questions(cat, qs, "mini questions")
        again = ingest_questions(cat, qs, "mini questions")
        assert first.added == {"images": 2, "questions": 3}
        assert again.version is None and again.skipped == {"images": 2, "questions": 3}
        joined = cat.sql("SELECT count(*) FROM questions JOIN images USING (image_id)").column(0)[0]
        assert joined.as_py() == 3


def test_multiple_choice_answers_become_letters(tmp_path):
    rows = [
        {"img": {"bytes": png("red"), "path": None}, "q": "Which?", "a": "blue", "opts": ["red", "blue"]},
        {"img": {"bytes": png("red"), "path": None}, "q": "Which?", "a": "0", "opts": ["red", "blue"]},
        {"img": {"bytes": png("red"), "path": None}, "q": "Which?", "a": "b", "opts": ["red", "blue"]},
        {"img": {"bytes": png("red"), "path": None}, "q": "Which?", "a": "green", "opts": ["red", "blue"]},
    ]
    qs = hf_questions(save(tmp_path, rows), MAPPING, source_name="mc", skip_bad=True)
    assert qs.questions.column("answer").to_pylist() == ["B", "A", "B"]
    assert qs.problems == ["row 3 of mc: answer 'green' is neither an option letter (A-B), an option "
                           "index, nor one of the options"]
