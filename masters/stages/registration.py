"""Stage ``iteration``: register an iteration before anything is generated for it: its teacher and
student checkpoints (``models``), the iteration row (run, index, mask ratio, the scoring pair,
the config hash) and the run's reward config. Not sharded: a `masters worker` of any shard makes
sure of it before its own work (the rows are idempotent by id), since judging and rewards read
the iteration row. Refuses to resume an iteration made with another configuration, and a teacher
and student that do not share a tokenizer."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

from catalog import Catalog
from gendata.vocab import check_shared_tokenizer
from masters.stages import queries
from masters.stages.base import Stage, Unit
from masters.stages.scope import IterationScope
from rewards.scores import reward_config_row
from schemas import ids
from schemas.errors import MastersError
from schemas.tables import ITERATIONS, MODELS, REWARD_CONFIGS


def checkpoint_facts(folder: Path) -> tuple[str, int]:
    """(family, parameter count) of a checkpoint, from config.json and the safetensors headers."""
    from safetensors import safe_open

    family = json.loads((folder / "config.json").read_text()).get("model_type", "unknown")
    count = 0
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), "pt") as st:
            for key in st.keys():
                count += math.prod(st.get_slice(key).get_shape())
    return family, count


def model_row(folder: Path, role: str, name: str | None = None, parent_model_id: str | None = None) -> dict:
    """A `models` row for a checkpoint folder; lineage comes from its meta.json when it has one
    (the trainer writes it: snapshot name, manifest sha256, catalog version)."""
    tiny = folder / "masters_tiny.json"
    info = json.loads(tiny.read_text()) if tiny.is_file() else {}
    meta_file = folder / "meta.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    family, params = checkpoint_facts(folder)
    return {"model_id": ids.checkpoint_id(folder), "name": name or folder.name, "role": role,
            "family": family, "size_label": info["size"] if isinstance(info.get("size"), str) else None,
            "path": str(folder.absolute()), "param_count": params, "parent_model_id": parent_model_id,
            "snapshot_name": meta.get("snapshot"), "snapshot_manifest_sha256": meta.get("snapshot_manifest_sha256"),
            "catalog_version": meta.get("catalog_version"),
            "meta": json.dumps({k: meta[k] for k in ("kind", "metrics") if k in meta}, default=str) if meta else None,
            "created_at": datetime.now(timezone.utc)}


def todo(catalog: Catalog, scope: IterationScope) -> list[Unit]:
    spec = scope.spec
    before = queries.iteration_config_hash(catalog, scope.iteration_id)
    if before is not None and not spec.same_config(before):
        raise MastersError(f"iteration {spec.iteration} of run {spec.run_id!r} is already in the catalog, made "
                           "with another configuration (teacher, student, mask ratio, sampling, seeds...); "
                           "resuming it would mix the two: use a new run_id")
    if (before is not None and queries.reward_config_present(catalog, scope.reward.id)
            and len(queries.model_ids_present(catalog, [scope.teacher_model_id, scope.student_model_id])) == 2):
        return []
    check_shared_tokenizer(Path(spec.teacher), Path(spec.student))
    return [Unit(scope.iteration_id, scope.iteration_id)]


class Registrar:
    def __init__(self, scope: IterationScope, models=None):
        self.scope = scope

    def produce(self, units) -> dict:
        s, spec = self.scope, self.scope.spec
        return {MODELS.name: MODELS.rows([model_row(Path(spec.teacher), "teacher"),
                                          model_row(Path(spec.student), "student")]),
                ITERATIONS.name: ITERATIONS.rows([{
                    "iteration_id": s.iteration_id, "run_id": spec.run_id, "iteration": spec.iteration,
                    "mask_ratio": spec.mask_ratio, "teacher_model_id": s.teacher_model_id,
                    "student_model_id": s.student_model_id, "config_hash": spec.config_hash(),
                    "created_at": datetime.now(timezone.utc)}]),
                REWARD_CONFIGS.name: REWARD_CONFIGS.rows([reward_config_row(s.reward)])}

    def close(self) -> None:
        pass


REGISTER = Stage(name="iteration", reads=(ITERATIONS.name, MODELS.name, REWARD_CONFIGS.name),
                 writes=(MODELS.name, ITERATIONS.name, REWARD_CONFIGS.name), todo=todo, open=Registrar,
                 batch=lambda scope: 1, fault="registered-iteration", sharded=False)
