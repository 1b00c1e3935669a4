"""`python -m trainer`: config errors name the key and exit 2, without a traceback."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args):
    return subprocess.run([sys.executable, "-m", "trainer", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_unknown_key_and_bad_override_are_named(tmp_path):
    cfg = tmp_path / "g.yaml"
    cfg.write_text("model: m\nsnapshot: s\noutput_dir: o\nlr: 1\n")
    proc = _run("grpo", str(cfg))
    assert proc.returncode == 2 and "lr: unknown key" in proc.stderr and "Traceback" not in proc.stderr
    cfg.write_text("model: m\nsnapshot: s\noutput_dir: o\n")
    proc = _run("grpo", str(cfg), "-o", "beta=-1")
    assert proc.returncode == 2 and "beta" in proc.stderr
    proc = _run("grpo", str(cfg), "-o", f"snapshot={tmp_path / 'nope'}")
    assert proc.returncode == 2 and "nope: not a folder" in proc.stderr
