"""TRL SFTTrainer on snapshot-format folders, for two VLM families through one code path."""

import json

import pytest

from schemas.errors import SnapshotVerificationError
from schemas.snapshot import MANIFEST_NAME, manifest_sha256
from trainer.config import SFTRunConfig
from trainer.sft import train_sft


@pytest.mark.parametrize("family", ["qwen2_vl", "llava"])
def test_sft_learns_and_writes_lineage(tiny_checkpoints, sft_folder, tmp_path, family):
    from gendata.hf_generate import load_vlm

    out = tmp_path / "out"
    cfg = SFTRunConfig(model=str(tiny_checkpoints[family]), snapshot=str(sft_folder),
                       output_dir=str(out), max_steps=30, batch_size=8, learning_rate=3e-3,
                       logging_steps=5, progress=False)
    metrics = train_sft(cfg)
    assert metrics["steps"] == 30
    assert metrics["last_logged_loss"] < 0.7 * metrics["first_logged_loss"]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["snapshot"] == "sft-test"
    assert meta["snapshot_manifest_sha256"] == manifest_sha256(sft_folder)
    assert meta["trainer_config"]["max_steps"] == 30 and meta["base_model"] == str(tiny_checkpoints[family])
    model, processor = load_vlm(out)  # an ordinary HF folder that reloads
    assert type(model).__name__.lower().startswith(family.split("_")[0])


def test_tampered_or_incomplete_snapshot_is_refused(tiny_checkpoints, sft_folder, tmp_path, tampered_copy):
    copy, shard = tampered_copy(sft_folder)
    cfg = SFTRunConfig(model=str(tiny_checkpoints["llava"]), snapshot=str(copy),
                       output_dir=str(tmp_path / "o"), max_steps=1, progress=False)
    with pytest.raises(SnapshotVerificationError, match=rf"{shard.relative_to(copy)}: changed"):
        train_sft(cfg)
    (copy / MANIFEST_NAME).unlink()
    with pytest.raises(SnapshotVerificationError, match="manifest.json: missing"):
        train_sft(cfg)
    assert not (tmp_path / "o").exists()


def test_a_catalog_snapshot_is_valid_sft_input(tiny_checkpoints, filled_catalog, tmp_path):
    from catalog.snapshots import create_snapshot

    cat, tables, config = filled_catalog
    snap = create_snapshot(cat, "teacher-responses", config.id, progress=False)
    metrics = train_sft(SFTRunConfig(model=str(tiny_checkpoints["qwen2_vl"]), snapshot=str(snap.path),
                                     output_dir=str(tmp_path / "naive"), max_steps=4, batch_size=8,
                                     progress=False))
    assert metrics["steps"] == 4
    assert json.loads((tmp_path / "naive" / "meta.json").read_text())["catalog_version"] == snap.catalog_version
