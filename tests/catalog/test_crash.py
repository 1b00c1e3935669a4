"""A crash mid-commit leaves the catalog at the previous version: a real writing subprocess is
killed with SIGKILL at two points (while data files are being written, and after the appends
but before COMMIT), then the catalog is reopened and checked. The writer says on its stdout where
it is (a line per data file written); the test kills it when it has heard enough, no sleeping."""

import signal
import subprocess

import pytest

from catalog import Catalog

WRITER = r"""
import sys
import pyarrow as pa
from catalog import Catalog
from masters.synthetic_gendata import synthetic_gendata
tables, _ = synthetic_gendata(num_questions=6, seed=99)  # rows the catalog does not hold
r = tables["responses"]
mode = sys.argv[1] if len(sys.argv) > 1 else "{mode}"
cat = Catalog.open("{catalog}")
with cat.commit("doomed", stage="crash-test") as tx:
    tx.append("questions", tables["questions"])
    if mode == "before_commit":
        tx.append("responses", r)
        print("APPENDED", flush=True)
        sys.stdin.read()  # the appends are done, COMMIT not sent: wait here to be killed
    else:
        i = 0
        while True:  # many chunks, each a Parquet file of its own, until killed
            chunk = r.set_column(0, "response_id", pa.array([f"{{i}}-{{k}}" for k in range(r.num_rows)]))
            tx.append("responses", chunk)
            print(f"WROTE {{i}}", flush=True)
            i += 1
"""
CHUNKS_BEFORE_KILL = 3  # while_writing: killed after this many chunk files, while writing the next


@pytest.mark.parametrize("mode", ["before_commit", "while_writing"])
def test_killed_writer_leaves_previous_version(filled_catalog, catalog_dir, mode, run_python):
    cat, tables, _ = filled_catalog
    version = cat.current_version()
    counts = {name: cat.count(name) for name in tables}
    cat.close()  # release the single-writer lock for the subprocess

    proc = run_python(WRITER.format(catalog=catalog_dir, mode=mode), stdin=subprocess.PIPE,
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        expected = ["APPENDED"] if mode == "before_commit" else [f"WROTE {i}" for i in range(CHUNKS_BEFORE_KILL)]
        for want in expected:  # blocks until the writer got there (or died: an empty line)
            line = proc.stdout.readline()
            assert line.strip() == want, proc.stderr.read() if not line else line
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    with Catalog.open(catalog_dir) as cat:
        assert cat.current_version() == version
        assert {name: cat.count(name) for name in tables} == counts
        dirs = [catalog_dir / "data" / "main" / t for t in ("questions", "responses")]
        left = sum(len(list(d.rglob("*.parquet"))) for d in dirs)  # partitions are folders
        # the killed writer left unregistered files beside the two committed ones: its responses
        # file (before_commit), or one per chunk it reported written (while_writing)
        assert left >= 2 + (1 if mode == "before_commit" else CHUNKS_BEFORE_KILL)
        assert cat.delete_orphaned_files() == 0  # young files may be another writer's in flight
        assert cat.delete_orphaned_files(older_than=None) == left - 2  # no other writer here
        assert [len(list(d.rglob("*.parquet"))) for d in dirs] == [1, 1]
        assert {name: cat.count(name) for name in tables} == counts
        # the catalog keeps working: the next commit lands as the next version
        from masters.synthetic_gendata import synthetic_gendata

        more, _ = synthetic_gendata(num_questions=6, seed=99)  # what the killed writer held
        result = cat.append("responses", more["responses"], "after crash")
        assert result.version == version + 1
        assert cat.count("responses") == counts["responses"] + more["responses"].num_rows
