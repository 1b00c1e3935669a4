"""The LLM judge against a real OpenAI-compatible server: `transformers serve` on a tiny local
model on 127.0.0.1. It proves the protocol (requests, parsing, states), not judging skill."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from rewards.judges import JudgeItem, make_judge
from rewards.llm_judge import LLMJudgeConfig

pytest.importorskip("fastapi", reason="needs transformers[serving] (the judge extra)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tiny_judge_model(tmp_path_factory):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from gendata.tiny_vlm import BASE_SPECIAL, EOS, train_tokenizer

    tok = train_tokenizer(["What colour is the circle? red blue green", "<answer>1</answer> 0"],
                          BASE_SPECIAL, 300, "<image>")
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True,
                      eos_token_id=tok.convert_tokens_to_ids(EOS), pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("judge") / "tiny-judge"
    Qwen2ForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def served(tiny_judge_model, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    cli = Path(sys.executable).with_name("transformers")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen([str(cli), "serve", str(tiny_judge_model), "--host", "127.0.0.1",
                                 "--port", str(port)], stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if proc.poll() is not None:
                    pytest.fail(f"transformers serve exited: {log.read_text()[-2000:]}")
                time.sleep(0.5)
        else:
            pytest.fail(f"transformers serve did not come up in 90 s: {log.read_text()[-2000:]}")
        yield f"http://127.0.0.1:{port}/v1", log
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_judge_speaks_to_transformers_serve(served, tiny_judge_model):
    url, log = served
    judge = make_judge("llm", config=LLMJudgeConfig(model=str(tiny_judge_model), base_url=url,
                                                    max_tokens=8, timeout_s=60, max_retries=1, concurrency=2))
    items = [JudgeItem(f"r{i}", "What colour is the circle?", "red", "word", r) for i, r in enumerate(["red", "blue"])]
    verdicts = judge.judge(items)
    # a random tiny model cannot grade: every verdict is explicit (ok or unparseable), none an error
    assert all(v.state in ("ok", "unparseable") for v in verdicts), [v.error for v in verdicts]
    assert all(v.raw_output is not None or v.state == "ok" for v in verdicts)
    assert all((v.score is None) == (v.state != "ok") for v in verdicts)
    assert log.read_text().count("POST /v1/chat/completions") >= 2
