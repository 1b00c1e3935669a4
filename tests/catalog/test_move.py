"""A folder catalog opens wherever it is (copied with `cp -a`, or moved) and still time-travels;
``--data-path`` repoints any catalog, and a data path holding none of its files is refused."""

import shutil

import pyarrow as pa

import pytest

from catalog import Catalog
from schemas.config import CatalogConfig
from schemas.errors import CatalogError


@pytest.fixture
def two_version_catalog(filled_catalog, catalog_dir):
    cat, tables, _ = filled_catalog
    first = cat.current_version()
    q = tables["questions"]
    more = q.set_column(0, "question_id", pa.array([f"moved-{k}" for k in range(q.num_rows)]))
    second = cat.append("questions", more, "more questions").version
    cat.close()
    return catalog_dir, first, second, q.num_rows


def _check(folder, first, second, n, masters_cli):
    with Catalog.open_read_only(folder) as cat:
        assert cat.count("questions", version=first) == n
        assert cat.count("questions", version=second) == 2 * n
        assert cat.sql("SELECT count(*) FROM responses", version=first).column(0)[0].as_py() > 0
    proc = masters_cli("--catalog", folder, "versions")
    assert proc.returncode == 0, proc.stderr
    assert "more questions" in proc.stdout
    proc = masters_cli("--catalog", folder, "sql", "SELECT count(*) AS n FROM questions", "--version", str(first))
    assert proc.returncode == 0 and str(n) in proc.stdout, proc.stderr


def test_a_copied_catalog_opens_and_time_travels(two_version_catalog, tmp_path, masters_cli):
    folder, first, second, n = two_version_catalog
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy, symlinks=True)  # cp -a
    _check(copy, first, second, n, masters_cli)
    with Catalog.open(copy) as cat:  # and takes commits of its own, written under the copy
        q = cat.read("questions", version=first)
        cat.append("questions", q.set_column(0, "question_id", pa.array([f"copy-{k}" for k in range(n)])), "in the copy")
        files = cat.sql("SELECT data_file FROM ducklake_list_files('lake', 'questions')").column(0).to_pylist()
    assert all(f.startswith(str(copy)) for f in files)
    with Catalog.open_read_only(folder) as cat:  # the original is untouched
        assert cat.count("questions") == 2 * n


def test_a_moved_catalog_opens_and_time_travels(two_version_catalog, tmp_path, masters_cli):
    folder, first, second, n = two_version_catalog
    moved = tmp_path / "elsewhere" / "moved"
    moved.parent.mkdir()
    shutil.move(folder, moved)
    _check(moved, first, second, n, masters_cli)


def test_data_path_repoints_a_catalog_and_a_wrong_one_is_refused(tmp_path, gendata, masters_cli):
    meta = tmp_path / "meta" / "catalog.sqlite"
    config = CatalogConfig(uri=f"ducklake:sqlite:{meta}", data_path=str(tmp_path / "old") + "/",
                           snapshot_root=str(tmp_path / "snaps"))
    tables, _ = gendata
    with Catalog.open(config) as cat:
        cat.append("questions", tables["questions"], "questions")
    shutil.move(tmp_path / "old", tmp_path / "new")  # the data moved, say to another disk
    repointed = config.model_copy(update={"data_path": str(tmp_path / "new") + "/"})
    with Catalog.open_read_only(repointed) as cat:
        assert cat.count("questions") == tables["questions"].num_rows
    proc = masters_cli("--catalog", f"ducklake:sqlite:{meta}", "--data-path", tmp_path / "new",
                       "--snapshot-root", tmp_path / "snaps", "sql", "SELECT count(*) AS n FROM questions")
    assert proc.returncode == 0 and str(tables["questions"].num_rows) in proc.stdout, proc.stderr
    with pytest.raises(CatalogError, match="holds none of them"):
        Catalog.open_read_only(config.model_copy(update={"data_path": str(tmp_path / "typo") + "/"}))
    proc = masters_cli("--catalog", f"ducklake:sqlite:{meta}", "--data-path", tmp_path / "typo",
                       "--snapshot-root", tmp_path / "snaps", "versions")
    assert proc.returncode != 0 and "holds none of them" in proc.stderr and "Traceback" not in proc.stderr
