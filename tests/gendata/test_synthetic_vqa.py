"""The synthetic visual-QA source: deterministic by seed, and every answer checked against the
rendered pixels by an independent reading of the image."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from gendata.synthetic_vqa import BAR_MAX, COLOURS, QUESTION_TYPES, synthetic_vqa
from schemas.tables import IMAGES, QUESTIONS

N = 6 * 12  # twelve of each type


@pytest.fixture(scope="module")
def train():
    return synthetic_vqa(N, "train", seed=0)


def pixels(qs, row):
    data = {r["image_id"]: r["bytes"] for r in qs.images.to_pylist()}[row["image_id"]]
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def colour_mask(img, colour):
    return np.all(np.abs(img - np.array(COLOURS[colour])) < 8, axis=-1)


def present_colours(img):
    return {c: colour_mask(img, c) for c in COLOURS if colour_mask(img, c).sum() > 10}


def bar_values(img):
    size = img.shape[0]
    unit = (size - 8) / BAR_MAX
    out = {}
    for c, mask in present_colours(img).items():
        rows = np.where(mask.any(axis=1))[0]
        out[c] = round((rows.max() - rows.min() + 1) / unit)
    return out


def shape_of(mask):
    rows, cols = np.where(mask)
    box = (rows.max() - rows.min() + 1) * (cols.max() - cols.min() + 1)
    fill = mask.sum() / box
    return "square" if fill > 0.95 else "circle" if fill > 0.7 else "triangle"


def test_schema_types_and_fields(train):
    assert train.questions.schema.equals(QUESTIONS.schema)
    assert train.images.schema.equals(IMAGES.schema)
    rows = train.questions.to_pylist()
    assert {r["qtype"] for r in rows} == set(QUESTION_TYPES)
    assert len({r["question_id"] for r in rows}) == N
    for r in rows:
        assert r["split"] == "train" and r["answer_type"] in {"word", "number", "letter"}
        assert (r["answer_type"] == "letter") == bool(r["choices"])


def test_deterministic_by_seed_and_split():
    a, b = synthetic_vqa(24, "train", seed=3), synthetic_vqa(24, "train", seed=3)
    assert a.questions.equals(b.questions) and a.images.equals(b.images)
    c = synthetic_vqa(24, "train", seed=4)
    test = synthetic_vqa(24, "test", seed=3)
    ids = set(a.questions.column("question_id").to_pylist())
    assert ids.isdisjoint(c.questions.column("question_id").to_pylist())
    assert ids.isdisjoint(test.questions.column("question_id").to_pylist())
    assert synthetic_vqa(7, "test").questions.num_rows == 7


def test_every_answer_matches_the_pixels(train):
    checked = {q: 0 for q in QUESTION_TYPES}
    for row in train.questions.to_pylist():
        img = pixels(train, row)
        q, a = row["qtype"], row["answer"]
        params = json.loads(row["meta"])["params"]
        if q == "shape_colour":
            (colour,) = present_colours(img)
            assert a == colour and shape_of(colour_mask(img, colour)) == params["shape"]
        elif q == "count":
            cells = [img[i * 37:(i + 1) * 37, j * 37:(j + 1) * 37] for i in range(3) for j in range(3)]
            assert int(a) == sum((np.abs(c - 255).sum(axis=-1) > 60).sum() > 20 for c in cells)
        elif q == "tallest_bar":
            values = bar_values(img)
            assert a == max(values, key=values.get)
        elif q == "bar_value":
            colour = row["question"].split("value of the ")[1].split(" bar")[0]
            assert int(a) == bar_values(img)[colour]
        elif q == "shape_choice":
            (colour,) = present_colours(img)
            shape = shape_of(colour_mask(img, colour))
            assert row["choices"]["ABCD".index(a)] == shape
            assert row["question"].endswith("\n".join(f"{L}. {c}" for L, c in zip("ABCD", row["choices"])))
        elif q == "bar_difference":
            values = bar_values(img)
            c1, c2 = row["question"].split("value of the ")[1].split(" bar")[0], \
                row["question"].split("value of the ")[2].split(" bar")[0]
            assert int(a) == values[c1] - values[c2] > 0
        checked[q] += 1
    assert all(n == N // 6 for n in checked.values())


def test_unknown_type_or_split_is_refused():
    with pytest.raises(ValueError, match="unknown question type"):
        synthetic_vqa(3, qtypes=["colour"])
    with pytest.raises(ValueError, match="unknown split"):
        synthetic_vqa(3, split="dev")
