"""Crash injection for the resume tests: with ``MASTERS_FAULT=<point>[:<n>]`` in the environment,
the process SIGKILLs itself the n-th time (default: the first) it reaches ``point``. Points are
placed right after commits and before/after training, where a real crash would hurt most.
A point reached in a shard worker also answers to ``<point>/shard<k>`` (that shard only).
Without the variable, ``point`` does nothing."""

from __future__ import annotations

import os
import signal

ENV = "MASTERS_FAULT"
_reached: dict[str, int] = {}


def point(name: str, shard: int | None = None) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    want, _, nth = spec.partition(":")
    if want not in (name, f"{name}/shard{shard}"):
        return
    _reached[want] = _reached.get(want, 0) + 1
    if _reached[want] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
