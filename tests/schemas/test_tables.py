import pyarrow as pa
import pytest

from schemas.config import CatalogConfig, RewardConfig
from schemas.errors import ConfigError
from schemas.snapshot import SNAPSHOT_ROW_SCHEMA
from schemas.tables import ALL_TABLES, field_doc, table_spec

EXPECTED = {"images", "questions", "models", "iterations", "responses", "token_stats",
            "verdicts", "reward_configs", "rewards", "snapshots", "evaluations"}


def test_one_schema_per_table_with_a_required_id_column():
    assert {t.name for t in ALL_TABLES} == EXPECTED
    for spec in ALL_TABLES:
        field = spec.schema.field(spec.id_column)
        assert field.type == pa.string() and not field.nullable, spec.name
        assert spec.schema.names[0] == spec.id_column


def test_every_field_is_documented():
    for schema, where in [(t.schema, t.name) for t in ALL_TABLES] + [(SNAPSHOT_ROW_SCHEMA, "snapshot")]:
        for field in schema:
            assert field_doc(field).strip(), f"{where}.{field.name} has no doc"


def test_unknown_table_lists_the_tables():
    with pytest.raises(KeyError, match="responses"):
        table_spec("response")


def test_configs_refuse_unknown_keys_naming_them():
    with pytest.raises(ConfigError, match=r"w_acc_typo: unknown key"):
        RewardConfig.parse({"judge_id": "j", "w_acc_typo": 1.0}, where="reward config")
    with pytest.raises(ConfigError, match=r"divergence: "):
        RewardConfig.parse({"judge_id": "j", "divergence": "cosine"})


def test_reward_config_id_follows_its_content():
    a = RewardConfig(judge_id="j")
    assert a.id == RewardConfig(judge_id="j", divergence="jsd", w_acc=1.0).id
    assert a.id != RewardConfig(judge_id="j", w_distill=0.5).id


def test_embedded_catalog_layout(tmp_path):
    cfg = CatalogConfig.for_directory(str(tmp_path))
    assert cfg.uri == f"ducklake:{tmp_path}/catalog.ducklake"
    assert cfg.data_path == f"{tmp_path}/data/"
    assert cfg.snapshot_root == f"{tmp_path}/snapshots"


def test_every_value_rule_names_a_column_and_every_number_must_be_finite():
    """schemas/value_checks.py: each declared rule is about a column of its table, every float
    (column, list element or struct field) of every table is checked finite, and each enum's
    values are the ones its column's documentation names."""
    from schemas.value_checks import DECLARED, Finite, OneOf, rules

    for name, declared in DECLARED.items():
        for rule in declared:
            assert rule.column in table_spec(name).schema.names, (name, rule)
    floating = pa.types.is_floating
    for spec in ALL_TABLES:
        numbers = {f.name for f in spec.schema if floating(f.type)
                   or (pa.types.is_list(f.type) and floating(f.type.value_type))
                   or (pa.types.is_struct(f.type) and any(floating(c.type) for c in f.type))}
        assert {r.column for r in rules(spec) if isinstance(r, Finite)} == numbers, spec.name
    assert {"reward", "advantage", "behaviour_logprobs", "sampling", "student_logprobs", "score", "latency_s"} <= {
        r.column for spec in ALL_TABLES for r in rules(spec) if isinstance(r, Finite)}
    for name, declared in DECLARED.items():
        for rule in declared:
            if isinstance(rule, OneOf) and not callable(rule.values):
                doc = field_doc(table_spec(name).schema.field(rule.column))
                assert all(v in doc for v in rule.values), (name, rule.column, doc)
