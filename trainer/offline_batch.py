"""Snapshot rows as offline GRPO batches: which rows train, checked up front, and the tensors one
batch of them becomes (prompt through the processor exactly as at generation, completions and
per-token columns padded on the right).

Everything a batch needs is in the row: the completion's token ids, its group advantage, the
student's log-prob of each token (the GRPO old-policy and reference log-probs) and the masked
teacher's top-k (ids and log-probs) for the JSD term. Nothing is generated."""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass

import datasets
import pyarrow as pa
import pyarrow.compute as pc
import torch
from PIL import Image

from schemas.errors import SnapshotError
from schemas.prompts import user_message

BASE_COLUMNS = ("response_id", "source", "prompt", "image", "completion_ids", "reward", "advantage",
                "student_logprobs")
JSD_COLUMNS = ("top_k", "teacher_topk_ids", "teacher_topk_logprobs")
LOGP_FLOOR = -100.0  # a token whose stored log-prob is below this (underflow, -inf) is left out of the loss
PAD_TEACHER_LOGP = -100.0  # top-k padding: probability ~0, so padded positions stay finite (then masked)


def _first(table: pa.Table, bad: pa.ChunkedArray, what: str, folder) -> None:
    bad = pc.fill_null(bad, True)
    if pc.any(bad).as_py():
        idx = pc.index(bad, True).as_py()
        rid = table.column("response_id")[idx].as_py()
        raise SnapshotError(f"snapshot {folder}: row {idx} (response {rid}) {what}")


def training_rows(ds: datasets.Dataset, sources: Sequence[str], use_jsd: bool,
                  folder: str | os.PathLike = "") -> tuple[datasets.Dataset, int]:
    """The rows to train on (``sources`` only), every one checked: a per-token column missing or
    of the wrong length, or a non-finite advantage, raises SnapshotError naming the row.
    Returns the rows and the teacher's top-k (0 without the JSD term)."""
    needed = BASE_COLUMNS + (JSD_COLUMNS if use_jsd else ())
    missing = [c for c in needed if c not in ds.column_names]
    if missing:
        raise SnapshotError(f"snapshot {folder} has no column {missing[0]!r}: offline GRPO needs "
                            f"{', '.join(needed)} (a snapshot cut by `masters snapshot`)")
    ds = ds.select_columns(list(needed))
    unknown = set(ds.unique("source")) - {"teacher", "student"}
    if unknown:
        raise SnapshotError(f"snapshot {folder}: unknown source {sorted(unknown)[0]!r} (teacher / student)")
    ds = ds.filter(lambda s: [x in sources for x in s], input_columns="source", batched=True,
                   desc="select sources")
    if ds.num_rows == 0:
        raise SnapshotError(f"snapshot {folder} has no {' or '.join(sources)} rows to train on")
    ds = ds.flatten_indices()  # the kept rows as their own Arrow table (checked column-wise below)
    t = ds.data.table
    n = pc.list_value_length(t.column("completion_ids"))
    _first(t, pc.invert(pc.is_finite(t.column("advantage"))), "has no finite advantage", folder)
    _first(t, pc.not_equal(pc.list_value_length(t.column("student_logprobs")), n),
           "has no student log-prob per completion token (its token_stats are missing or cut short)", folder)
    k = 0
    if use_jsd:
        _first(t, pc.is_null(t.column("top_k")), "has no teacher top-k (no token_stats)", folder)
        k = t.column("top_k")[0].as_py()
        _first(t, pc.not_equal(t.column("top_k"), k),
               f"has another teacher top-k than the first row ({k}): the snapshot mixes top-k sizes; "
               "score the iteration with one top_k, or set jsd_weight: 0", folder)
        if k <= 0:
            raise SnapshotError(f"snapshot {folder}: teacher top-k {k}; expected a positive k")
        for name in ("teacher_topk_ids", "teacher_topk_logprobs"):
            _first(t, pc.not_equal(pc.list_value_length(t.column(name)), pc.multiply(n, k)),
                   f"has a {name} of the wrong length (tokens x top_k = {k})", folder)
    return ds, k


def check_token_ids(rows: datasets.Dataset, vocab: int, snapshot, model) -> None:
    """Every completion id and teacher top-k id must be a row of the student's LM head (``vocab``
    rows): a SnapshotError names the response, the id and the column otherwise."""
    for column, what in (("completion_ids", "completion token id"), ("teacher_topk_ids", "teacher top-k id")):
        beyond = first_id_beyond(rows, column, vocab)
        if beyond:
            raise SnapshotError(f"snapshot {snapshot}: response {beyond[0]} holds {what} {beyond[1]} "
                                f"({column}), beyond the vocabulary of {model} ({vocab} ids): it was made with "
                                "another tokenizer; train a student that shares the teacher's tokenizer")


def first_id_beyond(ds: datasets.Dataset, column: str, vocab: int) -> tuple[str, int] | None:
    """(response_id, id) of the first row whose ``column`` (a list of token ids) holds an id outside
    0..vocab-1, or None (also when the snapshot has no such column)."""
    if column not in ds.column_names:
        return None
    table = ds.data.table
    col = table.column(column)
    flat = pc.list_flatten(col)
    if not len(flat) or (pc.max(flat).as_py() < vocab and pc.min(flat).as_py() >= 0):
        return None
    for rid, ids in zip(table.column("response_id").to_pylist(), col.to_pylist()):
        bad = [t for t in ids or [] if not 0 <= t < vocab]
        if bad:
            return rid, bad[0]
    return None


def _pil(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, dict) and image.get("bytes") is not None:
        return Image.open(io.BytesIO(image["bytes"])).convert("RGB")
    if isinstance(image, (bytes, bytearray)):
        return Image.open(io.BytesIO(image)).convert("RGB")
    raise SnapshotError(f"a row has no readable image ({type(image).__name__})")


@dataclass
class OfflineBatcher:
    """Turns a list of rows into the tensors of one offline GRPO batch."""

    processor: object
    top_k: int = 0
    max_tokens: int | None = None

    def prompt_inputs(self, prompts: Sequence[str], images: Sequence) -> dict[str, torch.Tensor]:
        """Processor outputs for the prompts, built as generation built them (left padding)."""
        texts = [self.processor.apply_chat_template(user_message(p), add_generation_prompt=True, tokenize=False)
                 for p in prompts]
        return dict(self.processor(images=[_pil(i) for i in images], text=texts, return_tensors="pt",
                                   padding=True, padding_side="left"))

    def __call__(self, rows: Sequence[dict]) -> dict[str, torch.Tensor]:
        for r in rows:
            if r["image"] is None:
                raise SnapshotError(f"response {r['response_id']}: the row has no image")
        out = self.prompt_inputs([r["prompt"] for r in rows], [r["image"] for r in rows])
        out["prompt_ids"], out["prompt_mask"] = out.pop("input_ids"), out.pop("attention_mask")
        cut = self.max_tokens
        comps = [list(r["completion_ids"])[:cut] for r in rows]
        width = max(1, max(len(c) for c in comps))
        b = len(rows)
        pad = self.processor.tokenizer.pad_token_id or 0
        ids = torch.full((b, width), pad, dtype=torch.long)
        mask = torch.zeros((b, width), dtype=torch.long)
        old = torch.zeros((b, width), dtype=torch.float32)
        for j, (c, r) in enumerate(zip(comps, rows)):
            ids[j, :len(c)] = torch.tensor(c, dtype=torch.long)
            mask[j, :len(c)] = 1
            old[j, :len(c)] = torch.tensor(r["student_logprobs"][:len(c)], dtype=torch.float32)
        mask = mask * (old > LOGP_FLOOR)  # an underflowed stored log-prob would give an unbounded ratio
        out.update(completion_ids=ids, completion_mask=mask,
                   old_per_token_logps=old.clamp_min(LOGP_FLOOR),
                   advantages=torch.tensor([float(r["advantage"]) for r in rows], dtype=torch.float32))
        if self.top_k:
            k = self.top_k
            top_ids = torch.zeros((b, width, k), dtype=torch.long)
            top_lp = torch.full((b, width, k), PAD_TEACHER_LOGP, dtype=torch.float32)
            for j, (c, r) in enumerate(zip(comps, rows)):
                n = len(c)
                top_ids[j, :n] = torch.tensor(r["teacher_topk_ids"][:n * k], dtype=torch.long).view(n, k)
                top_lp[j, :n] = torch.tensor(r["teacher_topk_logprobs"][:n * k], dtype=torch.float32).view(n, k)
            out.update(teacher_topk_ids=top_ids, teacher_topk_logps=top_lp.clamp_min(PAD_TEACHER_LOGP))
        for key in ("mm_token_type_ids", "token_type_ids"):  # zero over the completion, as in scoring
            if key in out:
                out[key] = torch.cat([out[key], torch.zeros_like(ids)], dim=1)
        return out
