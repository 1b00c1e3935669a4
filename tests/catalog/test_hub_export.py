"""A snapshot as a Hub dataset folder: one config per table, loadable offline with `datasets`,
row counts equal to the SQL counts; imported back into another catalog, row for row."""

import datasets
import pytest
import yaml

from catalog.hub_export import export_for_hub, read_meta
from catalog.hub_import import import_gendata
from catalog.snapshots import create_snapshot
from schemas.errors import SnapshotError

KEYS = {"images": "image_id", "questions": "question_id", "models": "model_id", "iterations": "iteration_id",
        "responses": "response_id", "token_stats": "stats_id", "verdicts": "verdict_id",
        "reward_configs": "reward_config_id", "rewards": "reward_id"}


@pytest.fixture
def exported(filled_catalog, tmp_path):
    cat, tables, config = filled_catalog
    snap = create_snapshot(cat, "hub", config.id, progress=False)
    return cat, config, snap, export_for_hub(cat, "hub", tmp_path / "hub", with_token_stats=True)


def test_export_loads_offline_with_sql_row_counts(exported):
    cat, config, snap, res = exported
    v = snap.catalog_version
    sql = {
        "responses": "SELECT count(*) FROM responses WHERE response_id IN (SELECT response_id FROM rewards "
                     "WHERE reward_config_id = $rc)",
        "rewards": "SELECT count(*) FROM rewards WHERE reward_config_id = $rc",
        "verdicts": "SELECT count(*) FROM verdicts WHERE response_id IN (SELECT response_id FROM rewards "
                    "WHERE reward_config_id = $rc)",
        "token_stats": "SELECT count(DISTINCT token_stats_id) FROM rewards WHERE reward_config_id = $rc",
        "questions": "SELECT count(DISTINCT r.question_id) FROM responses r JOIN rewards w USING (response_id) "
                     "WHERE w.reward_config_id = $rc",
        "training": "SELECT count(*) FROM rewards WHERE reward_config_id = $rc",
    }
    for name, query in sql.items():
        want = cat.sql(query, version=v, params={"rc": config.id}).column(0)[0].as_py()
        ds = datasets.load_dataset(str(res.folder), name, split="train")
        assert ds.num_rows == want == res.row_counts[name], name
    questions = datasets.load_dataset(str(res.folder), "questions", split="train")
    assert type(questions[0]["image"]).__name__.endswith("ImageFile")  # an Image feature, decoded
    training = datasets.load_dataset(str(res.folder), split="train")  # the default config
    assert training.num_rows == snap.num_rows
    card = (res.folder / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert {c["config_name"] for c in front["configs"]} == set(res.row_counts)
    assert front["task_categories"] and front["license"] == "other" and "masters-distill" in front["tags"]
    for needed in ("catalog version", "reward config", "mask ratio", "judged correct", "hf://datasets/"):
        assert needed in card
    meta = read_meta(res.folder)
    assert meta["snapshot_manifest_sha256"] == snap.manifest_sha256 and meta["row_counts"] == res.row_counts


def test_export_is_the_snapshot_at_its_version(exported, tmp_path):
    """Rows committed after the snapshot (another iteration) stay out of its export."""
    from masters.synthetic_gendata import synthetic_gendata

    cat, config, snap, res = exported
    later, _ = synthetic_gendata(num_questions=6, responses_per_source=4, iteration=1, seed=1)
    with cat.commit("a later iteration", stage="generate") as tx:
        for name, table in later.items():
            tx.append(name, table)
    assert cat.count("responses") > res.row_counts["responses"]
    again = export_for_hub(cat, "hub", tmp_path / "again", with_token_stats=True)
    assert again.row_counts == res.row_counts
    import pyarrow.parquet as pq

    snap_ids = set(pq.read_table(snap.path / "data", columns=["response_id"]).column(0).to_pylist())
    exported_ids = set(pq.read_table(again.folder / "data" / "responses").column("response_id").to_pylist())
    assert exported_ids == snap_ids


def test_export_refuses_foreign_snapshots_and_unsafe_targets(exported, tmp_path, catalog_dir):
    from catalog import Catalog

    cat, config, snap, res = exported
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with pytest.raises(SnapshotError, match="not an earlier export"):
        export_for_hub(cat, "hub", tmp_path / "precious")
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"
    with Catalog.open(tmp_path / "elsewhere") as other, pytest.raises(SnapshotError, match="not cut from this catalog"):
        export_for_hub(other, snap.path, tmp_path / "x")
    meta = yaml.safe_load((res.folder / "masters.yaml").read_text())
    assert "catalog_uri" not in meta and "path" not in meta["models"][0]  # no connection strings, no local paths


def test_import_brings_back_every_row(exported, tmp_path):
    import pyarrow.parquet as pq

    from catalog import Catalog

    cat, config, snap, res = exported
    with Catalog.open(tmp_path / "other") as other:
        first = import_gendata(other, res.folder)
        assert first.version is not None and first.added["responses"] == res.row_counts["responses"]
        again = import_gendata(other, res.folder)
        assert again.version is None and sum(again.added.values()) == 0  # idempotent
        for table, key in KEYS.items():
            theirs = set(other.sql(f"SELECT {key} FROM {table}").column(0).to_pylist())
            config_name = "questions" if table == "images" else table
            exported_ids = set(pq.read_table(res.folder / "data" / config_name).column(key).to_pylist()) - {None}
            assert theirs == exported_ids and theirs, table
        # the same rewards, value for value
        q = "SELECT reward_id, reward, advantage FROM rewards WHERE reward_config_id = $rc ORDER BY reward_id"
        assert other.sql(q, params={"rc": config.id}) == cat.sql(q, params={"rc": config.id})


def test_a_folder_that_is_not_gendata_is_refused(tmp_path, catalog_dir):
    from catalog import Catalog

    (tmp_path / "x").mkdir()
    with Catalog.open(catalog_dir) as cat, pytest.raises(SnapshotError, match="no masters.yaml"):
        import_gendata(cat, tmp_path / "x")


def test_import_verifies_every_file(exported, tmp_path, catalog_dir):
    import shutil

    from catalog import Catalog

    cat, config, snap, res = exported
    copy = tmp_path / "copy"
    shutil.copytree(res.folder, copy)
    (copy / "data" / "rewards" / "train-00000-of-00001.parquet").write_bytes(b"truncated")
    with Catalog.open(tmp_path / "fresh") as fresh, pytest.raises(SnapshotError, match="rewards.*sha256"):
        import_gendata(fresh, copy)
    with Catalog.open(tmp_path / "fresh") as fresh:
        assert fresh.count("responses") == 0  # nothing half-imported


def test_a_dataset_published_before_iteration_partitions_gets_each_rows_iteration(filled_catalog):
    from catalog.hub_import import _with_iteration

    cat, tables, _ = filled_catalog
    old = tables["verdicts"].drop_columns(["iteration_id"]).take([3, 0, 2])  # as published before
    filled = _with_iteration("verdicts", old, tables["responses"])
    of = dict(zip(tables["responses"].column("response_id").to_pylist(),
                  tables["responses"].column("iteration_id").to_pylist()))
    assert filled.column("iteration_id").to_pylist() == [of[r] for r in old.column("response_id").to_pylist()]
    assert _with_iteration("questions", tables["questions"], tables["responses"]) is tables["questions"]


def test_token_stats_of_both_encodings_round_trip_and_rescore(both_encodings_catalog, tmp_path):
    """A catalog whose iteration 0 was scored in fx16/1 and iteration 1 in fx/2, exported with its
    summaries and imported into another catalog: the summaries come back bit for bit, and a new
    reward config re-scores both iterations there exactly as in the source."""
    import pyarrow.parquet as pq

    from catalog import Catalog
    from masters.rescore import rescore
    from schemas.config import RewardConfig

    cat, _, config = both_encodings_catalog
    create_snapshot(cat, "both", config.id, progress=False)
    res = export_for_hub(cat, "both", tmp_path / "hub", with_token_stats=True)
    shard = next((res.folder / "data" / "token_stats").glob("*.parquet"))
    encodings = pq.ParquetFile(shard).metadata.row_group(0).column(
        pq.read_schema(shard).get_field_index("fx2_topk_ids")).encodings
    assert "BYTE_STREAM_SPLIT" in encodings  # published as compactly as the catalog keeps it
    new = RewardConfig(judge_id=config.judge_id, divergence="kl_reverse", w_distill=0.7)
    rescore(cat, new)
    q = "SELECT response_id, divergence, reward, advantage FROM rewards WHERE reward_config_id = $c ORDER BY 1"
    want = cat.sql(q, params={"c": new.id})
    stats = cat.sql("SELECT * FROM token_stats ORDER BY stats_id")
    with Catalog.open(tmp_path / "other") as other:
        import_gendata(other, res.folder)
        assert other.sql("SELECT * FROM token_stats ORDER BY stats_id").drop_columns(["created_at"]).equals(
            stats.drop_columns(["created_at"]))
        assert sorted(set(stats.column("encoding").to_pylist())) == ["fx/2", "fx16/1"]
        rescore(other, new)
        got = other.sql(q, params={"c": new.id}).to_pylist()
        assert [r["response_id"] for r in got] == want.column("response_id").to_pylist()
        for a, b in zip(got, want.to_pylist()):  # the window sums may add in another order: last bits
            assert a == {k: pytest.approx(v, rel=1e-12, abs=1e-12) if isinstance(v, float) else v for k, v in b.items()}
