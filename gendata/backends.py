"""Generation backends behind one protocol, and the response rows they produce.

- ``transformers``: batched sampling with ``generate`` on CPU or GPU; the teacher's mask is
  applied in place for the duration of a call (``gendata.masking.masked``).
- ``vllm``: vLLM's offline ``LLM`` with multimodal inputs and ``n`` samples per prompt; a masked
  teacher is exported as a masked checkpoint folder that the engine loads. GPU machines only
  (the ``gpu`` extra).

Every question is sampled with its own seed (derived from the run seed and the question id), so
its responses do not depend on which other questions share a batch: a re-run that generates only
what is missing reproduces exactly what a full run would have.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from typing import Protocol

import pyarrow as pa
from pydantic import Field

from gendata.hf_generate import Sample, chat_text, generate, load_vlm
from gendata.masking import MaskSpec, masked, plan_masks
from schemas import ids
from schemas.config import StrictModel
from schemas.errors import MastersError, MissingExtraError
from schemas.registry import NoParams, Registry
from schemas.tables import RESPONSES


class SamplingConfig(StrictModel):
    """The paper's sampling defaults."""

    temperature: float = Field(1.0, gt=0, description="softmax temperature")
    top_p: float = Field(0.9, gt=0, le=1, description="nucleus mass")
    top_k: int = Field(50, ge=0, description="top-k cut-off (0: none)")
    repetition_penalty: float = Field(1.05, gt=0, description="repetition penalty")
    max_new_tokens: int = Field(32, gt=0, description="response length limit")


class VLLMOptions(StrictModel):
    """vLLM engine settings of the vllm backend (how the engine runs, not what it samples)."""

    gpu_memory_utilization: float = Field(0.9, gt=0, le=1, description="share of each GPU's memory the engine takes")
    enforce_eager: bool = Field(False, description="no CUDA graphs (starts faster, decodes slower)")
    max_model_len: int | None = Field(None, gt=0, description="context length limit (default: the model's)")

    def engine_kwargs(self) -> dict:
        return self.model_dump(exclude_none=True)


class GenerationBackend(Protocol):
    name: str

    def sample(self, prompts: Sequence[str], images: Sequence[bytes], n: int,
               sampling: SamplingConfig, seeds: Sequence[int]) -> list[list[Sample]]:
        """``n`` samples for each (prompt, image), the i-th drawn with ``seeds[i]``."""
        ...


class TransformersBackend:
    name = "transformers"

    def __init__(self, path: str, mask_ratio: float = 0.0, mask_spec: MaskSpec | None = None,
                 device: str | None = None, trust_remote_code: bool = True, loaded=None, plan=None,
                 placement=None):
        """``loaded``: the (model, processor) of ``path`` already in memory (a caller keeping models
        across stages); ``plan``: its mask plan for ``mask_ratio``, when already computed;
        ``placement``: dtype and device_map (gendata.placement) when loading here."""
        self.model, self.processor = loaded or load_vlm(path, trust_remote_code, device, placement)
        self.mask_ratio, self.mask_spec = mask_ratio, mask_spec
        if plan is None and mask_ratio > 0:
            plan = plan_masks(self.model, [mask_ratio], mask_spec)
        self.plan = plan

    def sample(self, prompts, images, n, sampling, seeds):
        out = []
        with masked(self.model, self.mask_ratio, self.plan, self.mask_spec):
            for prompt, image, seed in zip(prompts, images, seeds):
                out += generate(self.model, self.processor, [prompt], [image], n=n, do_sample=True,
                                temperature=sampling.temperature, top_p=sampling.top_p,
                                top_k=sampling.top_k, repetition_penalty=sampling.repetition_penalty,
                                max_new_tokens=sampling.max_new_tokens, seed=seed, batch_size=1)
        return out


class VLLMBackend:
    name = "vllm"

    def __init__(self, path: str, mask_ratio: float = 0.0, mask_spec: MaskSpec | None = None,
                 trust_remote_code: bool = True, placement=None, plan=None, **engine_kwargs):
        """``plan``: the teacher's mask thresholds when already computed (from its files:
        ``gendata.checkpoint_masking.plan_checkpoint_masks``); the masked copy is streamed from
        the checkpoint's safetensors files, tensor by tensor."""
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ImportError("the vllm backend needs vLLM (pip install 'masters-distill[gpu]' on a "
                              "GPU machine)") from exc
        from transformers import AutoConfig, AutoProcessor, GenerationConfig

        from gendata.placement import DEFAULT

        self._tmp = None
        if mask_ratio > 0:
            from gendata.checkpoint_masking import export_masked_checkpoint

            self._tmp = tempfile.TemporaryDirectory(prefix="masked-")
            path = str(export_masked_checkpoint(path, mask_ratio, self._tmp.name, mask_spec, plan=plan))
        self.processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
        # vLLM ignores generation_config.suppress_tokens: turn them into a logit bias, with the
        # LM head's padding rows past the tokenizer's ids (not tokens: never to be sampled)
        suppress = getattr(GenerationConfig.from_pretrained(path), "suppress_tokens", None) or []
        width = AutoConfig.from_pretrained(path).get_text_config().vocab_size
        padding = range(len(self.processor.tokenizer), width)
        self.logit_bias = {int(t): -100.0 for t in [*suppress, *padding]}
        engine_kwargs = {**(placement or DEFAULT).vllm_kwargs(), **engine_kwargs}
        self.llm = LLM(model=path, trust_remote_code=trust_remote_code,
                       limit_mm_per_prompt={"image": 1, "video": 0}, **engine_kwargs)

    def sample(self, prompts, images, n, sampling, seeds):
        from vllm import SamplingParams

        from gendata.hf_generate import as_image

        requests = [{"prompt": chat_text(self.processor, p), "multi_modal_data": {"image": as_image(i)}}
                    for p, i in zip(prompts, images)]
        params = [SamplingParams(n=n, temperature=sampling.temperature, top_p=sampling.top_p,
                                 top_k=sampling.top_k if sampling.top_k > 0 else -1,
                                 repetition_penalty=sampling.repetition_penalty,
                                 max_tokens=sampling.max_new_tokens, seed=seed, logprobs=0,
                                 logit_bias=self.logit_bias or None)
                  for seed in seeds]
        out = []
        for result in self.llm.generate(requests, params, use_tqdm=False):
            group = []
            for c in result.outputs:
                lps = [d[t].logprob for t, d in zip(c.token_ids, c.logprobs or [])]
                group.append(Sample(token_ids=list(c.token_ids), text=c.text,
                                    finish_reason=c.finish_reason or "stop", logprobs=lps))
            out.append(group)
        return out


    def close(self) -> None:
        """Free the engine (and its GPU memory) before starting another one in this process."""
        import gc

        import torch

        del self.llm
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if self._tmp is not None:
            self._tmp.cleanup()


def _vllm(options: VLLMOptions, path: str, **kwargs) -> VLLMBackend:
    if importlib.util.find_spec("vllm") is None:
        raise MissingExtraError("vllm", "gpu", "the vllm generation backend (a GPU machine)")
    return VLLMBackend(path, **{**options.engine_kwargs(), **kwargs})


# name -> (params config class, factory(params, path, **kwargs) -> GenerationBackend); the params
# are the run config's section of that backend (``vllm:``), validated without importing vLLM
BACKENDS: Registry[GenerationBackend] = Registry("generation backend")
BACKENDS.register("transformers", NoParams, lambda params, path, **kw: TransformersBackend(path, **kw))
BACKENDS.register("vllm", VLLMOptions, _vllm)
BackendName = BACKENDS.name()  # the type of a config value naming a backend (`backend: vllm`)


def backend(name: str, path: str, options: VLLMOptions | dict | None = None, **kwargs) -> GenerationBackend:
    """The generation backend ``name`` (UnknownKindError listing the known ones) for the checkpoint at
    ``path``, with its settings ``options`` (vllm: VLLMOptions); ``kwargs`` go to its constructor
    (mask_ratio, mask_spec, placement, plan; vllm also takes engine arguments)."""
    return BACKENDS.build(name, options, path, where=f"backend {name!r} settings", **kwargs)


LOGPROB_FLOOR = -1e4  # as the scoring pass floors its log-probs: a -inf stays a number in the catalog


def behaviour_logprobs(response_id: str, sample: Sample) -> list[float] | None:
    """The engine's per-token log-probs as stored: one per token, floored, or None when the engine
    gave none (or not one per token); a NaN is refused, naming the response."""
    lps = sample.logprobs
    if not lps or len(lps) != len(sample.token_ids):
        return None
    if any(math.isnan(x) for x in lps):
        raise MastersError(f"response {response_id}: the generation engine returned a NaN log-prob "
                           "(a diverged model?); refusing to store it")
    return [max(float(x), LOGPROB_FLOOR) for x in lps]


def question_seed(seed: int, question_id: str) -> int:
    return int(hashlib.sha256(f"{seed}|{question_id}".encode()).hexdigest()[:8], 16)


def generate_responses(engine: GenerationBackend, questions: pa.Table, images: Mapping[str, bytes], *,
                       iteration_id: str, source: str, model_id: str, mask_ratio: float, n: int,
                       seed: int, sampling: SamplingConfig | None = None,
                       existing: set[str] | None = None,
                       questions_per_batch: int = 16) -> Iterator[pa.Table]:
    """Response rows (RESPONSES schema), ``questions_per_batch`` questions per yielded table.
    Questions whose n response ids all exist in ``existing`` are skipped (nothing regenerated)."""
    sampling = sampling or SamplingConfig()
    params = sampling.model_dump()
    todo = []
    for q in questions.select(["question_id", "question"]).to_pylist():
        rids = [ids.response_id(iteration_id, q["question_id"], source, model_id, mask_ratio, k, seed, params)
                for k in range(n)]
        if not existing or not all(r in existing for r in rids):
            todo.append((q, rids))
    for start in range(0, len(todo), questions_per_batch):
        batch = todo[start:start + questions_per_batch]
        groups = engine.sample([q["question"] for q, _ in batch], [images[q["question_id"]] for q, _ in batch],
                               n, sampling, [question_seed(seed, q["question_id"]) for q, _ in batch])
        now = datetime.now(timezone.utc)
        rows = []
        for (q, rids), samples in zip(batch, groups):
            gid = ids.group_id(iteration_id, q["question_id"])
            for k, (rid, s) in enumerate(zip(rids, samples)):
                rows.append({"response_id": rid, "group_id": gid, "iteration_id": iteration_id,
                             "question_id": q["question_id"], "source": source, "model_id": model_id,
                             "mask_ratio": mask_ratio, "sample_index": k, "seed": seed,
                             "sampling": params, "prompt": q["question"], "token_ids": s.token_ids,
                             "text": s.text, "finish_reason": s.finish_reason,
                             "num_tokens": len(s.token_ids), "created_at": now,
                             "behaviour_logprobs": behaviour_logprobs(rid, s)})
        yield pa.Table.from_pylist(rows, schema=RESPONSES.schema)
