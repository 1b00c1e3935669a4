"""Stages fanned out as N shards on Ray (``production.launcher: ray``).

One Ray actor per shard lives for the whole run and keeps its models loaded across the stages and
batches it serves (``ModelCache``), and its stage's producer across the stage's batches. For a
stage, the driver asks the catalog for the todo once (light units: ids), splits it by shard
(``shard_of(unit.key, N)``) and keeps two batches in flight per actor: it hydrates a batch (its
images, token ids... read from the catalog) and sends it; the actor produces the rows, writes
them as Parquet files under the catalog's data path (``catalog.data_files.write_table_files``: the
actor never opens the catalog) and answers with the paths. As each answer arrives the driver,
the only writer, registers the batch in one commit with the ids checked
(``CommitBuilder.add_file``) and sends that shard its next batch, so memory holds the batches in
flight, not the todo, and this works with the embedded DuckDB-file catalog too. A killed actor
loses at most the batches it had in flight (files it wrote are orphans, removed at the next
run's start); the driver registers what the other shards send, then fails with a message, and a
re-run does only what is missing.

The data path must be reachable from every Ray node under the same name (a shared file system
or object storage) when the cluster has more than one node."""

from __future__ import annotations

import os
import time
import uuid
from collections import deque

from tqdm.auto import tqdm

from catalog import Catalog
from masters import faults
from masters.stages import ModelCache, Stage, StageResult, shard_of, stage
from masters.stages.base import chunks, commit_message, counted, hydrated, left_out, value_counts
from schemas.config import CatalogConfig
from schemas.errors import MastersError

IN_FLIGHT = 2  # batches sent ahead per shard: the next one is there when a shard finishes one


class ShardWorker:
    """The body of one shard's Ray actor (its calls run one at a time, in order)."""

    def __init__(self, index: int, count: int, threads: int | None):
        self.index, self.count = index, count
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.models = ModelCache()
        self._token, self._producer = None, None

    def ready(self) -> int:
        return os.getpid()

    def produce(self, token: str, stage_name: str, scope, units, catalog_config: CatalogConfig) -> dict:
        """One hydrated batch of stage ``stage_name`` (the producer is opened at the stage's first
        batch, named by ``token``): the files written under ``catalog_config``'s data path,
        {"files": {table: [path]}, "counts": {...}}."""
        from catalog.data_files import write_table_files

        s = stage(stage_name)
        if token != self._token:
            self.end()
            self._producer, self._token = s.open(scope, self.models), token
        tables = counted(self._producer.produce(units))
        files = {name: write_table_files(catalog_config, name, t) for name, t in tables.items()}
        faults.point(f"{s.fault}-written", shard=self.index)  # files written, not yet registered
        return {"files": files, "counts": value_counts(s, tables)}

    def end(self, token: str | None = None) -> None:
        """Close the stage's producer (when ``token`` names it, or whatever is open)."""
        if self._producer is not None and token in (None, self._token):
            self._producer.close()
            self._producer, self._token = None, None

    def model_loads(self) -> int:
        return self.models.loads

    def clear(self) -> None:
        self.end()
        self.models.clear()


def _import_ray():
    try:
        import ray
    except ImportError:
        raise MastersError("production.launcher: ray needs Ray: pip install 'masters-distill[cluster]'") from None
    return ray


class RayLauncher:
    def __init__(self, production, progress: bool = False):
        ray = self.ray = _import_ray()
        self.count, self.progress = production.shards, progress
        res = production.resources_per_shard
        self._owns_ray = not ray.is_initialized()
        t0 = time.perf_counter()
        if self._owns_ray:
            kwargs = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR",
                          configure_logging=True)
            if production.ray_address is None:  # a local instance with room for every shard
                kwargs["num_cpus"] = max(os.cpu_count() or 1, int(res.num_cpus * self.count + 0.999))
            else:
                kwargs["address"] = production.ray_address
            try:
                ray.init(**kwargs)
            except Exception as exc:  # an unreachable address, a port in use...
                raise MastersError(f"cannot start or join Ray (ray_address {production.ray_address!r}): {exc}") from None
        env = {k: v for k, v in os.environ.items() if k in (faults.ENV, "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE",
                                                              "MASTERS_CACHE", "XDG_CACHE_HOME")}
        threads = production.threads_per_shard or max(1, int(res.num_cpus + 0.999))
        env.setdefault("OMP_NUM_THREADS", str(threads))
        actor = ray.remote(ShardWorker).options(num_cpus=res.num_cpus, num_gpus=res.num_gpus,
                                                runtime_env={"env_vars": env}, max_restarts=0)
        self.actors = [actor.remote(k, self.count, threads) for k in range(self.count)]
        try:
            ray.get([a.ready.remote() for a in self.actors])
        except Exception as exc:
            self.close()
            raise MastersError(f"the {self.count} Ray shard workers did not start: {exc}") from None
        self.startup_seconds = time.perf_counter() - t0

    def run(self, s: Stage, catalog: Catalog, scope) -> StageResult:
        ray = self.ray
        t0 = time.perf_counter()
        units = s.todo(catalog, scope)
        result = StageResult(s.name, units=len(units))
        if not units:
            result.left_out = left_out(s, catalog, scope)
            return result
        size = s.batch(scope)
        pending = {k: deque(chunks([u for u in units if shard_of(u.key, self.count) == k], size))
                   for k in range(self.count)}
        token, scope_ref = uuid.uuid4().hex, ray.put(scope)
        inflight: dict = {}  # ObjectRef -> (shard, weight)
        failures: dict[int, BaseException] = {}

        def send(k: int) -> None:
            if pending[k] and k not in failures:
                batch = hydrated(s, catalog, scope, pending[k].popleft())
                ref = self.actors[k].produce.remote(token, s.name, scope_ref, batch, catalog.config)
                inflight[ref] = (k, sum(u.weight for u in batch))

        for k in range(self.count):
            for _ in range(IN_FLIGHT):
                send(k)
        message, meta = commit_message(s, scope, None)
        with tqdm(total=sum(u.weight for u in units), desc=f"{s.name} [{self.count} shards]",
                  disable=not self.progress) as bar:
            while inflight:
                (ref,), _ = ray.wait(list(inflight), num_returns=1)
                k, weight = inflight.pop(ref)
                try:
                    item = ray.get(ref)
                except Exception as exc:  # the actor died, or the stage raised in it
                    failures.setdefault(k, exc)
                    continue
                with catalog.commit(f"{message} shard {k}/{self.count}", **{**meta, "shard": f"{k}/{self.count}"}) as tx:
                    for name in s.writes:
                        for path in item["files"].get(name, []):
                            tx.add_file(name, path)
                result.record(tx.result.added, tx.result.skipped, tx.result.version, item["counts"])
                bar.update(weight)
                faults.point(s.fault)
                send(k)
        for k, a in enumerate(self.actors):
            if k not in failures:
                a.end.remote(token)
        result.seconds = time.perf_counter() - t0
        if failures:
            k, exc = sorted(failures.items())[0]
            raise MastersError(f"stage {s.name}: shard {k}/{self.count} failed ({_reason(exc)}). What every shard "
                               "sent before is committed; run the same command again to resume (only the missing "
                               "work is redone)") from None
        result.left_out = left_out(s, catalog, scope)
        return result

    def model_loads(self) -> int:
        """Models the shards have loaded from disk so far, all together."""
        return sum(self.ray.get([a.model_loads.remote() for a in self.actors]))

    def release(self) -> None:
        """Drop the models the shards keep loaded (their GPU memory too), e.g. before training."""
        for a in self.actors:
            try:
                self.ray.get(a.clear.remote())
            except Exception:  # a dead shard holds nothing
                pass

    def close(self) -> None:
        for a in getattr(self, "actors", []):
            try:
                self.ray.kill(a)
            except Exception:
                pass
        self.actors = []
        if self._owns_ray and self.ray.is_initialized():
            self.ray.shutdown()


def _reason(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    if isinstance(cause, MastersError):
        return str(cause)
    text = str(exc).strip().splitlines()
    name = type(exc).__name__
    if "ActorDied" in name or "ActorUnavailable" in name or "died" in " ".join(text[:3]).lower():
        return "its worker process died"
    return f"{name}: {text[-1] if text else ''}"
