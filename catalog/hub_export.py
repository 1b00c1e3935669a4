"""A snapshot as a Hugging Face Hub dataset folder: one config per catalog table, restricted to
what the snapshot trained on and read at the snapshot's catalog version, plus the training rows
themselves; a dataset card with the YAML the Hub reads; and ``masters.yaml`` (the manifest, the
reward config, iterations, models and judges behind the data), as distilabel ships its pipeline.

    README.md
    masters.yaml
    data/questions/train-00000-of-00001.parquet     questions, `image` as an Image feature
    data/responses/...  data/verdicts/...  data/rewards/...  [data/token_stats/...]
    data/models/...  data/iterations/...  data/reward_configs/...
    data/training/...                               the snapshot's own rows (what the trainer read)

The same folder is what `masters publish` uploads and what `masters import` reads back."""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from catalog.conform import conform
from catalog.engine import redact
from catalog.snapshots import catalog_kind, find_snapshot
from catalog.store import Catalog
from schemas.errors import SnapshotError
from schemas.snapshot import (DATA_DIR, IMAGE_TYPE, SNAPSHOT_ROW_SCHEMA, Manifest, manifest_sha256, sha256_file,
                              verify_snapshot)
from schemas.snapshot_folder import hf_features
from schemas.tables import TABLES, table_spec

FORMAT = "masters-gendata/1"
META_NAME = "masters.yaml"
SPLIT = "train"
TABLE_CONFIGS = ("responses", "verdicts", "rewards", "token_stats", "models", "iterations", "reward_configs")
QUESTION_EXTRA = [pa.field("image", IMAGE_TYPE), pa.field("image_format", pa.string()),
                  pa.field("image_width", pa.int32()), pa.field("image_height", pa.int32())]
TASKS = ["visual-question-answering", "image-text-to-text"]
TAGS = ["masters-distill", "gen-data", "distillation", "vision-language", "synthetic"]
UNPUBLISHED_PATH = ""  # the models config's `path`: the folder a checkpoint lies in is not published


def questions_schema() -> pa.Schema:
    base = table_spec("questions").schema
    return pa.schema(list(base) + QUESTION_EXTRA)


@dataclass
class HubExport:
    folder: Path
    snapshot: str
    manifest_sha256: str
    catalog_version: int
    row_counts: dict[str, int] = field(default_factory=dict)


def _plain(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def _queries(catalog: Catalog, version: int, reward_config_id: str, with_token_stats: bool) -> dict[str, str]:
    t = {n: f"(SELECT * FROM {catalog.table_ref(n, version)})" for n in
         ("questions", "images", "responses", "verdicts", "rewards", "token_stats", "models", "iterations",
          "reward_configs")}
    snap = "(SELECT response_id FROM _masters_snapshot_ids)"
    rc = "$rc"  # bound: the id comes from a snapshot folder
    q = {
        "questions": f"""SELECT q.*, CASE WHEN im.image_id IS NULL THEN NULL
                                  ELSE {{'bytes': im.bytes, 'path': NULL::VARCHAR}} END AS image,
                         im.format AS image_format, im.width AS image_width, im.height AS image_height
                         FROM {t['questions']} q LEFT JOIN {t['images']} im USING (image_id)
                         WHERE q.question_id IN (SELECT question_id FROM {t['responses']}
                                                 WHERE response_id IN {snap})
                         ORDER BY q.question_id""",
        "responses": f"SELECT * FROM {t['responses']} WHERE response_id IN {snap} ORDER BY response_id",
        "verdicts": f"SELECT * FROM {t['verdicts']} WHERE response_id IN {snap} ORDER BY verdict_id",
        "rewards": f"SELECT * FROM {t['rewards']} WHERE reward_config_id = {rc} AND response_id IN {snap} "
                   "ORDER BY reward_id",
        "models": f"""SELECT * FROM {t['models']} WHERE model_id IN (
                        SELECT model_id FROM {t['responses']} WHERE response_id IN {snap}
                        UNION SELECT teacher_model_id FROM {t['iterations']} WHERE iteration_id IN
                            (SELECT iteration_id FROM {t['responses']} WHERE response_id IN {snap})
                        UNION SELECT student_model_id FROM {t['iterations']} WHERE iteration_id IN
                            (SELECT iteration_id FROM {t['responses']} WHERE response_id IN {snap}))
                      ORDER BY model_id""",
        "iterations": f"""SELECT * FROM {t['iterations']} WHERE iteration_id IN
                          (SELECT iteration_id FROM {t['responses']} WHERE response_id IN {snap})
                          ORDER BY run_id, iteration""",
        "reward_configs": f"SELECT * FROM {t['reward_configs']} WHERE reward_config_id = {rc}",
    }
    if with_token_stats:
        q["token_stats"] = f"""SELECT * FROM {t['token_stats']} WHERE stats_id IN
                               (SELECT token_stats_id FROM {t['rewards']} WHERE reward_config_id = {rc}
                                AND response_id IN {snap}) ORDER BY stats_id"""
    return q


def _write(folder: Path, config: str, table: pa.Table) -> str:
    rel = f"{DATA_DIR}/{config}/{SPLIT}-00000-of-00001.parquet"
    (folder / rel).parent.mkdir(parents=True, exist_ok=True)
    spec = TABLES.get(config)  # a table's own writer options (token_stats: its byte planes apart)
    pq.write_table(table, folder / rel, row_group_size=2048,
                   **(spec.parquet if spec is not None and spec.parquet else {"compression": "zstd"}))
    return rel


def _card(name: str, manifest: Manifest, meta: dict, counts: dict[str, int], schemas: dict[str, pa.Schema],
          stats: list[dict], license_: str) -> str:
    import datasets

    infos = []
    for config, schema in schemas.items():
        info = datasets.DatasetInfo(features=hf_features(schema))
        info.splits = datasets.SplitDict()
        info.splits.add(datasets.SplitInfo(name=SPLIT, num_examples=counts[config]))
        infos.append({"config_name": config, **info._to_yaml_dict()})
    front = {
        "license": license_, "task_categories": TASKS, "tags": TAGS, "pretty_name": f"Gen-Data {name}",
        "configs": [{"config_name": c, "data_files": [{"split": SPLIT, "path": f"{DATA_DIR}/{c}/*.parquet"}],
                     **({"default": True} if c == "training" else {})} for c in schemas],
        "dataset_info": infos,
    }
    its = meta["iterations"]
    teachers = {m["model_id"]: m for m in meta["models"]}
    it_lines = "\n".join(
        f"| {i['run_id']} | {i['iteration']} | {i['mask_ratio']:.2f} | "
        f"{teachers.get(i['teacher_model_id'], {}).get('name', i['teacher_model_id'])} | "
        f"{teachers.get(i['student_model_id'], {}).get('name', i['student_model_id'])} |" for i in its)
    stat_lines = "\n".join(f"| {s['source']} | {s['n']} | {s['accuracy']:.3f} | {s['mean_reward']:.3f} "
                           f"(sd {s['sd_reward'] or 0:.3f}) | {s['mean_divergence']:.4f} |" for s in stats)
    count_lines = "\n".join(f"| `{c}` | {n} |" for c, n in counts.items())
    rc = meta["reward_config"]
    judges = ", ".join(f"`{j['kind']}` ({j['judge_id'][:12]}, {j['n']} verdicts)" for j in meta["judges"])
    return f"""---
{yaml.safe_dump(front, sort_keys=False)}---
# Gen-Data `{name}`

Pre-generated multi-response training data for distilling a vision-language model with the
*Masters* recipe (masked teacher, progressive restoration, offline GRPO), exported from a
[masters-distill](https://github.com/) catalog. Every response of the masked teacher and of the
student is here with its judge verdicts, its rewards and GRPO advantage, and (optionally) per-token
logit summaries; `training` holds the exact rows the trainer consumed.

## What produced it

- snapshot `{name}`: catalog version **{manifest.catalog_version}**, manifest sha256 `{meta['snapshot_manifest_sha256']}`
- reward config `{rc['reward_config_id']}`: R = {rc['w_acc']} x R_acc + {rc['w_distill']} x R_distill,
  D = {rc['divergence']} ({rc['aggregation']} over tokens), min-max normalised per question group
- judges: {judges}

| run | iteration | teacher mask ratio | teacher | student |
|---|---|---|---|---|
{it_lines}

## Rows

| config | rows |
|---|---|
{count_lines}

| source | responses | judged correct | mean reward | mean D |
|---|---|---|---|---|
{stat_lines}

## Use

```python
import datasets
train = datasets.load_dataset("<repo or folder>", "training", split="train")     # what the trainer read
questions = datasets.load_dataset("<repo or folder>", "questions", split="train")  # images included
```

```sql
-- DuckDB, straight from the Hub
SELECT r.source, avg(w.reward) AS reward, avg(w.r_acc) AS accuracy
FROM 'hf://datasets/<repo>/data/rewards/*.parquet' w
JOIN 'hf://datasets/<repo>/data/responses/*.parquet' r USING (response_id)
GROUP BY r.source;
```

`masters import <repo>` loads it into a masters-distill catalog, where it can be re-judged and
re-scored without regenerating anything{'' if 'token_stats' in counts else ' (re-scoring the distillation reward needs the per-token summaries: publish with `--with-token-stats`)'}.
`{META_NAME}` holds the manifest, the reward config, the iterations, models and judges.
"""


def export_for_hub(catalog: Catalog, snapshot: str | os.PathLike, out: str | os.PathLike, *,
                   with_token_stats: bool = False, license: str = "other") -> HubExport:
    """Write the Hub folder for a snapshot (a name under the catalog's snapshot root, or a path)
    to ``out``, replacing what is there. The folder is built beside ``out`` and renamed into place."""
    src = find_snapshot(catalog, snapshot)
    manifest = verify_snapshot(src)
    digest = manifest_sha256(src)
    known = catalog.sql("SELECT count(*) FROM snapshots WHERE name = $n AND manifest_sha256 = $s",
                        params={"n": manifest.name, "s": digest}).column(0)[0].as_py()
    if not known:
        raise SnapshotError(f"snapshot {src} was not cut from this catalog ({redact(catalog.config.uri)}): export it "
                            "with the catalog it came from")
    version = catalog.check_version(manifest.catalog_version)
    out = Path(out)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / META_NAME).is_file())):
        raise SnapshotError(f"--out {out} exists and is not an earlier export (no {META_NAME}); "
                            "choose a new or empty folder")
    tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        shards = sorted((src / DATA_DIR).glob("*.parquet"))
        training = pa.concat_tables([pq.read_table(p, schema=SNAPSHOT_ROW_SCHEMA) for p in shards])
        con = catalog.connection().cursor()
        try:
            con.register("_masters_snapshot_ids", training.select(["response_id"]))
            counts, schemas = {}, {}
            for config, sql in _queries(catalog, version, manifest.reward_config_id, with_token_stats).items():
                params = {"rc": manifest.reward_config_id} if "$rc" in sql else {}
                table = con.execute(sql, params).to_arrow_table()
                schema = questions_schema() if config == "questions" else table_spec(config).schema
                table = table.select(schema.names).cast(schema) if config == "questions" else conform(table_spec(config), table)
                if config == "models":  # where a checkpoint lies is this machine's business: not published
                    table = table.set_column(table.schema.get_field_index("path"), schema.field("path"),
                                             pa.array([UNPUBLISHED_PATH] * table.num_rows, pa.string()))
                _write(tmp, config, table)
                counts[config], schemas[config] = table.num_rows, schema
            con.register("_masters_training", training.drop_columns(["image"]))
            stats = con.execute("""
                SELECT source, count(*) AS n, avg(reward) AS mean_reward, stddev(reward) AS sd_reward,
                       avg(r_acc) AS accuracy, avg(divergence) AS mean_divergence
                FROM _masters_training GROUP BY source ORDER BY source""").to_arrow_table().to_pylist()
            judges = con.execute(
                f"SELECT judge_id, any_value(judge_kind) AS kind, count(*) AS n FROM "
                f"(SELECT * FROM {catalog.table_ref('verdicts', version)}) "
                "WHERE response_id IN (SELECT response_id FROM _masters_snapshot_ids) GROUP BY judge_id "
                "ORDER BY judge_id").to_arrow_table().to_pylist()
        finally:
            con.close()
        _write(tmp, "training", training)
        counts["training"], schemas["training"] = training.num_rows, SNAPSHOT_ROW_SCHEMA
        meta = {"format": FORMAT, "snapshot": manifest.name, "snapshot_manifest_sha256": digest,
                "catalog_version": manifest.catalog_version,
                # the kind of catalog only: a connection string may carry a password, a path a user name
                "catalog_kind": manifest.configs.get("catalog_kind")
                                or catalog_kind(str(manifest.configs.get("catalog_uri", ""))),
                "reward_config": _plain(manifest.configs.get("reward_config", {})),
                "filters": manifest.configs.get("filters", {}), "with_token_stats": with_token_stats,
                "row_counts": counts, "judges": judges,
                "iterations": _plain(pq.read_table(tmp / DATA_DIR / "iterations").to_pylist()),
                "models": _plain(pq.read_table(tmp / DATA_DIR / "models").drop_columns(["meta", "path"]).to_pylist())}
        (tmp / "README.md").write_text(_card(manifest.name, manifest, meta, counts, schemas, stats, license))
        meta["files"] = {str(f.relative_to(tmp)): sha256_file(f) for f in sorted(tmp.rglob("*")) if f.is_file()}
        meta["content_sha256"] = hashlib.sha256(yaml.safe_dump(meta["files"]).encode()).hexdigest()
        (tmp / META_NAME).write_text(yaml.safe_dump(meta, sort_keys=False))
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        if out.exists():
            os.rename(out, old)  # aside, not deleted, until the new export is in place
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return HubExport(out, manifest.name, digest, manifest.catalog_version, counts)


def read_meta(folder: str | os.PathLike, verify: bool = False) -> dict:
    """masters.yaml of an export; with ``verify``, every file it lists is checked (sha256)."""
    path = Path(folder) / META_NAME
    if not path.is_file():
        raise SnapshotError(f"{folder} is not a masters-distill Gen-Data dataset: no {META_NAME}")
    meta = yaml.safe_load(path.read_text()) or {}
    if meta.get("format") != FORMAT:
        raise SnapshotError(f"{path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if verify:
        for rel, sha in (meta.get("files") or {}).items():
            f = Path(folder) / rel
            if not f.is_file():
                raise SnapshotError(f"{folder}: {rel} is missing (an incomplete download?)")
            if sha256_file(f) != sha:
                raise SnapshotError(f"{folder}: {rel} does not match its sha256 in {META_NAME} (changed or corrupt)")
    return meta


