"""The trainer on its own: ``python -m trainer {grpo,sft} CONFIG.yaml [-o key=value ...]``.

Runs single-process as is, or under ``accelerate launch`` (DeepSpeed ZeRO-3 with
configs/accelerate/zero3.yaml). It reads a snapshot folder and writes a checkpoint folder; it
needs no catalog."""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from pathlib import Path

import yaml

from schemas.errors import MastersError

KINDS = ("grpo", "sft")
# DeepSpeed ZeRO-3 calls torch.distributed functions torch 2.13 deprecates, once per step and
# rank: a console of them says nothing the user can act on
warnings.filterwarnings("ignore", category=FutureWarning, module="torch.distributed")


def load_config(kind: str, path: str, overrides: list[str]):
    from trainer.config import GRPORunConfig, SFTRunConfig

    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise MastersError(f"{path}: cannot read the config ({exc})") from None
    if not isinstance(doc, dict):
        raise MastersError(f"{path}: expected a mapping of config keys")
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise MastersError(f"-o {item!r}: expected key=value")
        doc[key] = yaml.safe_load(value)
    cls = GRPORunConfig if kind == "grpo" else SFTRunConfig
    return cls.parse(doc, where=path)


def _end_distributed() -> None:
    """Leave the process group before the interpreter exits: a rank tearing down with its
    communication threads still running can abort (SIGABRT, "terminate called without an active
    exception") after the checkpoint was written, failing the launch."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer", description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("config", help="YAML config (configs/trainer/*.yaml)")
    parser.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (YAML value)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.kind, args.config, args.override)
        if args.kind == "grpo":
            from trainer.grpo import train_grpo
            metrics = train_grpo(config)
        else:
            from trainer.sft import train_sft
            metrics = train_sft(config)
    except MastersError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        _end_distributed()
    if int(os.environ.get("RANK", "0")) == 0:  # one line per training, not one per process
        print(json.dumps({"output_dir": config.output_dir, "metrics": metrics}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
