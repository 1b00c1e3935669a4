"""What a catalog table's values must be, beyond their Arrow types: the rules ``catalog.conform``
applies to every append (and import) before anything is written.

- **finite**: every float column, every float element of a list column and every float field of
  a struct column (rewards, advantages, scores, log-probs, divergences, latencies, sampling
  parameters...) holds a finite number: NaN and infinities are refused. Derived from the schema,
  so a new float column is covered without a line here.
- **no null elements**: a list column's elements are all present (a per-token list with a hole
  decodes to garbage). Derived from the schema too.
- **enums** (``OneOf``): a verdict's state, a response's source and finish reason, a model's
  role, a question's answer type, a token_stats row's encoding, a reward config's divergence,
  aggregation and normalisation.
- **lengths** (``Agree``): ``responses.num_tokens == len(token_ids)``; behaviour log-probs, when
  present, one per token; token_stats' per-token lists as their row's ``encoding`` lays them out
  (``schemas/token_codec.py``, ``schemas/token_codec_fx2.py``): an ``fx16/1`` row holds
  ``num_tokens`` values per per-token list and ``num_tokens x top_k`` per top-k list, and no fx/2
  values; an ``fx/2`` row holds empty fx16/1 lists, ``num_tokens`` values per scalar stream (and
  flag, and tail) and ``num_tokens x top_k - hits`` top-k ids and steps.
- **presence** (``Present`` / ``Absent``): an ``ok`` verdict has a score and only an ``ok``
  verdict has one; an ``fx/2`` row has its streams and exact sums.
- **ranges** (``InRange``): a verdict's score in [0, 1], mask ratios in [0, 1), the ``fx/2``
  carriers in [2^23, 2^24) (an integer 0 <= v < 2^23 travels as the float32 2^23 + v).
- **ids** (``IdFormat``): a partition column holds content-hash ids (they name folders).

Every check is vectorised (pyarrow.compute, numpy): the per-row Python work happens only once a
rule has failed, to say where. ``check_values`` raises ``SchemaMismatchError(table, column,
"<problem>: <value>; <fix>", row=i)`` for the first rule that fails, at its first bad row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, get_args

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas import token_codec as codec
from schemas import token_codec_fx2 as fx2
from schemas.config import RewardConfig
from schemas.errors import SchemaMismatchError
from schemas.tables import TABLES, TableSpec

VERDICT_STATES = ("ok", "unparseable", "error")
SOURCES = ("teacher", "student")
FINISH_REASONS = ("stop", "length", "abort")  # abort: vLLM's, a request the engine stopped
MODEL_ROLES = ("student", "teacher", "reference")
ANSWER_TYPES = ("word", "number", "letter")
AGGREGATIONS = tuple(get_args(RewardConfig.model_fields["aggregation"].annotation))
NORMALISATIONS = tuple(get_args(RewardConfig.model_fields["normalisation"].annotation))
ID_PATTERN = r"[0-9A-Za-z_.:-]+"  # a content-hash id: safe in a folder name (partition values)
CARRIER_RANGE = (float(1 << 23), float(1 << 24))

FINITE_FIX = ("a stored number must be finite (a NaN or an infinity usually comes from a diverged model "
              "or a division by zero upstream)")
_SHOW = 80  # characters of a value shown in a message


def show(value: Any) -> str:
    """A value as an error message shows it (repr, shortened)."""
    text = repr(value)
    return text if len(text) <= _SHOW else text[:_SHOW - 3] + "..."


# --- expressions over a record batch --------------------------------------------------------------


@dataclass(frozen=True)
class Expr:
    """A per-row quantity of a batch, with how a message names it."""

    describe: str
    fn: Callable[["Batch"], pa.Array]

    def __call__(self, batch: "Batch") -> pa.Array:
        return batch.cached(self.describe, lambda: self.fn(batch))


class Batch:
    """A record batch being checked, with the quantities several rules share (a row's encoding,
    say) computed once."""

    def __init__(self, batch: pa.RecordBatch):
        self.batch, self.num_rows, self._cache = batch, batch.num_rows, {}

    def column(self, name: str) -> pa.Array:
        return self.batch.column(name)

    def cached(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]


def value(column: str) -> Expr:
    return Expr(column, lambda b: b.column(column))


def length(column: str, null_as: int | None = None) -> Expr:
    """len(column); a null list stays null (the row is not checked) unless ``null_as``."""
    def fn(b):
        n = pc.list_value_length(b.column(column))
        return n if null_as is None else pc.fill_null(n, null_as)
    return Expr(f"len({column})", fn)


def product(a: str, b: str) -> Expr:
    return Expr(f"{a} x {b}", lambda t: pc.multiply(t.column(a).cast(pa.int64()), t.column(b).cast(pa.int64())))


def const(v: int) -> Expr:
    return Expr(str(v), lambda b: pa.array(np.full(b.num_rows, v, np.int64)))


def equals(column: str, v: str) -> Expr:
    return Expr(f"{column} = {v!r}", lambda b: pc.equal(b.column(column), v))


def differs(column: str, v: str) -> Expr:
    return Expr(f"{column} != {v!r}", lambda b: pc.not_equal(b.column(column), v))


def _parents(column: pa.Array) -> np.ndarray:
    """The row of each element of ``column.flatten()`` (which skips null lists, even where their
    offsets span values: ``pc.list_parent_indices`` would count those)."""
    lengths = pc.fill_null(pc.list_value_length(column), 0).to_numpy()
    return np.repeat(np.arange(len(column)), lengths)


def _true_per_row(column: pa.Array) -> np.ndarray:
    """How many elements of each row's bool list are true."""
    flat = pc.fill_null(column.flatten(), False).to_numpy(zero_copy_only=False)
    return np.bincount(_parents(column), weights=flat, minlength=len(column)).astype(np.int64)


def fx2_topk_stored() -> Expr:
    """The top-k entries an fx/2 row stores per token: k, less the emitted token when it is in the
    teacher's top-k (``fx2_topk_hit``), summed over its tokens."""
    def fn(b):
        total = pc.multiply(b.column("num_tokens").cast(pa.int64()), b.column("top_k").cast(pa.int64()))
        return pc.subtract(total, pa.array(_true_per_row(b.column("fx2_topk_hit"))))
    return Expr("num_tokens x top_k - hits(fx2_topk_hit)", fn)


# --- rules ----------------------------------------------------------------------------------------


def _first(mask: pa.Array) -> int | None:
    """Index of the first true of a boolean array (nulls count as false), None when none is."""
    mask = pc.fill_null(mask, False)
    if not pc.any(mask).as_py():
        return None
    return int(pc.index(mask, True).as_py())


def _when(rule_when: Expr | None, batch: Batch) -> pa.Array | None | bool:
    """The rows a rule applies to (None: all of them; False: none)."""
    if rule_when is None:
        return None
    return batch.cached(f"when {rule_when.describe}", lambda: _some(pc.fill_null(rule_when(batch), False)))


def _some(mask: pa.Array) -> pa.Array | bool:
    return mask if pc.any(mask).as_py() else False


def _and(mask: pa.Array, when: pa.Array | None) -> pa.Array:
    return mask if when is None else pc.and_(pc.fill_null(mask, False), when)


def _where(when: Expr | None) -> str:
    return "" if when is None else f" where {when.describe}"


def _element(column: pa.Array, flat_index: int) -> tuple[int, int]:
    """(row, index within the row's list) of an element of ``column.flatten()``."""
    parents = _parents(column)
    row = int(parents[flat_index])
    return row, flat_index - int(np.searchsorted(parents, row))


def _float_child(arr: pa.Array) -> list[tuple[str, pa.Array]]:
    """(what, float values) of a column: itself, its list elements or its struct fields."""
    t = arr.type
    if pa.types.is_floating(t):
        return [("", arr)]
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return [("element", arr)] if pa.types.is_floating(t.value_type) else []
    if pa.types.is_struct(t):
        return [(f"field {t.field(i).name}", pc.struct_field(arr, [i]))
                for i in range(t.num_fields) if pa.types.is_floating(t.field(i).type)]
    return []


@dataclass(frozen=True)
class Finite:
    """Every number of a float column (its values, list elements or struct fields) is finite."""

    column: str
    fix: str = FINITE_FIX

    def first(self, batch: Batch) -> tuple[int, str] | None:
        for what, arr in _float_child(batch.column(self.column)):
            if what == "element":
                flat = arr.flatten()
                v = flat.to_numpy(zero_copy_only=False)
                ok = np.isfinite(v)
                if flat.null_count:  # the null-element rule reports those
                    ok |= flat.is_null().to_numpy(zero_copy_only=False)
                if ok.all():
                    continue
                k = int(np.argmin(ok))
                row, j = _element(arr, k)
                return row, f"element {j} is not a finite number: {show(float(v[k]))}; {self.fix}"
            if arr.null_count == 0:
                v = arr.to_numpy(zero_copy_only=False)
                ok = np.isfinite(v)
                if ok.all():
                    continue
                row = int(np.argmin(ok))
            else:
                row = _first(pc.invert(pc.fill_null(pc.is_finite(arr), True)))
                if row is None:
                    continue
            label = f"{what} is not" if what else "not"
            return row, f"{label} a finite number: {show(arr[row].as_py())}; {self.fix}"
        return None


@dataclass(frozen=True)
class NoNullElements:
    """A list column's elements are all present."""

    column: str
    fix: str = "every element of the list must be present (use a null list, where the column allows one)"

    def first(self, batch: Batch) -> tuple[int, str] | None:
        arr = batch.column(self.column)
        flat = arr.flatten()
        if not flat.null_count:
            return None
        k = _first(flat.is_null())
        row, j = _element(arr, k)
        return row, f"element {j} is null: None; {self.fix}"


@dataclass(frozen=True)
class OneOf:
    """An enum: the column holds one of ``values`` (or of what ``values()`` returns, for a
    registry that can grow); a null is the null check's business."""

    column: str
    values: tuple[str, ...] | Callable[[], tuple[str, ...]]
    fix: str = ""

    def first(self, batch: Batch) -> tuple[int, str] | None:
        arr = batch.column(self.column)
        values = tuple(self.values() if callable(self.values) else self.values)
        ok = pc.is_in(arr, value_set=pa.array(values, arr.type))
        if pc.all(pc.or_(ok, arr.is_null())).as_py():
            return None
        row = _first(pc.and_(pc.invert(ok), arr.is_valid()))
        fix = self.fix or f"use one of {', '.join(values)}"
        return row, f"not one of {', '.join(values)}: {show(arr[row].as_py())}; {fix}"


def divergence_names() -> tuple[str, ...]:
    """The divergences a reward config may name: those registered (schemas.divergences), read
    when a row is checked so that one registered later counts."""
    from schemas.divergences import DIVERGENCES

    return tuple(DIVERGENCES)


@dataclass(frozen=True)
class Agree:
    """``actual`` equals ``expected`` in every row (``when``: the rows the rule applies to); rows
    where either side is null are not checked."""

    column: str
    actual: Expr
    expected: Expr
    fix: str
    when: Expr | None = None

    def first(self, batch: Batch) -> tuple[int, str] | None:
        when = _when(self.when, batch)
        if when is False:
            return None
        a, e = self.actual(batch), self.expected(batch)
        row = _first(_and(pc.not_equal(a, e), when))
        if row is None:
            return None
        return row, (f"{self.actual.describe} must equal {self.expected.describe} = {e[row].as_py()}"
                     f"{_where(self.when)}: {a[row].as_py()}; {self.fix}")


@dataclass(frozen=True)
class Present:
    """The (nullable) column holds a value in the rows ``when`` selects."""

    column: str
    when: Expr
    fix: str

    def first(self, batch: Batch) -> tuple[int, str] | None:
        when = _when(self.when, batch)
        if when is False:
            return None
        row = _first(_and(batch.column(self.column).is_null(), when))
        return None if row is None else (row, f"null{_where(self.when)}: None; {self.fix}")


@dataclass(frozen=True)
class Absent:
    """The column is null in the rows ``when`` selects."""

    column: str
    when: Expr
    fix: str

    def first(self, batch: Batch) -> tuple[int, str] | None:
        arr = batch.column(self.column)
        when = _when(self.when, batch)
        if when is False:
            return None
        row = _first(_and(arr.is_valid(), when))
        return None if row is None else (
            row, f"must be null{_where(self.when)}: {show(arr[row].as_py())}; {self.fix}")


@dataclass(frozen=True)
class InRange:
    """lo <= value <= hi (< hi with ``hi_open``), for the values or the list elements of a column."""

    column: str
    lo: float
    hi: float
    fix: str
    hi_open: bool = False

    def first(self, batch: Batch) -> tuple[int, str] | None:
        arr = batch.column(self.column)
        listed = pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)
        values = arr.flatten() if listed else arr
        v = values.to_numpy(zero_copy_only=False)
        if values.null_count:
            v = np.where(values.is_null().to_numpy(zero_copy_only=False), self.lo, v)
        bad = (v < self.lo) | ((v >= self.hi) if self.hi_open else (v > self.hi))
        if not bad.any():  # NaN compares false: the finite rule reports it
            return None
        k = int(np.argmax(bad))
        span = f"[{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"
        if listed:
            row, j = _element(arr, k)
            return row, f"element {j} outside {span}: {show(values[k].as_py())}; {self.fix}"
        return k, f"outside {span}: {show(values[k].as_py())}; {self.fix}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


@dataclass(frozen=True)
class IdFormat:
    """A column of content-hash ids (letters, digits, '_.:-'), e.g. the partition column, whose
    values name folders."""

    column: str
    fix: str = "ids are content hashes (schemas/ids.py): letters, digits and '_.:-' only"

    def first(self, batch: Batch) -> tuple[int, str] | None:
        arr = batch.column(self.column)
        distinct = pc.unique(arr.drop_null())
        good = pc.match_substring_regex(distinct, f"^{ID_PATTERN}$")
        if pc.all(good).as_py() is not False:
            return None
        bad = distinct.filter(pc.invert(good))
        row = _first(pc.is_in(arr, value_set=bad))
        return row, f"not a content-hash id: {show(arr[row].as_py())}; {self.fix}"


Rule = Finite | NoNullElements | OneOf | Agree | Present | Absent | InRange | IdFormat

# --- the rules of each table -------------------------------------------------------------------

_FX16 = equals("encoding", codec.FX16)
_FX2 = equals("encoding", codec.FX2)
_ENCODE = "encode the row with schemas.token_codec.encode_columns"
_FX16_LISTS = codec.PER_TOKEN + ("teacher_topk_ids", "teacher_topk_logprobs")
_PER_TOKEN_FX2 = fx2.SCALAR_STREAMS + ("fx2_topk_hit", "fx2_topk_tail")
_SUMS = ("jsd_sum", "kl_forward_sum", "kl_reverse_sum")
_MASK_FIX = "a mask ratio is in [0, 1)"


def _token_stats_rules() -> tuple[Rule, ...]:
    rules: list[Rule] = [OneOf("encoding", codec.ENCODINGS,
                               f"use one of {', '.join(codec.ENCODINGS)} (schemas/token_codec.py)"),
                         InRange("teacher_mask_ratio", 0.0, 1.0, _MASK_FIX, hi_open=True)]
    # fx16/1: one value per scored token, top-k lists num_tokens x top_k, no fx/2 values
    rules += [Agree(c, length(c), value("num_tokens"),
                    f"an fx16/1 row holds one value per scored token; {_ENCODE}", _FX16) for c in codec.PER_TOKEN]
    rules += [Agree(c, length(c), product("num_tokens", "top_k"),
                    f"an fx16/1 row holds top_k values per scored token; {_ENCODE}", _FX16)
              for c in ("teacher_topk_ids", "teacher_topk_logprobs")]
    rules += [Agree(c, length(c, null_as=0), const(0), f"an fx16/1 row holds no fx/2 values; {_ENCODE}", _FX16)
              for c in fx2.CARRIED + ("fx2_topk_hit",)]
    rules += [Absent(c, _FX16, f"an fx16/1 row holds no fx/2 sums; {_ENCODE}") for c in _SUMS]
    # fx/2: empty fx16/1 lists, every stream present and as long as the row's tokens say
    rules += [Agree(c, length(c), const(0), f"an fx/2 row holds empty fx16/1 lists; {_ENCODE}", _FX2)
              for c in _FX16_LISTS]
    rules += [Present(c, _FX2, f"an fx/2 row holds every fx/2 column; {_ENCODE}")
              for c in fx2.CARRIED + ("fx2_topk_hit",) + _SUMS]
    rules += [Agree(c, length(c), value("num_tokens"),
                    f"an fx/2 row holds one value per scored token in this stream; {_ENCODE}", _FX2)
              for c in _PER_TOKEN_FX2]
    rules += [Agree(c, length(c), fx2_topk_stored(),
                    f"an fx/2 row stores top_k entries per token, less the emitted one where it is in the "
                    f"top-k; {_ENCODE}", _FX2) for c in fx2.TOPK_STREAMS if c != "fx2_topk_tail"]
    rules += [InRange(c, *CARRIER_RANGE, "an fx/2 stream holds integers 0 <= v < 2^23 as the float32 "
                      f"2^23 + v (schemas.token_codec_fx2.carry); {_ENCODE}", hi_open=True) for c in fx2.CARRIED]
    return tuple(rules)


DECLARED: dict[str, tuple[Rule, ...]] = {
    "questions": (OneOf("answer_type", ANSWER_TYPES),),
    "models": (OneOf("role", MODEL_ROLES),),
    "iterations": (InRange("mask_ratio", 0.0, 1.0, _MASK_FIX, hi_open=True),),
    "responses": (
        OneOf("source", SOURCES),
        OneOf("finish_reason", FINISH_REASONS),
        InRange("mask_ratio", 0.0, 1.0, _MASK_FIX, hi_open=True),
        Agree("num_tokens", value("num_tokens"), length("token_ids"),
              "num_tokens counts the generated token ids: set it to len(token_ids)"),
        Agree("behaviour_logprobs", length("behaviour_logprobs"), value("num_tokens"),
              "one log-prob per generated token, or null when the engine gave none"),
    ),
    "token_stats": _token_stats_rules(),
    "verdicts": (
        OneOf("state", VERDICT_STATES, "use ok, unparseable or error: a failure is never a silent 0"),
        Present("score", equals("state", "ok"), "an 'ok' verdict carries its score"),
        Absent("score", differs("state", "ok"),
               "only an 'ok' verdict has a score (an unparseable or failed one is never a silent 0)"),
        InRange("score", 0.0, 1.0, "a verdict's score is in [0, 1]"),
    ),
    "reward_configs": (
        OneOf("divergence", divergence_names),
        OneOf("aggregation", AGGREGATIONS),
        OneOf("normalisation", NORMALISATIONS),
    ),
}


def _derived(spec: TableSpec) -> list[Rule]:
    out: list[Rule] = []
    for field in spec.schema:
        t = field.type
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            out.append(NoNullElements(field.name))
        if (pa.types.is_floating(t) or (pa.types.is_list(t) and pa.types.is_floating(t.value_type))
                or (pa.types.is_struct(t) and any(pa.types.is_floating(f.type) for f in t))):
            out.append(Finite(field.name))
    if spec.partition is not None:
        out.append(IdFormat(spec.partition))
    return out


@lru_cache(maxsize=None)
def _rules_of(name: str) -> tuple[Rule, ...]:
    spec = TABLES[name]
    return tuple(_derived(spec)) + DECLARED.get(name, ())


def rules(spec: TableSpec) -> tuple[Rule, ...]:
    """Every value rule of a table, in the order they are checked (the schema's own first)."""
    return _rules_of(spec.name) if TABLES.get(spec.name) is spec else tuple(_derived(spec)) + DECLARED.get(spec.name, ())


def check_values(spec: TableSpec, table: pa.Table | pa.RecordBatch, row_offset: int = 0) -> None:
    """Raise SchemaMismatchError naming the table, the column and the row (``row_offset`` + its
    index in ``table``) of the first rule a value of ``table`` (already of the table's schema)
    breaks."""
    if table.num_rows == 0:
        return
    batches = [Batch(b) for b in ([table] if isinstance(table, pa.RecordBatch) else table.to_batches())]
    for rule in rules(spec):
        base = row_offset
        for batch in batches:
            found = rule.first(batch)
            if found is not None:
                row, problem = found
                raise SchemaMismatchError(spec.name, rule.column, problem, row=base + row)
            base += batch.num_rows
