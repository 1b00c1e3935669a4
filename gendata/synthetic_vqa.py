"""The built-in synthetic visual-QA task: images rendered in code with PIL, questions with known
answers. Deterministic by seed; every row carries its type, answer type and choices.

Question types (registry ``QUESTION_TYPES``):

==================  ==================================================  ===========
qtype               question                                            answer type
==================  ==================================================  ===========
shape_colour        What colour is the <shape>?                         word
count               How many <shape>s are there?                        number
tallest_bar         Which bar is the tallest?  (answered by colour)     word
bar_value           What is the value of the <colour> bar?              number
shape_choice        Which shape is shown? + lettered options            letter
bar_difference      <colour1> bar minus <colour2> bar? (two steps)      number
==================  ==================================================  ===========
"""

from __future__ import annotations

import io
import random
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, ImageDraw

from gendata.questions import QuestionSet, QuestionSetBuilder, format_prompt

SOURCE = "synthetic-vqa/v1"
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 50), "blue": (30, 70, 230),
           "yellow": (235, 200, 20), "purple": (140, 40, 180), "orange": (245, 130, 20)}
SHAPES = ("circle", "square", "triangle")
BAR_MAX = 9
SPLIT_SALT = {"train": 0, "test": 1_000_003}
# the validation split is carved from the train split: the same generator at indices no train set
# reaches (a train set would need a million questions per type), so tuning never sees test items
VALIDATION_OFFSET = 1_000_000
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Item:
    question: str
    answer: str
    answer_type: str
    image: Image.Image
    choices: tuple[str, ...] = ()
    params: dict | None = None


def _canvas(size: int) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    img = Image.new("RGB", (size, size), (255, 255, 255))
    return img, ImageDraw.Draw(img)


def _shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)


def _single_shape(rng: random.Random, size: int) -> tuple[Image.Image, str, str]:
    """One shape of one colour, of random size and place."""
    shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
    img, d = _canvas(size)
    s = rng.randint(size // 3, size // 2)
    x, y = rng.randint(2, size - s - 2), rng.randint(2, size - s - 2)
    _shape(d, shape, (x, y, x + s, y + s), COLOURS[colour])
    return img, shape, colour


def shape_colour(rng: random.Random, size: int) -> Item:
    img, shape, colour = _single_shape(rng, size)
    return Item(f"What colour is the {shape}?", colour, "word", img, params={"shape": shape})


def count(rng: random.Random, size: int) -> Item:
    shape = rng.choice(SHAPES)
    n = rng.randint(1, 5)
    img, d = _canvas(size)
    cell = size // 3
    cells = rng.sample([(i, j) for i in range(3) for j in range(3)], n)
    for i, j in cells:
        s = cell - 6
        x, y = i * cell + 3, j * cell + 3
        _shape(d, shape, (x, y, x + s, y + s), COLOURS[rng.choice(list(COLOURS))])
    return Item(f"How many {shape}s are there?", str(n), "number", img, params={"shape": shape})


def _bars(rng: random.Random, size: int, k: int, distinct: bool) -> tuple[Image.Image, dict[str, int]]:
    colours = rng.sample(list(COLOURS), k)
    values = rng.sample(range(1, BAR_MAX + 1), k) if distinct else \
        [rng.randint(1, BAR_MAX) for _ in colours]
    img, d = _canvas(size)
    base, top = size - 4, 4
    unit = (base - top) / BAR_MAX
    for v in range(1, BAR_MAX + 1):  # light gridlines, one per unit
        y = round(base - v * unit)
        d.line([(0, y), (size, y)], fill=(225, 225, 225))
    width = size // (k + 1)
    gap = (size - k * width) // (k + 1)
    for i, (c, v) in enumerate(zip(colours, values)):
        x = gap + i * (width + gap)
        d.rectangle([x, round(base - v * unit), x + width - 1, base], fill=COLOURS[c])
    return img, dict(zip(colours, values))


def tallest_bar(rng: random.Random, size: int) -> Item:
    img, bars = _bars(rng, size, rng.randint(2, 4), distinct=True)
    best = max(bars, key=bars.get)
    return Item("Which bar is the tallest? Answer with its colour.", best, "word", img, params={"bars": bars})


def bar_value(rng: random.Random, size: int) -> Item:
    img, bars = _bars(rng, size, rng.randint(2, 3), distinct=False)
    colour = rng.choice(list(bars))
    return Item(f"What is the value of the {colour} bar?", str(bars[colour]), "number", img,
                params={"bars": bars})


def shape_choice(rng: random.Random, size: int) -> Item:
    img, shape, _ = _single_shape(rng, size)
    options = list(SHAPES) + ["star"]
    rng.shuffle(options)
    letter = "ABCD"[options.index(shape)]
    return Item("Which shape is shown?", letter, "letter", img, tuple(options),
                params={"shape": shape})


def bar_difference(rng: random.Random, size: int) -> Item:
    img, bars = _bars(rng, size, 2, distinct=True)
    (c1, v1), (c2, v2) = sorted(bars.items(), key=lambda kv: -kv[1])
    return Item(f"What is the value of the {c1} bar minus the value of the {c2} bar?",
                str(v1 - v2), "number", img, params={"bars": bars})


QUESTION_TYPES: dict[str, Callable[[random.Random, int], Item]] = {
    "shape_colour": shape_colour, "count": count, "tallest_bar": tallest_bar,
    "bar_value": bar_value, "shape_choice": shape_choice, "bar_difference": bar_difference,
}


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def generate_item(qtype: str, seed: int, split: str, index: int, image_size: int = 112) -> Item:
    """One item, a pure function of (qtype, seed, split, index)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    if split == "validation":
        split, index = "train", VALIDATION_OFFSET + index
    rng = random.Random(f"{SOURCE}|{seed}|{SPLIT_SALT[split]}|{qtype}|{index}")
    return QUESTION_TYPES[qtype](rng, image_size)


def synthetic_vqa(n: int, split: str = "train", seed: int = 0, image_size: int = 112,
                  qtypes: list[str] | None = None) -> QuestionSet:
    """``n`` questions of the given split, cycling through the question types."""
    qtypes = list(qtypes or QUESTION_TYPES)
    unknown = [q for q in qtypes if q not in QUESTION_TYPES]
    if unknown:
        raise ValueError(f"unknown question type(s) {unknown}; known: {', '.join(QUESTION_TYPES)}")
    builder = QuestionSetBuilder(SOURCE)
    for i in range(n):
        qtype = qtypes[i % len(qtypes)]
        item = generate_item(qtype, seed, split, i // len(qtypes), image_size)
        builder.add(image=png_bytes(item.image), question=format_prompt(item.question, list(item.choices)),
                    answer=item.answer, split=split, qtype=qtype, answer_type=item.answer_type,
                    choices=list(item.choices),
                    meta={"seed": seed, "index": i, "params": item.params},
                    image_info=("PNG", image_size, image_size))
    return builder.build()
