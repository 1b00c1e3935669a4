"""The `masters` verbs of the catalog: sql, versions, snapshot, verify, roundtrip."""

import json
import os

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from masters.cli import app

runner = CliRunner()


def invoke(catalog_dir, *args):
    return runner.invoke(app, ["--catalog", str(catalog_dir), *args], catch_exceptions=False)


@pytest.mark.parametrize("verb", [None, "sql", "versions", "snapshot", "verify", "tables", "roundtrip",
                                  "questions", "fixtures", "judge", "rescore"])
def test_help_on_every_verb(verb):
    result = runner.invoke(app, ([verb] if verb else []) + ["--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_sql_formats_and_versions(filled_catalog, catalog_dir, tmp_path):
    cat, tables, _ = filled_catalog
    version = cat.current_version()
    cat.close()
    q = "SELECT source, count(*) AS n FROM responses GROUP BY 1 ORDER BY 1"
    half = tables["responses"].num_rows // 2
    out = invoke(catalog_dir, "sql", q, "--format", "json")
    assert out.exit_code == 0
    assert [json.loads(line) for line in out.output.splitlines()] == \
        [{"source": "student", "n": half}, {"source": "teacher", "n": half}]
    out = invoke(catalog_dir, "sql", q, "--format", "csv")
    assert out.output.splitlines() == ['"source","n"', f'"student",{half}', f'"teacher",{half}']
    out = invoke(catalog_dir, "sql", q)
    assert "student" in out.output and "(2 rows)" in out.output
    target = tmp_path / "r.parquet"
    out = invoke(catalog_dir, "sql", q, "--format", "parquet", "--output", str(target))
    assert out.exit_code == 0 and pq.read_table(target).num_rows == 2
    out = invoke(catalog_dir, "sql", "SELECT count(*) AS n FROM responses", "--version",
                 str(version - 1), "--format", "json")
    assert json.loads(out.output) == {"n": 0}
    out = invoke(catalog_dir, "versions", "--format", "json")
    rows = [json.loads(line) for line in out.output.splitlines()]
    assert [r["version"] for r in rows] == list(range(version + 1))
    assert rows[-1]["message"] == "synthetic" and f"responses={2 * half}" in rows[-1]["rows_added"]
    assert json.loads(rows[-1]["metadata"]) == {"iteration": 0, "stage": "generate"}


def test_sql_refuses_writes_without_the_flag(filled_catalog, catalog_dir):
    cat, tables, _ = filled_catalog
    cat.close()
    out = runner.invoke(app, ["--catalog", str(catalog_dir), "sql", "DELETE FROM responses"])
    assert out.exit_code == 2 and "DELETE statement" in out.output and "--write" in out.output
    out = invoke(catalog_dir, "sql", "--write", "DELETE FROM responses WHERE source = 'student'")
    assert out.exit_code == 0
    out = invoke(catalog_dir, "sql", "SELECT count(*) AS n FROM responses", "-f", "json")
    assert json.loads(out.output) == {"n": tables["responses"].num_rows // 2}


def test_unknown_version_and_snapshot_errors(filled_catalog, catalog_dir):
    cat, _, config = filled_catalog
    cat.close()
    out = runner.invoke(app, ["--catalog", str(catalog_dir), "sql", "SELECT 1", "--version", "99"])
    assert out.exit_code == 2 and "versions 0..2 exist" in out.output
    out = runner.invoke(app, ["--catalog", str(catalog_dir), "verify", "nope"])
    assert out.exit_code == 2 and "no snapshot named or at 'nope'" in out.output


def test_snapshot_then_verify_then_tamper(filled_catalog, catalog_dir):
    cat, _, config = filled_catalog
    cat.close()
    out = invoke(catalog_dir, "snapshot", "--name", "s", "--reward-config", config.id)
    assert out.exit_code == 0 and "snapshot s created" in out.output
    out = invoke(catalog_dir, "snapshot", "--name", "s", "--reward-config", config.id)
    assert out.exit_code == 0 and "exists (not overwritten)" in out.output
    out = invoke(catalog_dir, "verify", "s")
    assert out.exit_code == 0 and out.output.startswith("ok: ")
    card = catalog_dir / "snapshots" / "s" / "README.md"
    os.chmod(card, 0o644)
    card.write_text(card.read_text() + "tampered\n")
    out = runner.invoke(app, ["--catalog", str(catalog_dir), "verify", str(card.parent)])
    assert out.exit_code == 2 and "README.md: changed" in out.output


def test_roundtrip(tmp_path):
    out = invoke(tmp_path / "rt", "roundtrip", "--questions", "4")
    assert out.exit_code == 0, out.output
    assert "commit 2: version None, 0 rows added" in out.output
    assert "verified, loads with datasets (32 rows, image: PngImageFile)" in out.output


def test_writing_verbs_do_not_create_a_missing_catalog(tmp_path):
    out = runner.invoke(app, ["--catalog", str(tmp_path / "typo"), "snapshot", "--name", "s",
                              "--reward-config", "x"])
    assert out.exit_code == 2 and "no catalog at" in out.output
    out = runner.invoke(app, ["--catalog", str(tmp_path / "typo"), "sql", "--write", "SELECT 1"])
    assert out.exit_code == 2
    assert not (tmp_path / "typo" / "catalog.ducklake").exists()


def test_verify_checks_the_catalogs_record_of_the_manifest(filled_catalog, catalog_dir):
    cat, _, config = filled_catalog
    cat.close()
    assert invoke(catalog_dir, "snapshot", "--name", "s", "--reward-config", config.id).exit_code == 0
    out = invoke(catalog_dir, "verify", "s")
    assert "matches its manifest and the catalog's record" in out.output
    manifest = catalog_dir / "snapshots" / "s" / "manifest.json"
    os.chmod(manifest, 0o644)
    manifest.write_text(manifest.read_text().replace('"catalog_version": 2', '"catalog_version": 1'))
    out = runner.invoke(app, ["--catalog", str(catalog_dir), "verify", "s"])
    assert out.exit_code == 2 and "manifest.json: changed (sha256 differs from the recorded" in out.output


def test_eval_prints_accuracy_overall_and_per_type(tiny_pair, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    student, _ = tiny_pair("qwen2_vl")
    run = lambda *a: subprocess.run([sys.executable, "-m", "masters.cli", "--catalog", str(tmp_path / "c"), *a],
                                    cwd=root, capture_output=True, text=True, timeout=300)  # noqa: E731
    assert run("questions", "synthetic", "--n", "12", "--split", "test").returncode == 0
    proc = run("eval", str(student), "--split", "test")
    assert proc.returncode == 0, proc.stderr[-2000:]
    head, *types = proc.stdout.strip().splitlines()
    assert "accuracy" in head and "on 12 test questions (judge rule)" in head
    assert len(types) == 6 and all(0 <= float(t.split()[-1]) <= 1 for t in types)  # six question types
    missing = run("eval", str(student), "--split", "validation")
    assert missing.returncode == 2 and "no 'validation' questions" in missing.stderr


def test_a_long_inline_judge_config_is_read_as_text_not_as_a_path(filled_catalog, catalog_dir):
    """An inline document longer than a file name may be is not looked up as a file (that raised
    OSError: file name too long)."""
    cat, tables, _ = filled_catalog
    cat.close()
    inline = '{"tolerance": 0.05' + " " * 400 + "}"
    out = invoke(catalog_dir, "judge", "--judge", "numeric", "--judge-config", inline)
    assert out.exit_code == 0, out.output
    assert f"{tables['responses'].num_rows} judged" in out.output
