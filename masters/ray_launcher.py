"""Stages fanned out as N shards on Ray (``production.launcher: ray``).

One Ray actor per shard lives for the whole run and keeps its models loaded across the stages and
batches it serves (``ModelCache``). For a stage, the driver asks the catalog for the todo once,
splits it by shard (``shard_of(unit.key, N)``) and calls each actor's ``run`` as a streaming
generator: per batch the actor produces the rows, writes them as Parquet files under the
catalog's data path (``catalog.data_files.write_table_file``: the actor never opens the catalog)
and yields the paths. The driver is the only writer: it registers each batch as it arrives, in
one commit with the ids checked (``CommitBuilder.add_file``), so this works with the embedded
DuckDB-file catalog too. A killed actor loses at most the batch it had in flight (its files are
orphans, removed at the next run's start); the driver registers what the other shards send,
then fails with a message, and a re-run does only what is missing.

The data path must be reachable from every Ray node under the same name (a shared file system
or object storage) when the cluster has more than one node."""

from __future__ import annotations

import os
import queue
import threading
import time

from tqdm.auto import tqdm

from catalog import Catalog
from masters import faults
from masters.stages import ModelCache, Stage, StageResult, shard_of, stage
from masters.stages.base import chunks, commit_message, counted, value_counts
from schemas.config import CatalogConfig
from schemas.errors import MastersError

_DONE = object()


class ShardWorker:
    """The body of one shard's Ray actor."""

    def __init__(self, index: int, count: int, threads: int | None):
        self.index, self.count = index, count
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.models = ModelCache()

    def ready(self) -> int:
        return os.getpid()

    def run(self, stage_name: str, scope, units, catalog_config: CatalogConfig):
        """Per batch, the files written under ``catalog_config``'s data path:
        {"files": {table: [path]}, "weight": n, "counts": {...}}."""
        from catalog.data_files import write_table_file

        s = stage(stage_name)
        producer = s.open(scope, self.models)
        try:
            for batch in chunks(units, s.batch(scope)):
                tables = counted(producer.produce(batch))
                files = {name: [write_table_file(catalog_config, name, t)] for name, t in tables.items()}
                faults.point(f"{s.fault}-written", shard=self.index)  # files written, not yet registered
                yield {"files": files, "weight": sum(u.weight for u in batch), "counts": value_counts(s, tables)}
        finally:
            producer.close()

    def model_loads(self) -> int:
        return self.models.loads

    def clear(self) -> None:
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

    def _drain(self, k: int, gen, out: queue.Queue) -> None:
        try:
            for ref in gen:
                out.put((k, self.ray.get(ref)))
        except BaseException as exc:  # the actor died, or the stage raised in it
            out.put((k, exc))
        out.put((k, _DONE))

    def run(self, s: Stage, catalog: Catalog, scope) -> StageResult:
        t0 = time.perf_counter()
        units = s.todo(catalog, scope)
        result = StageResult(s.name, units=len(units))
        if not units:
            return result
        per_shard = [[u for u in units if shard_of(u.key, self.count) == k] for k in range(self.count)]
        out: queue.Queue = queue.Queue()
        threads = []
        for k, mine in enumerate(per_shard):
            if mine:
                gen = self.actors[k].run.options(num_returns="streaming").remote(s.name, scope, mine, catalog.config)
                threads.append(threading.Thread(target=self._drain, args=(k, gen, out), daemon=True))
        for t in threads:
            t.start()
        failures: dict[int, BaseException] = {}
        live = len(threads)
        message, meta = commit_message(s, scope, None)
        with tqdm(total=sum(u.weight for u in units), desc=f"{s.name} [{self.count} shards]",
                  disable=not self.progress) as bar:
            while live:
                k, item = out.get()
                if item is _DONE:
                    live -= 1
                elif isinstance(item, BaseException):
                    failures[k] = item
                else:
                    with catalog.commit(f"{message} shard {k}/{self.count}", **{**meta, "shard": f"{k}/{self.count}"}) as tx:
                        for name in s.writes:
                            for path in item["files"].get(name, []):
                                tx.add_file(name, path)
                    result.record(tx.result.added, tx.result.skipped, tx.result.version, item["counts"])
                    bar.update(item["weight"])
                    faults.point(s.fault)
        result.seconds = time.perf_counter() - t0
        if failures:
            k, exc = sorted(failures.items())[0]
            raise MastersError(f"stage {s.name}: shard {k}/{self.count} failed ({_reason(exc)}). What every shard "
                               "sent before is committed; run the same command again to resume (only the missing "
                               "work is redone)") from None
        return result

    def model_loads(self) -> int:
        """Models the shards have loaded from disk so far, all together."""
        return sum(self.ray.get([a.model_loads.remote() for a in self.actors]))

    def clear(self) -> None:
        """Drop the models the shards keep loaded (before work on other checkpoints)."""
        self.ray.get([a.clear.remote() for a in self.actors])

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
