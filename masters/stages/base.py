"""The one shape of everything that produces Gen-Data.

A :class:`Stage` declares its name, the tables it reads and writes, ``todo(catalog, scope)`` (the
work units not done yet, asked of the catalog: light, ids and the like), ``hydrate(catalog,
scope, units)`` (the heavy inputs of one batch, e.g. its images and token ids, fetched just before
the batch is produced, so memory holds a batch, not the todo) and ``open(scope, models)`` (a
producer holding what the stage loads once, e.g. its models) whose ``produce(units)`` turns one
batch of units into Arrow tables per written table. :func:`run_stage` asks, hydrates, produces
and commits one batch at a time, with a fault point after every commit; a crash loses at most
the batch in flight and a re-run does only what is missing. What a stage leaves undone by
design is never silent: ``left_out(catalog, scope)`` names it (e.g. ``score``'s empty responses,
``rewards``' skipped groups) and the result counts it.

Any stage runs as shard k of N over its todo: a unit belongs to shard ``hash(unit.key) % N``, a
stable hash of its key, so shards never overlap and a re-run of one shard does only its own
missing work. Per-question stages key their units by question (generation, scoring, judging,
rewards), so one shard owns whole groups from generation to rewards."""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pyarrow as pa
from tqdm.auto import tqdm

from catalog import Catalog
from masters import faults
from masters.stages.models import ModelCache
from schemas.errors import ConfigError


@dataclass(frozen=True)
class Unit:
    """One work unit: ``id`` names it, ``key`` decides its shard, ``data`` is what producing it
    needs (picklable: it travels to shard workers), ``weight`` counts it on progress bars."""

    id: str
    key: str
    data: Any = None
    weight: int = 1


def shard_of(key: str, count: int) -> int:
    """The shard (0..count-1) owning ``key``: a stable hash, the same in every process."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:16], 16) % count


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __post_init__(self):
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigError(f"shard {self.index}/{self.count}: need 0 <= K < N (K counts from 0)")

    @classmethod
    def parse(cls, text: str) -> "Shard":
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text or "")
        if not m:
            raise ConfigError(f"--shard {text!r}: write K/N, e.g. 0/4 for the first of four shards")
        return cls(int(m[1]), int(m[2]))

    def owns(self, unit: Unit) -> bool:
        return shard_of(unit.key, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


class Producer(Protocol):
    def produce(self, units: Sequence[Unit]) -> dict[str, pa.Table]:
        """One batch: rows per written table."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Stage:
    """A Gen-Data stage (see the module docstring)."""

    name: str
    reads: tuple[str, ...]
    writes: tuple[str, ...]
    todo: Callable[[Catalog, Any], list[Unit]]
    open: Callable[[Any, Any], Producer]  # (scope, models: ModelCache) -> Producer
    batch: Callable[[Any], int]  # units per batch (one commit each)
    fault: str  # faults.point name reached after each committed batch
    hydrate: Callable[[Catalog, Any, Sequence[Unit]], list[Unit]] | None = None  # a batch's heavy inputs
    # False: every shard runs the whole todo (idempotent, ids checked), for a stage every later
    # stage of every shard needs done first (registering the iteration)
    sharded: bool = True
    count_by: tuple[str, str] | None = None  # (table, column) whose values the result counts
    # what the stage leaves out of its scope by design, by kind: the key (shard key) of each item
    left_out: Callable[[Catalog, Any], dict[str, list[str]]] | None = None
    iteration: Callable[[Any], int | None] = lambda scope: getattr(scope, "iteration", None)


@dataclass
class StageResult:
    stage: str
    units: int = 0  # units to do (in this shard)
    batches: int = 0
    added: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # values of stage.count_by
    left_out: dict[str, int] = field(default_factory=dict)  # stage.left_out, counted (in this shard)
    versions: list[int] = field(default_factory=list)
    seconds: float = 0.0

    def record(self, added: dict[str, int], skipped: dict[str, int], version: int | None,
               counts: dict[str, int]) -> None:
        self.batches += 1
        for mine, theirs in ((self.added, added), (self.skipped, skipped), (self.counts, counts)):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v
        if version is not None:
            self.versions.append(version)


def chunks(units: Sequence[Unit], size: int) -> Iterator[Sequence[Unit]]:
    for start in range(0, len(units), max(1, size)):
        yield units[start:start + size]


def hydrated(stage: Stage, catalog: Catalog, scope: Any, batch: Sequence[Unit]) -> list[Unit]:
    return list(batch) if stage.hydrate is None else stage.hydrate(catalog, scope, batch)


def with_data(units: Sequence[Unit], extra: Callable[[Unit], dict]) -> list[Unit]:
    """The units with more data (``extra(unit)``, a dict) merged into theirs."""
    return [Unit(u.id, u.key, {**u.data, **extra(u)}, u.weight) for u in units]


def select(units: list[Unit], shard: Shard | None) -> list[Unit]:
    return units if shard is None else [u for u in units if shard.owns(u)]


def commit_message(stage: Stage, scope: Any, shard: Shard | None) -> tuple[str, dict]:
    it = stage.iteration(scope)
    msg = stage.name + ("" if it is None else f" it{it}") + ("" if shard is None else f" shard {shard}")
    meta = {"stage": stage.name, "iteration": it, "run_id": getattr(scope, "run_id", None),
            "shard": None if shard is None else str(shard)}
    return msg, meta


def counted(tables: dict[str, pa.Table]) -> dict[str, pa.Table]:
    """The non-empty tables of a batch."""
    return {name: t for name, t in tables.items() if t is not None and t.num_rows}


def value_counts(stage: Stage, tables: dict[str, pa.Table]) -> dict[str, int]:
    """How often each value of ``stage.count_by`` occurs in a batch (e.g. verdict states)."""
    if not stage.count_by or stage.count_by[0] not in tables:
        return {}
    out: dict[str, int] = {}
    for value in tables[stage.count_by[0]].column(stage.count_by[1]).to_pylist():
        out[value] = out.get(value, 0) + 1
    return out


def left_out(stage: Stage, catalog: Catalog, scope: Any, shard: Shard | None = None) -> dict[str, int]:
    """How many items of each kind the stage leaves out of its scope by design (of this shard):
    the kinds with at least one."""
    if stage.left_out is None:
        return {}
    found = stage.left_out(catalog, scope)
    counts = {kind: sum(1 for key in keys if shard is None or shard_of(key, shard.count) == shard.index)
              for kind, keys in found.items()}
    return {kind: n for kind, n in counts.items() if n}


def run_stage(stage: Stage, catalog: Catalog, scope: Any, shard: Shard | None = None, *,
              models=None, progress: bool = False) -> StageResult:
    """Ask the catalog what is left (of this shard), produce it a batch at a time, commit each
    batch (one version, ids checked), reach the stage's fault point after each commit; count
    what the stage leaves out by design (``StageResult.left_out``)."""
    t0 = time.perf_counter()
    units = select(stage.todo(catalog, scope), shard if stage.sharded else None)
    result = StageResult(stage.name, units=len(units))
    if not units:
        result.left_out = left_out(stage, catalog, scope, shard if stage.sharded else None)
        return result
    producer = stage.open(scope, models if models is not None else ModelCache())
    message, meta = commit_message(stage, scope, shard)
    label = stage.name + ("" if shard is None else f" [{shard}]")
    try:
        with tqdm(total=sum(u.weight for u in units), desc=label, disable=not progress) as bar:
            for batch in chunks(units, stage.batch(scope)):
                tables = counted(producer.produce(hydrated(stage, catalog, scope, batch)))
                with catalog.commit(message, **meta) as tx:
                    for name in stage.writes:
                        if name in tables:
                            tx.append(name, tables[name])
                result.record(tx.result.added, tx.result.skipped, tx.result.version, value_counts(stage, tables))
                bar.update(sum(u.weight for u in batch))
                faults.point(stage.fault)
    finally:
        producer.close()
    result.left_out = left_out(stage, catalog, scope, shard if stage.sharded else None)
    result.seconds = time.perf_counter() - t0
    return result

