"""Several processes committing into one shared catalog (SQLite file, real PostgreSQL server):
4 writers x 25 commits with half their ids shared store every distinct id exactly once, and a
writer SIGKILLed while holding the writer lock leaves nothing partial and blocks nobody."""

import json
import signal
import subprocess
import time

import pytest

from catalog import Catalog

WRITERS, COMMITS, ROWS = 4, 25, 20  # half of each commit's ids are shared by every writer

WRITER = r"""
import json, sys, time
import pyarrow as pa
from catalog import Catalog
from masters.synthetic_gendata import synthetic_gendata
from schemas.config import CatalogConfig

config = CatalogConfig.model_validate_json(sys.argv[1])
writer, start = int(sys.argv[2]), float(sys.argv[3])
tables, _ = synthetic_gendata(num_questions=3, responses_per_source=4)
template = tables["responses"].slice(0, 1)
cat = Catalog.open(config)
while time.time() < start:  # every writer begins at once
    time.sleep(0.01)
added = 0
for j in range({commits}):
    ids = [f"w{{writer}}-{{j}}-{{k}}" for k in range({rows} // 2)] + [f"shared-{{j}}-{{k}}" for k in range({rows} // 2)]
    batch = pa.concat_tables([template] * len(ids)).set_column(0, "response_id", pa.array(ids))
    with cat.commit(f"writer {{writer}} batch {{j}}", stage="concurrency") as tx:
        tx.append("responses", batch)
    added += tx.result.added["responses"]
cat.close()
print(json.dumps({{"added": added}}), flush=True)
"""


def _python(run_python, code: str, *args: str) -> subprocess.Popen:
    return run_python(code, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _writers(config, run_python) -> list[dict]:
    code = WRITER.format(commits=COMMITS, rows=ROWS)
    start = time.time() + 8  # time for every interpreter to import and open the catalog
    procs = [_python(run_python, code, config.model_dump_json(), str(w), str(start)) for w in range(WRITERS)]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=600)
        assert p.returncode == 0, stderr[-3000:]
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


@pytest.fixture(params=["sqlite", "postgres"])
def shared_catalog(request):
    return request.getfixturevalue({"sqlite": "sqlite_catalog", "postgres": "pg_catalog"}[request.param])


def test_concurrent_writers_store_every_id_once(shared_catalog, run_python):
    Catalog.open(shared_catalog).close()  # created once; the writers race on commits, not on creation
    results = _writers(shared_catalog, run_python)
    expected = ({f"w{w}-{j}-{k}" for w in range(WRITERS) for j in range(COMMITS) for k in range(ROWS // 2)}
                | {f"shared-{j}-{k}" for j in range(COMMITS) for k in range(ROWS // 2)})
    with Catalog.open_read_only(shared_catalog) as cat:
        total, distinct = cat.sql("SELECT count(*), count(DISTINCT response_id) FROM responses").to_pylist()[0].values()
        stored = set(cat.sql("SELECT response_id FROM responses").column(0).to_pylist())
    assert total == distinct == len(expected)  # 0 duplicate ids
    assert stored == expected  # no committed row lost
    assert sum(r["added"] for r in results) == len(expected)  # each writer's count is the truth


KILLED = r"""
import sys, time
import pyarrow as pa
from catalog import Catalog
from catalog.store import CommitBuilder
from masters.synthetic_gendata import synthetic_gendata
from schemas.config import CatalogConfig

config = CatalogConfig.model_validate_json(sys.argv[1])
tables, _ = synthetic_gendata(num_questions=3, responses_per_source=4, seed=7)
registered = CommitBuilder.register_pending

def pause_after_registering(self):  # the files are registered inside the open transaction
    registered(self)
    print("REGISTERED", flush=True)
    time.sleep(300)

CommitBuilder.register_pending = pause_after_registering
cat = Catalog.open(config)
with cat.commit("doomed", stage="crash-test") as tx:
    tx.append("questions", tables["questions"])
    tx.append("responses", tables["responses"])
"""


def test_a_writer_killed_holding_the_lock_leaves_nothing_partial(pg_catalog, gendata, run_python):
    from datetime import timedelta

    tables, _ = gendata
    with Catalog.open(pg_catalog) as cat:
        with cat.commit("first", stage="generate") as tx:
            for name, table in tables.items():
                tx.append(name, table)
        version = cat.current_version()
        counts = {name: cat.count(name) for name in tables}
    proc = _python(run_python, KILLED, pg_catalog.model_dump_json())
    line = proc.stdout.readline()
    assert line.strip() == "REGISTERED", proc.stderr.read()[-3000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)

    with Catalog.open(pg_catalog) as cat:
        assert cat.current_version() == version  # nothing of the killed commit is visible
        assert {name: cat.count(name) for name in tables} == counts
        from masters.synthetic_gendata import synthetic_gendata

        more, _ = synthetic_gendata(num_questions=3, responses_per_source=4, seed=7)  # what it held
        result = cat.append("responses", more["responses"], "after the kill")  # the lock was released
        assert result.version == version + 1
        from pathlib import Path

        def registered():
            return {f for t in tables for f in cat.sql(
                f"SELECT data_file FROM ducklake_list_files('lake', '{t}')").column(0).to_pylist()}

        on_disk = {str(p) for p in Path(pg_catalog.data_path).rglob("*.parquet")}
        orphans = on_disk - registered()
        assert orphans  # the killed writer's files
        assert cat.delete_orphaned_files(older_than=timedelta(0)) == len(orphans)
        assert {str(p) for p in Path(pg_catalog.data_path).rglob("*.parquet")} == registered()  # orphans only
        assert cat.count("responses") == counts["responses"] + more["responses"].num_rows
