"""The bad-input corpus: every input a user can get wrong, one case each. Each must end in a
project error (schemas.errors.MastersError) whose message names the row or field at fault — never
a traceback — and must leave the catalog as it was: the same version count, the same data files."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pytest

from catalog import Catalog
from schemas.errors import MastersError, SchemaMismatchError
from schemas.tables import table_spec

BAD_ROW = 2  # the row each API case spoils


def _state(folder: Path) -> tuple[int, list]:
    """(number of catalog versions, every data file with its size) of an embedded catalog."""
    with Catalog.open_read_only(folder) as cat:
        versions = len(cat.versions())
    files = sorted((str(p.relative_to(folder)), p.stat().st_size) for p in (folder / "data").rglob("*")
                   if p.is_file())
    return versions, files


@pytest.fixture
def base_catalog(catalog_dir, gendata):
    """A catalog holding one synthetic iteration, closed again; yields (folder, tables)."""
    tables, _ = gendata
    with Catalog.open(catalog_dir) as cat:
        with cat.commit("synthetic", stage="generate", iteration=0) as tx:
            for name, table in tables.items():
                tx.append(name, table)
    return catalog_dir, tables


def _spoilt(tables: dict, name: str, column: str, value, *, as_rows: bool = False):
    """The table ``name`` with new ids (so nothing is skipped as already present) and ``value`` in
    ``column`` at row BAD_ROW; a list of row dicts with ``as_rows`` (a value Arrow cannot type)."""
    spec = table_spec(name)
    rows = tables[name].to_pylist()
    for r in rows:
        r[spec.id_column] = r[spec.id_column] + "-new"
    rows[BAD_ROW][column] = value(rows[BAD_ROW]) if callable(value) else value
    return rows if as_rows else pa.Table.from_pylist(rows, schema=spec.schema)


API_CASES = {
    "reward NaN": ("rewards", "reward", math.nan, {}),
    "advantage inf": ("rewards", "advantage", math.inf, {}),
    "verdict score NaN": ("verdicts", "score", math.nan, {}),
    "verdict state 'maybe'": ("verdicts", "state", "maybe", {}),
    "behaviour log-prob NaN": ("responses", "behaviour_logprobs", lambda r: [math.nan] * len(r["token_ids"]), {}),
    "num_tokens != len(token_ids)": ("responses", "num_tokens", lambda r: len(r["token_ids"]) + 1, {}),
    "divergence sum inf": ("token_stats", "jsd_sum", math.inf, {}),
    "a string in a float column": ("rewards", "reward", "high", {"as_rows": True}),
}


@pytest.mark.parametrize("case", list(API_CASES))
def test_the_python_api_refuses_bad_values_naming_table_column_and_row(base_catalog, case):
    folder, tables = base_catalog
    name, column, value, kw = API_CASES[case]
    if name not in tables or column not in tables[name].column_names:
        pytest.fail(f"the synthetic Gen-Data has no {name}.{column}")
    before = _state(folder)
    with Catalog.open(folder) as cat:
        with pytest.raises(SchemaMismatchError) as err:
            cat.append(name, _spoilt(tables, name, column, value, **kw), "bad input")
    assert (err.value.table, err.value.column, err.value.row) == (name, column, BAD_ROW), str(err.value)
    assert f"table '{name}'" in str(err.value) and f"column '{column}'" in str(err.value)
    assert f"row {BAD_ROW}" in str(err.value)
    assert _state(folder) == before


def _truncated_parquet(tmp: Path) -> Path:
    import pyarrow.parquet as pq

    path = tmp / "chartqa.parquet"
    pq.write_table(pa.table({"query": ["How many?"] * 50, "label": [["26"]] * 50}), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _llm_judge_config(tmp: Path, **params) -> str:
    path = tmp / "judge.yaml"
    import yaml

    path.write_text(yaml.safe_dump(params))
    return str(path)


def _run_config(tmp: Path, **changes) -> str:
    import yaml

    doc = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs/run/demo.yaml").read_text())
    for key, value in changes.items():
        node = doc
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    path = tmp / "run.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


# (arguments after --catalog, words the message must hold); tmp is the test's tmp_path
CLI_CASES = {
    "validate: unknown judge kind": (lambda t: ["validate", _run_config(t, **{"judge.kind": "lmm"})],
                                     ["judge", "lmm", "rule"]),
    "validate: unknown backend": (lambda t: ["validate", _run_config(t, backend="vlm")], ["backend", "vlm", "vllm"]),
    "validate: reward weight inf": (lambda t: ["validate", _run_config(t, **{"reward.w_acc": math.inf})],
                                    ["reward.w_acc"]),
    "validate: reward weight NaN": (lambda t: ["validate", _run_config(t, **{"reward.w_acc": math.nan})],
                                    ["reward.w_acc"]),
    "validate: LLM judge without model and base_url": (
        lambda t: ["validate", _run_config(t, **{"judge.kind": "llm", "judge.params": {}})],
        ["judge", "model", "base_url"]),
    "run: unknown backend, before any commit": (lambda t: ["run", _run_config(t, backend="vlm")], ["backend", "vlm"]),
    "questions hf: no such folder": (lambda t: ["questions", "hf", str(t / "no-such-dataset")], ["no-such-dataset"]),
    "questions hf: truncated Parquet": (lambda t: ["questions", "hf", str(_truncated_parquet(t)), "--question",
                                                   "query", "--answer", "label"], ["chartqa.parquet"]),
    "judge: LLM judge config without model": (
        lambda t: ["judge", "--judge", "llm", "--judge-config", _llm_judge_config(t, base_url="http://127.0.0.1:9/v1")],
        ["model"]),
    "sql: reading the metadata file through the data path": (
        lambda t: ["sql", "SELECT content FROM read_blob('{data}../catalog.ducklake')"], ["catalog.ducklake"]),
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_the_cli_names_the_fault_without_a_traceback_and_commits_nothing(base_catalog, tmp_path, masters_cli, case):
    folder, _ = base_catalog
    make_args, words = CLI_CASES[case]
    args = [a.replace("{data}", str(folder / "data") + "/") for a in make_args(tmp_path)]
    before = _state(folder)
    proc = masters_cli("--catalog", folder, *args, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "Traceback" not in out, out
    assert proc.stderr.startswith("error: "), out
    for word in words:
        assert word in proc.stderr, f"{word!r} not in: {proc.stderr}"
    assert _state(folder) == before


def test_a_catalog_path_that_is_a_file_is_named(tmp_path, masters_cli):
    not_a_folder = tmp_path / "notes.txt"
    not_a_folder.write_text("hello")
    proc = masters_cli("--catalog", not_a_folder, "questions", "synthetic", "--n", "4", timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert str(not_a_folder) in proc.stderr
    assert not_a_folder.read_text() == "hello"


def test_every_project_error_is_a_masters_error():
    """The CLI maps one hierarchy: each error class the packages define derives from MastersError."""
    import importlib
    import inspect
    import pkgutil

    root = Path(__file__).resolve().parents[1]
    found = []
    for package in ("schemas", "catalog", "gendata", "rewards", "trainer", "masters"):
        for info in pkgutil.walk_packages([str(root / package)], prefix=f"{package}."):
            try:
                module = importlib.import_module(info.name)
            except ImportError:  # an optional extra (vLLM, Ray) not installed here
                continue
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if obj.__module__ == module.__name__ and issubclass(obj, Exception):
                    found.append(obj)
    assert found
    assert [c.__qualname__ for c in found if not issubclass(c, MastersError)] == []
    assert {c.__module__ for c in found} == {"schemas.errors"}


def test_the_llm_judge_without_the_judge_extra_names_the_extra(base_catalog, tmp_path, masters_cli):
    """The demo's environment has no `openai`: a shim first on the path fails its import exactly as
    a missing package does."""
    folder, _ = base_catalog
    shim = tmp_path / "no-openai"
    shim.mkdir()
    (shim / "openai.py").write_text("raise ModuleNotFoundError(\"No module named 'openai'\", name='openai')\n")
    root = Path(__file__).resolve().parents[1]
    before = _state(folder)
    proc = masters_cli("--catalog", folder, "judge", "--judge", "llm", "--judge-config",
                       _llm_judge_config(tmp_path, model="m", base_url="http://127.0.0.1:9/v1"),
                       env={"PYTHONPATH": f"{shim}:{root}"}, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "openai" in proc.stderr and "[judge]" in proc.stderr, proc.stderr
    assert _state(folder) == before
