"""Divergences D between the masked teacher and the student, by name: a protocol (the SQL of a
response's D over its token_stats row) and a registry (schemas.registry), so that a run config,
a reward config and the reward query all know the same names.

The registered ones are the divergences scoring stores per token (``jsd``, ``kl_forward``,
``kl_reverse``; ``schemas/token_codec.py``). A new one computed from the stored summaries is a
class with a ``sql`` method and one ``DIVERGENCES.register`` line."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from schemas import token_codec as codec
from schemas.registry import NoParams, Registry


class Divergence(Protocol):
    def sql(self, aggregation: str, ts: str = "ts") -> str:
        """SQL (DOUBLE) of a response's D: ``aggregation`` (mean / sum) over its tokens, from the
        token_stats row aliased ``ts``."""
        ...


@dataclass(frozen=True)
class StoredDivergence:
    """A divergence stored per token by scoring (computed from the full distributions there)."""

    column: str

    def sql(self, aggregation: str, ts: str = "ts") -> str:
        return codec.sql_divergence(self.column, aggregation, ts)


DIVERGENCES: Registry[Divergence] = Registry("divergence")
for _name in codec.DIVERGENCES:
    DIVERGENCES.register(_name, NoParams, lambda _params, column=_name: StoredDivergence(column))
