"""Typed configuration shared across layers. Every config refuses unknown keys and names the key."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from schemas.errors import ConfigError
from schemas.ids import canonical_json, content_id


class StrictModel(BaseModel):
    """Base of every config: unknown keys are refused, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def parse(cls, data: dict, where: str = "config"):
        """Validate ``data``; on failure raise ConfigError naming each bad key and the fix."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, where)) from None


def set_dotted(doc: dict, key: str, value, where: str) -> None:
    """Set ``doc[a][b][c] = value`` for ``key`` 'a.b.c', making missing sections. Unknown keys are
    left for the config's own validation to refuse by name."""
    parts = key.split(".")
    node = doc
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: {key}: {part!r} is not a section")
    node[parts[-1]] = value


def format_validation_error(exc: ValidationError, where: str) -> str:
    lines = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            lines.append(f"  - {key}: unknown key (remove it or check its spelling)")
        else:
            lines.append(f"  - {key}: {err['msg']}")
    return f"invalid {where}:\n" + "\n".join(lines)


def _known_divergence(name: str) -> str:
    from schemas.divergences import DIVERGENCES  # here: that module builds on this one

    return DIVERGENCES.check(name)


DivergenceName = Annotated[str, AfterValidator(_known_divergence)]  # a name in schemas.divergences.DIVERGENCES


class RewardWeights(StrictModel):
    """The divergence and the weights of R (a run config's ``reward`` section; RewardConfig adds
    the judge)."""

    divergence: DivergenceName = Field("jsd", description="D: jsd (default), kl_forward or kl_reverse "
                                       "(schemas/divergences.py DIVERGENCES)")
    aggregation: Literal["mean", "sum"] = Field("mean", description="token aggregation of D")
    w_acc: float = Field(1.0, allow_inf_nan=False, description="weight of R_acc")
    w_distill: float = Field(1.0, allow_inf_nan=False, description="weight of R_distill")


class RewardConfig(RewardWeights):
    """How R is computed from a judge's verdicts and the stored token summaries."""

    judge_id: str = Field(description="judge whose verdicts give R_acc")
    normalisation: Literal["group"] = Field("group", description="scope of the min-max normalisation of D")

    @property
    def id(self) -> str:
        return content_id("reward_config", **self.model_dump())

    def to_json(self) -> str:
        return canonical_json(self.model_dump())


class CatalogConfig(StrictModel):
    """Where the Gen-Data catalog lives."""

    uri: str = Field(description="DuckLake catalog: 'ducklake:<file>.ducklake', 'ducklake:sqlite:<file>' "
                                 "or 'ducklake:postgres:<conninfo>'")
    data_path: str = Field(description="folder or object-storage URI for the Parquet data files")
    snapshot_root: str = Field(description="folder where snapshots are materialised")
    extension_directory: str | None = Field(None, description="where DuckDB keeps extensions "
                                            "(default: the user's cache folder)")
    row_group_size: int = Field(65_536, gt=0, description="rows per Parquet row group on ingest")

    @classmethod
    def for_directory(cls, directory: str, **overrides) -> "CatalogConfig":
        """The embedded default: <dir>/catalog.ducklake + <dir>/data/ + <dir>/snapshots/."""
        from pathlib import Path

        d = Path(directory).expanduser().absolute()
        return cls(uri=f"ducklake:{d / 'catalog.ducklake'}", data_path=str(d / "data") + "/",
                   snapshot_root=str(d / "snapshots"), **overrides)
