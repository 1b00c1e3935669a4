"""The whole loop on the team catalog, on real servers: PostgreSQL metadata and an S3 data path
(moto on 127.0.0.1), credentials from the AWS environment. It ends with the rows an embedded
catalog gets from the same run, and the credentials are nowhere: not in the catalog's metadata,
not in a snapshot's manifest or card, not on the console."""

import uuid
from pathlib import Path

import pytest

COMPARED = {  # table -> (id column, columns that must be equal; times and local paths differ)
    "questions": ("question_id", ["question_id", "split", "answer"]),
    "models": ("model_id", ["model_id", "name", "role", "parent_model_id", "snapshot_name"]),
    "iterations": ("iteration_id", ["iteration_id", "mask_ratio", "teacher_model_id", "student_model_id"]),
    "responses": ("response_id", ["response_id", "iteration_id", "source", "token_ids", "text"]),
    "token_stats": ("stats_id", ["stats_id", "iteration_id", "jsd", "teacher_topk_ids", "teacher_topk_logprobs",
                                 "fx2_jsd", "fx2_topk_ids", "fx2_topk_sqrtp", "jsd_sum"]),
    "verdicts": ("verdict_id", ["verdict_id", "iteration_id", "score", "state"]),
    "rewards": ("reward_id", ["reward_id", "iteration_id", "reward", "advantage"]),
    "snapshots": ("snapshot_id", ["snapshot_id", "name", "num_rows"]),  # manifests name their catalog
    "evaluations": ("evaluation_id", ["evaluation_id", "model_id", "accuracy"]),
}


def _rows(cat) -> dict:
    return {t: cat.sql(f"SELECT {', '.join(cols)} FROM {t} ORDER BY {key}").to_pylist()
            for t, (key, cols) in COMPARED.items()}


def test_the_loop_on_postgres_and_s3_ends_with_the_embedded_rows(tiny_pair, tmp_path, postgres_server, s3_server,
                                                                  monkeypatch, capfd):
    import pyarrow.fs as pafs

    from catalog import Catalog
    from masters.loop import run
    from masters.run_config import RunConfig
    from schemas.config import CatalogConfig

    for k, v in s3_server.env.items():
        monkeypatch.setenv(k, v)
    bucket = s3_server.create_bucket("lake-" + uuid.uuid4().hex[:8])
    team = CatalogConfig(uri="ducklake:postgres:" + postgres_server.create_database("team_" + uuid.uuid4().hex[:8]),
                         data_path=bucket + "lake/", snapshot_root=str(tmp_path / "team" / "snapshots"))
    embedded = CatalogConfig.for_directory(str(tmp_path / "embedded"))
    student, teacher = tiny_pair("qwen2_vl")
    cfg = RunConfig.parse({"run_id": "team", "iterations": 1, "questions": {"train": 6, "test": 6},
                           "student": str(student), "teachers": [{"model": str(teacher)}],
                           "teacher_responses": 2, "student_responses": 2, "sampling": {"max_new_tokens": 8},
                           "scoring": {"compile": False},  # bit-equal summaries across processes
                           "train": {"max_steps": 2, "batch_size": 4, "learning_rate": 1e-3}})
    got = {}
    for name, config in (("embedded", embedded), ("team", team)):
        with Catalog.open(config) as cat:
            run(cfg, cat, progress=False)
            got[name] = _rows(cat)
    assert all(got["team"][t] for t in COMPARED)  # every table filled
    assert got["team"] == got["embedded"]
    import pyarrow.parquet as pq

    def trained_on(root):  # the snapshot folder the trainer read
        return pq.read_table(Path(root) / "team-iter0" / "data").sort_by("response_id")

    assert trained_on(team.snapshot_root).equals(trained_on(embedded.snapshot_root))

    fs, root = pafs.FileSystem.from_uri(team.data_path)
    stored = [f.path for f in fs.get_file_info(pafs.FileSelector(root, recursive=True)) if f.path.endswith(".parquet")]
    assert any("/main/responses/iteration_id=" in p for p in stored)  # the data lives in the bucket, partitioned
    with Catalog.open_read_only(team) as cat:  # a reader: the lock-down still reaches the bucket
        assert cat.count("responses") == len(got["embedded"]["responses"])
        import duckdb

        from schemas.errors import ReadOnlyError

        files = f"read_parquet('{bucket}lake/main/responses/*/*.parquet')"
        with pytest.raises(ReadOnlyError, match="reads no file here"):  # ...through the catalog's tables only
            cat.sql(f"SELECT count(*) FROM {files}")
        with pytest.raises(duckdb.PermissionException):  # and DuckDB's own lock-down, past our check
            cat.connection().execute(f"SELECT count(*) FROM {files}").fetchall()

    # the credentials are nowhere but in this process's environment
    secret = s3_server.SECRET
    import psycopg

    with psycopg.connect(team.uri.removeprefix("ducklake:postgres:")) as con:
        tables = [r[0] for r in con.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        for t in tables:
            for row in con.execute(f'SELECT * FROM "{t}"'):
                assert secret not in repr(row) and s3_server.KEY_ID not in repr(row), t
    for f in Path(team.snapshot_root).rglob("*"):
        if f.is_file() and f.suffix in (".json", ".md", ".yaml", ".txt"):
            assert secret not in f.read_text(errors="ignore"), f
    out, err = capfd.readouterr()
    assert secret not in out + err
