"""Real Hub dataset layouts, built in code (no download): ChartQA's answer column `label` is a
list of strings, AI2D's `answer` a string index into `options`; numeric answer columns; and the
files a user can get wrong (a folder that does not exist, a truncated Parquet file). Every
accepted answer travels from the source through the catalog to the judge stage, held-out
accuracy and SFT targets; catalogs whose questions have no `answers` still work."""

import io
import re
from datetime import datetime, timezone

import datasets
import pyarrow as pa
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from gendata.hf_source import ColumnMapping, hf_questions
from rewards.judges import JudgeItem, make_judge
from schemas import ids
from schemas.errors import InputError
from schemas.tables import RESPONSES

CHARTQA = ColumnMapping(image="image", question="query", answer="label")
AI2D = ColumnMapping(image="image", question="question", answer="answer", choices="options")


def chart_png(values: list[int]) -> bytes:
    """A small bar chart, like ChartQA's images."""
    img = Image.new("RGB", (64, 48), "white")
    draw = ImageDraw.Draw(img)
    for i, v in enumerate(values):
        draw.rectangle([4 + 14 * i, 44 - v, 14 + 14 * i, 44], fill=(40 * i, 90, 200))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def chartqa_like(target, how: str):
    """ChartQA's layout: imgname, image, query, label (list<string>), human_or_machine."""
    rows = [
        {"imgname": "two_col_1.png", "image": {"bytes": chart_png([26, 10, 30]), "path": None},
         "query": "What is the value of the first bar?", "label": ["26"], "human_or_machine": 0},
        {"imgname": "two_col_2.png", "image": {"bytes": chart_png([12, 40]), "path": None},
         "query": "Is the second bar the tallest?", "label": ["Yes"], "human_or_machine": 1},
        {"imgname": "two_col_3.png", "image": {"bytes": chart_png([5, 9, 7]), "path": None},
         "query": "What share did the middle group have?", "label": ["0.57", "57%"], "human_or_machine": 1},
        {"imgname": "two_col_4.png", "image": {"bytes": chart_png([20, 33]), "path": None},
         "query": "Which country is the tallest bar?", "label": ["Brazil", "brazil"], "human_or_machine": 0},
    ]
    features = datasets.Features({"imgname": datasets.Value("string"), "image": datasets.Image(),
                                  "query": datasets.Value("string"),
                                  "label": datasets.List(datasets.Value("string")),
                                  "human_or_machine": datasets.ClassLabel(names=["human", "machine"])})
    return _save(datasets.Dataset.from_list(rows, features=features), target, how)


def ai2d_like(target, how: str):
    """AI2D's layout: question, options (list<string>), answer (a string index), image."""
    rows = [
        {"question": "Which stage comes after the egg?", "options": ["larva", "adult", "pupa", "egg"],
         "answer": "0", "image": {"bytes": chart_png([3, 20]), "path": None}},
        {"question": "What eats the grass?", "options": ["hawk", "rabbit", "sun", "soil"],
         "answer": "1", "image": {"bytes": chart_png([8, 8, 30]), "path": None}},
        {"question": "Which layer is the outermost?", "options": ["core", "mantle", "crust"],
         "answer": "2", "image": {"bytes": chart_png([30, 2]), "path": None}},
    ]
    features = datasets.Features({"question": datasets.Value("string"),
                                  "options": datasets.List(datasets.Value("string")),
                                  "answer": datasets.Value("string"), "image": datasets.Image()})
    return _save(datasets.Dataset.from_list(rows, features=features), target, how)


def _save(ds, target, how):
    if how == "save_to_disk":
        ds.save_to_disk(str(target))
    else:
        target.mkdir(parents=True)
        ds.to_parquet(str(target / "train-00000-of-00001.parquet"))
    return target


@pytest.mark.parametrize("how", ["save_to_disk", "parquet"])
def test_chartqa_list_answers_keep_every_accepted_answer(tmp_path, how):
    qs = hf_questions(chartqa_like(tmp_path / "chartqa", how), CHARTQA, source_name="chartqa")
    rows = qs.questions.to_pylist()
    assert [r["answer"] for r in rows] == ["26", "Yes", "0.57", "Brazil"]
    assert [r["answers"] for r in rows] == [["26"], ["Yes"], ["0.57", "57%"], ["Brazil", "brazil"]]
    assert [r["answer_type"] for r in rows] == ["number", "word", "number", "word"]
    assert not any("[" in r["answer"] for r in rows)
    # the id derives from the answers, not from the list's text: one answer gives the id it always had
    assert rows[0]["question_id"] == ids.question_id("chartqa", rows[0]["image_id"], rows[0]["question"], "26")
    assert rows[2]["question_id"] != ids.question_id("chartqa", rows[2]["image_id"], rows[2]["question"], "0.57")


def test_chartqa_relaxed_numeric_and_any_accepted_answer_count(tmp_path):
    qs = hf_questions(chartqa_like(tmp_path / "chartqa", "parquet"), CHARTQA, source_name="chartqa")
    rows = qs.questions.to_pylist()
    judge = make_judge("rule")
    items = [JudgeItem(r["question_id"], r["question"], r["answer"], r["answer_type"], response,
                       tuple(r["choices"]), answers=tuple(r["answers"]))
             for r, response in zip(rows, ["27.04", "yes", "57%", "Brazil"])]
    assert [v.score for v in judge.judge(items)] == [1.0, 1.0, 1.0, 1.0]
    wrong = [JudgeItem("x", rows[0]["question"], "26", "number", "28", answers=("26",))]
    assert judge.judge(wrong)[0].score == 0.0


@pytest.mark.parametrize("how", ["save_to_disk", "parquet"])
def test_ai2d_index_answers_become_letters(tmp_path, how):
    qs = hf_questions(ai2d_like(tmp_path / "ai2d", how), AI2D, source_name="ai2d")
    rows = qs.questions.to_pylist()
    assert [r["answer"] for r in rows] == ["A", "B", "C"]
    assert [r["answers"] for r in rows] == [["A"], ["B"], ["C"]]
    assert all(r["answer_type"] == "letter" for r in rows)
    assert rows[1]["question"].endswith("A. hawk\nB. rabbit\nC. sun\nD. soil")


def test_numeric_answer_columns_are_numbers(tmp_path):
    rows = [{"image": {"bytes": chart_png([v, 4]), "path": None}, "q": f"Value {k}?", "count": k, "share": v}
            for k, v in [(3, 0.00001), (12, 2.5), (0, 26.0)]]
    features = datasets.Features({"image": datasets.Image(), "q": datasets.Value("string"),
                                  "count": datasets.Value("int64"), "share": datasets.Value("float64")})
    folder = _save(datasets.Dataset.from_list(rows, features=features), tmp_path / "nums", "save_to_disk")
    counts = hf_questions(folder, ColumnMapping(image="image", question="q", answer="count")).questions
    assert counts.column("answer").to_pylist() == ["3", "12", "0"]
    assert set(counts.column("answer_type").to_pylist()) == {"number"}
    shares = hf_questions(folder, ColumnMapping(image="image", question="q", answer="share")).questions
    assert shares.column("answer").to_pylist() == ["0.00001", "2.5", "26"]
    assert set(shares.column("answer_type").to_pylist()) == {"number"}


def test_an_empty_answer_list_is_a_bad_row(tmp_path):
    from schemas.errors import SourceDataError

    rows = [{"image": {"bytes": chart_png([1]), "path": None}, "query": "How many?", "label": []},
            {"image": {"bytes": chart_png([2]), "path": None}, "query": "How many?", "label": ["2"]}]
    features = datasets.Features({"image": datasets.Image(), "query": datasets.Value("string"),
                                  "label": datasets.List(datasets.Value("string"))})
    folder = _save(datasets.Dataset.from_list(rows, features=features), tmp_path / "d", "save_to_disk")
    with pytest.raises(SourceDataError, match="row 0 of d: empty answer"):
        hf_questions(folder, CHARTQA, source_name="d")
    assert hf_questions(folder, CHARTQA, source_name="d", skip_bad=True).questions.num_rows == 1


# --- what a user can hand in wrongly -------------------------------------------------------------


def truncated_parquet(tmp_path):
    folder = chartqa_like(tmp_path / "chartqa", "parquet")
    path = folder / "train-00000-of-00001.parquet"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return folder, path


def test_a_missing_folder_is_an_input_error(tmp_path):
    missing = tmp_path / "no_such_dataset"
    with pytest.raises(InputError, match=re.escape(str(missing)) + ".*does not exist"):
        hf_questions(missing, CHARTQA)
    with pytest.raises(InputError, match="no_such.parquet"):
        hf_questions(tmp_path / "no_such.parquet", CHARTQA)


def test_an_empty_folder_is_an_input_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty"):
        hf_questions(tmp_path / "empty", CHARTQA)


@pytest.mark.parametrize("given", ["file", "folder", "hub_folder"])
def test_a_truncated_parquet_file_is_an_input_error(tmp_path, given):
    folder, path = truncated_parquet(tmp_path)
    if given == "hub_folder":  # the Hub's layout: a dataset card beside the data files
        (folder / "README.md").write_text("# chartqa\n")
    with pytest.raises(InputError, match=re.escape(f"{path}: not a readable Parquet file")):
        hf_questions(path if given == "file" else folder, CHARTQA)


def cli(catalog_dir, *args):
    from masters.cli import app

    return CliRunner().invoke(app, ["--catalog", str(catalog_dir), *[str(a) for a in args]])


def test_cli_reports_missing_and_truncated_datasets_without_a_traceback(tmp_path, masters_cli):
    missing = tmp_path / "no_such_dataset"
    _, truncated = truncated_parquet(tmp_path)
    for given in (missing, truncated):
        out = cli(tmp_path / "cat", "questions", "hf", given, "--question", "query", "--answer", "label")
        assert out.exit_code != 0 and not isinstance(out.exception, Exception), out.exception
        assert str(given) in out.output
    proc = masters_cli("--catalog", tmp_path / "cat", "questions", "hf", truncated, "--question", "query",
                       "--answer", "label", timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr + proc.stdout
    assert f"{truncated}: not a readable Parquet file" in proc.stderr


def test_cli_stores_every_chartqa_answer(tmp_path):
    import json

    folder = chartqa_like(tmp_path / "chartqa", "save_to_disk")
    out = cli(tmp_path / "cat", "questions", "hf", folder, "--question", "query", "--answer", "label",
              "--name", "chartqa")
    assert out.exit_code == 0, out.output
    out = cli(tmp_path / "cat", "sql", "SELECT answer, answers, answer_type FROM questions ORDER BY answer",
              "--format", "json")
    got = [json.loads(line) for line in out.stdout.splitlines()]
    assert {r["answer"]: (r["answers"], r["answer_type"]) for r in got} == {
        "0.57": (["0.57", "57%"], "number"), "26": (["26"], "number"), "Brazil": (["Brazil", "brazil"], "word"),
        "Yes": (["Yes"], "word")}


# --- every accepted answer, downstream ----------------------------------------------------------


RESPONSE_TEXTS = {"26": "27.04", "Yes": "yes", "0.57": "57%", "Brazil": "brazil"}  # all correct


def responses_for(questions: pa.Table, texts: dict[str, str]) -> pa.Table:
    it = ids.iteration_id("run", 0)
    now = datetime.now(timezone.utc)
    sampling = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0, "max_new_tokens": 8}
    rows = []
    for q in questions.to_pylist():
        rid = ids.response_id(it, q["question_id"], "student", "m", 0.0, 0, 0, sampling)
        rows.append({"response_id": rid, "group_id": ids.group_id(it, q["question_id"]), "iteration_id": it,
                     "question_id": q["question_id"], "source": "student", "model_id": "m", "mask_ratio": 0.0,
                     "sample_index": 0, "seed": 0, "sampling": sampling, "prompt": q["question"],
                     "token_ids": [1], "text": texts[q["answer"]], "finish_reason": "stop", "num_tokens": 1,
                     "created_at": now})
    return RESPONSES.rows(rows)


def test_the_judge_stage_counts_any_accepted_answer(tmp_path):
    from catalog import Catalog
    from masters.questions import ingest_questions
    from masters.rescore import judge_missing
    from masters.stages import queries

    qs = hf_questions(chartqa_like(tmp_path / "chartqa", "save_to_disk"), CHARTQA, source_name="chartqa")
    with Catalog.open(tmp_path / "cat") as cat:
        ingest_questions(cat, qs, "chartqa")
        responses = responses_for(qs.questions, RESPONSE_TEXTS)
        cat.append("responses", responses, "responses")
        rids = responses.column("response_id").to_pylist()
        inputs = queries.judge_inputs(cat, rids)
        assert sorted(tuple(r["answers"]) for r in inputs.values()) == [
            ("0.57", "57%"), ("26",), ("Brazil", "brazil"), ("Yes",)]
        judge = make_judge("rule")
        judge_missing(cat, judge)
        got = cat.sql("SELECT q.answer, v.score FROM verdicts v JOIN responses r USING (response_id) "
                      "JOIN questions q USING (question_id) ORDER BY q.answer").to_pylist()
        assert got == [{"answer": a, "score": 1.0} for a in ["0.57", "26", "Brazil", "Yes"]]


def test_a_catalog_made_before_answers_opens_and_judges(filled_catalog, catalog_dir):
    """An older catalog's questions table lacks the column: opening adds it, its rows read null
    and their one `answer` is judged as before."""
    from catalog import Catalog
    from masters.rescore import judge_missing

    cat, tables, _ = filled_catalog
    cat.sql("ALTER TABLE questions DROP COLUMN answers", write=True)
    cat.close()
    with Catalog.open(catalog_dir) as cat:
        assert cat.sql("SELECT count(*) FROM questions WHERE answers IS NULL").column(0)[0].as_py() == \
            tables["questions"].num_rows
        res = judge_missing(cat, make_judge("rule"))  # the synthetic catalog holds `exact` verdicts
        assert res.judged == tables["responses"].num_rows and res.states == {"ok": res.judged}
        scores = cat.sql("SELECT r.text = q.answer AS right, v.score FROM verdicts v JOIN responses r "
                         "USING (response_id) JOIN questions q USING (question_id) WHERE v.judge_id = $j",
                         params={"j": make_judge("rule").judge_id}).to_pylist()
        assert len(scores) == res.judged and all(s["score"] == float(s["right"]) for s in scores)


def test_sft_targets_are_the_first_answer(tmp_path):
    from masters.sft_data import sft_rows

    qs = hf_questions(chartqa_like(tmp_path / "chartqa", "parquet"), CHARTQA, source_name="chartqa")
    rows = sft_rows(qs).to_pylist()
    assert [r["completion"] for r in rows] == ["26", "Yes", "0.57", "Brazil"]
    assert [r["answer"] for r in rows] == ["26", "Yes", "0.57", "Brazil"]


def saying_sevens(model, processor):
    """A random tiny checkpoint answers only newlines; with the output rows of "\n" and "7"
    swapped (untied from the input embeddings) it says something: "7\n7\n"."""
    import torch

    tok = processor.tokenizer
    (nl,), (seven,) = tok.encode("\n", add_special_tokens=False), tok.encode("7", add_special_tokens=False)
    out = model.get_output_embeddings()
    with torch.no_grad():
        w = out.weight.detach().clone()
        w[[nl, seven]] = w[[seven, nl]]
        out.weight = torch.nn.Parameter(w)
    return model, processor


@pytest.mark.parametrize("with_judge", [False, True])
def test_held_out_accuracy_counts_any_accepted_answer(tmp_path, tiny_pair, with_judge):
    """A real tiny checkpoint answers greedily; each question's first answer is wrong and its
    second is what the checkpoint says: accuracy 1 with the answers, 0 with the first alone."""
    from gendata.hf_generate import load_vlm
    from gendata.questions import QuestionSet, QuestionSetBuilder
    from masters.evaluate import evaluate

    student, _ = tiny_pair("qwen2_vl")
    model = saying_sevens(*load_vlm(student))
    judge = make_judge("rule") if with_judge else None
    qs = hf_questions(chartqa_like(tmp_path / "chartqa", "save_to_disk"), CHARTQA, source_name="chartqa")
    said = [e["response"] for e in evaluate(student, qs, model_and_processor=model, max_new_tokens=4).examples]
    assert all(s.strip() for s in said)  # the checkpoint says something to each
    images = {r["image_id"]: r["bytes"] for r in qs.images.to_pylist()}
    builder = QuestionSetBuilder("chartqa")
    for q, text in zip(qs.questions.to_pylist(), said):
        builder.add(image=images[q["image_id"]], question=q["question"], answer="zzz-wrong",
                    answers=["zzz-wrong", text.strip()], split="test", qtype="chart", answer_type="word")
    both = builder.build()
    assert evaluate(student, both, model_and_processor=model, max_new_tokens=4, judge=judge).accuracy == 1.0
    first_only = both.questions.set_column(both.questions.schema.get_field_index("answers"), "answers",
                                           pa.nulls(both.questions.num_rows, pa.list_(pa.string())))
    result = evaluate(student, QuestionSet(first_only, both.images), model_and_processor=model,
                      max_new_tokens=4, judge=judge)
    assert result.accuracy == 0.0 and result.n == len(said)


def test_a_local_dataset_is_named_by_its_folder_not_its_path(tmp_path):
    """Without --name, a local dataset's questions carry its folder's name (published with every
    question and hashed into its id), never where it lies on this machine."""
    folder = chartqa_like(tmp_path / "where" / "it" / "lies" / "chartqa", "save_to_disk")
    qs = hf_questions(folder, CHARTQA)
    assert set(qs.questions.column("source").to_pylist()) == {"chartqa"}
    moved = tmp_path / "elsewhere" / "chartqa"
    folder.rename(moved.parent.mkdir(parents=True) or moved)
    assert hf_questions(moved, CHARTQA).questions.column("question_id") == qs.questions.column("question_id")
