"""One Arrow schema per catalog table. Field docs live beside the fields (as Arrow field metadata
``doc``, so they travel into every Parquet file and snapshot).

Every table has one id column, a content hash (see ``schemas.ids``): appending a row whose id is
already present is a no-op. Nothing is ever updated in place.

The per-response tables are partitioned by ``iteration_id``, which is part of what every one of
their ids hashes (directly, or through the response id): a row can only collide with rows of its
own iteration, so a commit checks its ids within that partition and its cost does not grow with
the catalog's history (docs/architecture.md, "Versions, commits, idempotent appends, time travel").
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from schemas.token_codec_fx2 import CARRIED as FX2_CARRIED

TS = pa.timestamp("us", tz="UTC")


def col(name: str, type_: pa.DataType, doc: str, nullable: bool = False) -> pa.Field:
    """A schema field with its documentation attached."""
    return pa.field(name, type_, nullable=nullable, metadata={"doc": doc})


def field_doc(field: pa.Field) -> str:
    return (field.metadata or {}).get(b"doc", b"").decode()


@dataclass(frozen=True)
class TableSpec:
    """A catalog table: its name, its id column and its Arrow schema."""

    name: str
    id_column: str
    schema: pa.Schema
    doc: str
    partition: str | None = None  # column the table is partitioned by (one value per data file)
    parquet: dict | None = None  # pyarrow.parquet.write_table options of its data files (None: defaults)

    @property
    def columns(self) -> list[str]:
        return self.schema.names

    def rows(self, rows: list[dict]) -> pa.Table:
        """Row dicts as a table of this schema (a key left out is null)."""
        return pa.Table.from_pylist(rows, schema=self.schema)


SAMPLING_TYPE = pa.struct([
    col("temperature", pa.float64(), "softmax temperature"),
    col("top_p", pa.float64(), "nucleus sampling mass"),
    col("top_k", pa.int32(), "top-k cut-off (0: none)"),
    col("repetition_penalty", pa.float64(), "repetition penalty (1.0: none)"),
    col("max_new_tokens", pa.int32(), "generation length limit"),
])

IMAGES = TableSpec("images", "image_id", pa.schema([
    col("image_id", pa.string(), "SHA-256 of the encoded bytes (first 32 hex digits): an image is stored once"),
    col("bytes", pa.binary(), "the encoded image file (PNG, JPEG, ...)"),
    col("format", pa.string(), "image format as PIL names it, e.g. PNG"),
    col("width", pa.int32(), "width in pixels"),
    col("height", pa.int32(), "height in pixels"),
]), "Images, stored once each and referenced by questions.")

QUESTIONS = TableSpec("questions", "question_id", pa.schema([
    col("question_id", pa.string(), "content hash of source, image, question, answer(s) and choices"),
    col("source", pa.string(), "where the question comes from, e.g. 'synthetic-vqa' or a dataset id"),
    col("split", pa.string(), "train / test / validation"),
    col("qtype", pa.string(), "question type, e.g. 'shape_colour', 'bar_value'"),
    col("answer_type", pa.string(), "word / number / letter"),
    col("question", pa.string(), "the question text shown to the model"),
    col("answer", pa.string(), "the ground-truth answer"),
    col("choices", pa.list_(pa.string()), "lettered options for multiple choice; empty otherwise"),
    col("image_id", pa.string(), "the question's image in `images`", nullable=True),
    col("meta", pa.string(), "free-form JSON (source row index, render parameters, ...)", nullable=True),
    col("answers", pa.list_(pa.string()), "every accepted answer; `answer` is the first (any of them counts). "
        "null (rows of older catalogs) means just `answer`", nullable=True),
]), "Questions with ground truth.")

MODELS = TableSpec("models", "model_id", pa.schema([
    col("model_id", pa.string(), "content hash of the checkpoint's weight files"),
    col("name", pa.string(), "human name, e.g. 'teacher-L' or 'student@iter3'"),
    col("role", pa.string(), "student / teacher / reference (measured beside the run, e.g. the ceiling)"),
    col("family", pa.string(), "architecture family, e.g. 'qwen2_vl', 'idefics3'"),
    col("size_label", pa.string(), "S / M / L for teachers, free for students", nullable=True),
    col("path", pa.string(), "where the checkpoint folder lives"),
    col("param_count", pa.int64(), "number of parameters"),
    col("parent_model_id", pa.string(), "the checkpoint this one was trained from (lineage)", nullable=True),
    col("snapshot_name", pa.string(), "the snapshot it was trained on (lineage)", nullable=True),
    col("snapshot_manifest_sha256", pa.string(), "SHA-256 of that snapshot's manifest.json", nullable=True),
    col("catalog_version", pa.int64(), "the catalog version that snapshot was cut from", nullable=True),
    col("meta", pa.string(), "free-form JSON (trainer config, final metrics, ...)", nullable=True),
    col("created_at", TS, "when the row was written"),
]), "Checkpoints: students and teachers, with their lineage.")

ITERATIONS = TableSpec("iterations", "iteration_id", pa.schema([
    col("iteration_id", pa.string(), "content hash of run id and iteration index"),
    col("run_id", pa.string(), "the run this iteration belongs to"),
    col("iteration", pa.int32(), "0-based iteration index"),
    col("mask_ratio", pa.float64(), "the teacher's mask ratio r_i in this iteration"),
    col("teacher_model_id", pa.string(), "the (unmasked) teacher checkpoint"),
    col("student_model_id", pa.string(), "the student checkpoint that generated and is trained"),
    col("config_hash", pa.string(), "hash of the run configuration"),
    col("created_at", TS, "when the row was written"),
]), "One row per iteration of a run.")

RESPONSES = TableSpec("responses", "response_id", pa.schema([
    col("response_id", pa.string(), "content hash of what produced the response (not of its text)"),
    col("group_id", pa.string(), "GRPO group: hash of iteration and question"),
    col("iteration_id", pa.string(), "the iteration it was generated in"),
    col("question_id", pa.string(), "the question answered"),
    col("source", pa.string(), "teacher / student"),
    col("model_id", pa.string(), "the checkpoint that generated it: the hash of its weights (ids.checkpoint_id)"),
    col("mask_ratio", pa.float64(), "mask ratio applied to the model (0 for the student)"),
    col("sample_index", pa.int32(), "index among the n samples of this source for this question"),
    col("seed", pa.int64(), "sampling seed"),
    col("sampling", SAMPLING_TYPE, "sampling parameters"),
    col("prompt", pa.string(), "the user prompt text (question and options) the model saw"),
    col("token_ids", pa.list_(pa.int32()), "generated token ids (completion only)"),
    col("text", pa.string(), "decoded completion text"),
    col("finish_reason", pa.string(), "stop / length / abort (vLLM: a request the engine stopped)"),
    col("num_tokens", pa.int32(), "len(token_ids); 0 marks an empty response (the engine emitted no token, e.g. an "
        "immediate EOS): it is never scored nor rewarded, its group is rewarded over its other members, and both "
        "are counted (stage results, the iteration's line, the report)"),
    col("created_at", TS, "when the row was written"),
    col("behaviour_logprobs", pa.list_(pa.float32()),
        "the generating engine's own log-prob of each token (vLLM's raw log-probs, or transformers generate's "
        "over the tokenizer's ids), floored at -10000; null when the engine gave none. Compared with the "
        "teacher-forced scoring log-probs in the report (the train/inference mismatch)", nullable=True),
]), "Every generated response, teacher and student, per iteration.", partition="iteration_id")

_CARRIED = pa.list_(pa.float32())  # integers 0 <= v < 2^23 as the float32 2^23 + v (schemas/token_codec_fx2.py)
_TOKEN_STATS_PARQUET = {  # byte planes of the integer streams compressed apart; no dictionary of random values
    "compression": "zstd", "compression_level": 15,
    "use_dictionary": ["stats_id", "response_id", "iteration_id", "teacher_model_id", "teacher_mask_ratio",
                       "student_model_id", "encoding", "top_k", "num_tokens", "created_at"],
    "use_byte_stream_split": [f"{c}.list.element" for c in FX2_CARRIED],
}

TOKEN_STATS = TableSpec("token_stats", "stats_id", pa.schema([
    col("stats_id", pa.string(), "hash of response, scoring pair, top-k and encoding"),
    col("response_id", pa.string(), "the response scored"),
    col("iteration_id", pa.string(), "the response's iteration (the table's partition)"),
    col("teacher_model_id", pa.string(), "teacher checkpoint of the scoring pair"),
    col("teacher_mask_ratio", pa.float64(), "mask ratio applied to the teacher while scoring"),
    col("student_model_id", pa.string(), "student checkpoint of the scoring pair"),
    col("encoding", pa.string(), "how the per-token columns are encoded (schemas/token_codec.py): 'fx/2' (written) or 'fx16/1'"),
    col("top_k", pa.int32(), "k of the teacher's stored top-k"),
    col("num_tokens", pa.int32(), "number of scored tokens"),
    col("student_logprobs", pa.list_(pa.float32()), "fx16/1: student log-prob of each emitted token (GRPO old/ref log-probs)"),
    col("teacher_logprobs", pa.list_(pa.int16()), "fx16/1: masked teacher log-prob of each emitted token (fixed point x1024)"),
    col("jsd", pa.list_(pa.int16()), "fx16/1: exact per-token Jensen-Shannon divergence in nats (fixed point x32768)"),
    col("kl_forward", pa.list_(pa.int16()), "fx16/1: per-token KL(teacher || student) in nats (fixed point x1024)"),
    col("kl_reverse", pa.list_(pa.int16()), "fx16/1: per-token KL(student || teacher) in nats (fixed point x1024)"),
    col("teacher_topk_ids", pa.list_(pa.int32()), "fx16/1: teacher top-k token ids, flattened num_tokens x top_k"),
    col("teacher_topk_logprobs", pa.list_(pa.int16()), "fx16/1: teacher top-k log-probs, flattened num_tokens x top_k (fixed point x1024)"),
    col("created_at", TS, "when the row was written"),
    # encoding fx/2 (schemas/token_codec_fx2.py); the fx16/1 lists above are then empty, and these
    # columns are null in an fx16/1 row
    col("fx2_student_logprobs", _CARRIED, "fx/2: student log-prob of each emitted token, x -2^16", nullable=True),
    col("fx2_teacher_logprobs", _CARRIED, "fx/2: masked teacher log-prob of each emitted token, x -2^10", nullable=True),
    col("fx2_jsd", _CARRIED, "fx/2: per-token JSD in nats, x 2^15", nullable=True),
    col("fx2_kl_forward", _CARRIED, "fx/2: per-token KL(teacher || student), x 2^10", nullable=True),
    col("fx2_kl_reverse", _CARRIED, "fx/2: per-token KL(student || teacher), x 2^10", nullable=True),
    col("fx2_topk_hit", pa.list_(pa.bool_()), "fx/2: whether the emitted token is in the teacher's top-k", nullable=True),
    col("fx2_topk_ids", _CARRIED, "fx/2: per token, the top-k ids but the emitted one, by log-prob", nullable=True),
    col("fx2_topk_sqrtp", _CARRIED, "fx/2: per token, round(1024 sqrt p) of those ids: the first, then each drop", nullable=True),
    col("fx2_topk_tail", _CARRIED, "fx/2: per token, round(1024 sqrt p) of the mass beyond the top-k", nullable=True),
    col("jsd_sum", pa.float64(), "fx/2: exact sum of the per-token JSD over the response", nullable=True),
    col("kl_forward_sum", pa.float64(), "fx/2: exact sum of the per-token KL(teacher || student)", nullable=True),
    col("kl_reverse_sum", pa.float64(), "fx/2: exact sum of the per-token KL(student || teacher)", nullable=True),
]), "Per-token logit summaries of a teacher-forced pass over each response.",
   partition="iteration_id", parquet=_TOKEN_STATS_PARQUET)

FX16_TOKEN_STATS_SCHEMA = pa.schema([f for f in TOKEN_STATS.schema if not f.nullable])
"""The token_stats columns an fx16/1 row fills (fx/2's columns are all nullable)."""

VERDICTS = TableSpec("verdicts", "verdict_id", pa.schema([
    col("verdict_id", pa.string(), "hash of response and judge"),
    col("response_id", pa.string(), "the response judged"),
    col("iteration_id", pa.string(), "the response's iteration (the table's partition)"),
    col("judge_id", pa.string(), "hash of judge kind, model, prompt template version and parameters"),
    col("judge_kind", pa.string(), "registry name of the judge, e.g. 'exact', 'numeric', 'llm'"),
    col("score", pa.float64(), "the verdict in [0, 1]; null unless state is 'ok'", nullable=True),
    col("extracted_answer", pa.string(), "the answer the judge read out of the response", nullable=True),
    col("raw_output", pa.string(), "the judge's raw output (LLM text), for audit", nullable=True),
    col("latency_s", pa.float64(), "seconds spent judging"),
    col("state", pa.string(), "ok / unparseable / error: a failure is never a silent 0"),
    col("error", pa.string(), "what went wrong when state is not 'ok'", nullable=True),
    col("created_at", TS, "when the row was written"),
]), "Judge verdicts, one per response and judge.", partition="iteration_id")

REWARD_CONFIGS = TableSpec("reward_configs", "reward_config_id", pa.schema([
    col("reward_config_id", pa.string(), "hash of the reward configuration"),
    col("judge_id", pa.string(), "judge whose verdicts give R_acc"),
    col("divergence", pa.string(), "jsd / kl_forward / kl_reverse"),
    col("aggregation", pa.string(), "token aggregation of the divergence: mean / sum"),
    col("w_acc", pa.float64(), "weight of R_acc"),
    col("w_distill", pa.float64(), "weight of R_distill"),
    col("normalisation", pa.string(), "scope of the min-max normalisation, e.g. 'group'"),
    col("config_json", pa.string(), "the full configuration as canonical JSON"),
    col("created_at", TS, "when the row was written"),
]), "Reward configurations; rewards are keyed by response and reward config.")

REWARDS = TableSpec("rewards", "reward_id", pa.schema([
    col("reward_id", pa.string(), "hash of response and reward config"),
    col("response_id", pa.string(), "the response rewarded"),
    col("iteration_id", pa.string(), "the response's iteration (the table's partition)"),
    col("reward_config_id", pa.string(), "the reward configuration used"),
    col("group_id", pa.string(), "the response's GRPO group"),
    col("verdict_id", pa.string(), "the verdict R_acc came from", nullable=True),
    col("token_stats_id", pa.string(), "the token summaries D came from", nullable=True),
    col("r_acc", pa.float64(), "accuracy reward"),
    col("divergence", pa.float64(), "aggregated divergence D"),
    col("r_distill", pa.float64(), "(D_max - D) / (D_max - D_min) within the group"),
    col("reward", pa.float64(), "w_acc * r_acc + w_distill * r_distill"),
    col("advantage", pa.float64(), "(R - mean) / std within the group"),
    col("created_at", TS, "when the row was written"),
]), "Rewards and GRPO advantages per response and reward config.",
   partition="iteration_id")

SNAPSHOTS = TableSpec("snapshots", "snapshot_id", pa.schema([
    col("snapshot_id", pa.string(), "hash of the snapshot name"),
    col("name", pa.string(), "snapshot name (unique)"),
    col("path", pa.string(), "the immutable snapshot folder"),
    col("catalog_version", pa.int64(), "the catalog version it was cut from"),
    col("reward_config_id", pa.string(), "the reward configuration it carries"),
    col("iteration_id", pa.string(), "iteration filter, null for all", nullable=True),
    col("num_rows", pa.int64(), "rows in the snapshot"),
    col("manifest_sha256", pa.string(), "SHA-256 of its manifest.json"),
    col("created_at", TS, "when the row was written"),
]), "Snapshots cut from the catalog (lineage: model <- snapshot <- catalog version).")

EVALUATIONS = TableSpec("evaluations", "evaluation_id", pa.schema([
    col("evaluation_id", pa.string(), "hash of model, split, judge, question set and decoding, run and iteration"),
    col("model_id", pa.string(), "the checkpoint evaluated"),
    col("split", pa.string(), "question split, e.g. 'test'"),
    col("judge_id", pa.string(), "the judge that marked the answers"),
    col("questions_hash", pa.string(), "hash of the sorted question ids evaluated"),
    col("n", pa.int64(), "questions answered"),
    col("accuracy", pa.float64(), "fraction judged correct"),
    col("per_type", pa.string(), "JSON: accuracy per question type"),
    col("run_id", pa.string(), "the run that asked for it", nullable=True),
    col("iteration", pa.int32(), "the iteration whose student it is (-1: the starting student)", nullable=True),
    col("created_at", TS, "when the row was written"),
]), "Held-out accuracy of checkpoints (greedy answers, judged).")

ALL_TABLES: tuple[TableSpec, ...] = (IMAGES, QUESTIONS, MODELS, ITERATIONS, RESPONSES,
                                     TOKEN_STATS, VERDICTS, REWARD_CONFIGS, REWARDS, SNAPSHOTS,
                                     EVALUATIONS)
TABLES: dict[str, TableSpec] = {t.name: t for t in ALL_TABLES}


def table_spec(name: str) -> TableSpec:
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"no catalog table named '{name}'; tables: {', '.join(TABLES)}") from None
