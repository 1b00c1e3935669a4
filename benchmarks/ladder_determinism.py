"""Where the ladder's non-determinism comes from, and that the pin removes it: the same small
ladder built by the real child (``python -m masters.ladder_build``) under several environments,
the sha256 of every member's weights compared.

    python benchmarks/ladder_determinism.py [--steps 30]

Variants: the pinned environment (what ``ensure_ladder`` uses), the pinned environment reached
from a parent with other settings, and unpinned builds that differ from the pinned one in one
factor each (thread count, ATen's vector unit, MKL's code path). A factor whose unpinned build
differs from the pinned one would make two machines disagree if it were left to the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from masters.fixtures import LADDER_ORDER, CeilingConfig, LadderConfig, MemberConfig, load_data, pinned_env  # noqa: E402


def build(config: LadderConfig, env: dict[str, str], where: Path) -> dict[str, str]:
    where.mkdir(parents=True)
    load_data(config).write(where / "data" / "questions")
    (where / "ladder-config.json").write_text(config.model_dump_json())
    proc = subprocess.run([sys.executable, "-m", "masters.ladder_build", str(where), "--quiet"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    return {m: hashlib.sha256((where / "models" / m / "model.safetensors").read_bytes()).hexdigest()[:12]
            for m in (*LADDER_ORDER, "ceiling")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=30, help="SFT steps per member")
    args = ap.parse_args()
    member = MemberConfig(hidden=64, layers=2, vision_hidden=48, vision_layers=2, steps=args.steps)
    config = LadderConfig(train_questions=240, validation_questions=24, eval_questions=24,
                          members={m: member for m in LADDER_ORDER}, ceiling=CeilingConfig(steps=args.steps))
    base = {k: v for k, v in os.environ.items() if k not in pinned_env(2)}
    pinned = {**base, **pinned_env(config.threads)}
    unpinned = {**base, "CUDA_VISIBLE_DEVICES": "", "DS_ACCELERATOR": "cpu"}
    variants = {
        "pinned": pinned,
        "pinned, again": pinned,
        "unpinned (this machine's defaults)": unpinned,
        "unpinned, 1 thread": {**unpinned, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        "unpinned, ATen AVX2 only": {**unpinned, "ATEN_CPU_CAPABILITY": "avx2"},
        "unpinned, ATen + MKL + oneDNN AVX2": {**unpinned, "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2",
                                               "ONEDNN_MAX_CPU_ISA": "AVX2"},
    }
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, env) in enumerate(variants.items()):
            t0 = time.perf_counter()
            results[name] = build(config, env, Path(tmp) / f"v{i}")
            same = results[name] == results["pinned"]
            print(f"{name:<38} {'same weights as pinned' if same else 'DIFFERENT weights':<24} "
                  f"student {results[name]['student']}  L {results[name]['L']}  ({time.perf_counter() - t0:.0f} s)",
                  flush=True)


if __name__ == "__main__":
    main()
