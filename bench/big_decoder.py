"""Write a Llama-style decoder of about 1.5 B parameters (6 GB fp32) with random seeded weights straight to
external data, one weight at a time (peak memory: one weight matrix), for bench/weight_only.py's row (c).

    python bench/big_decoder.py [--out /tmp/qtool-big/llama.onnx] [--layers 28] [--hidden 2048] ...
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from qtool.testing.llama import LlamaConfig, write_llama

DEFAULT = Path("/tmp/qtool-big/llama.onnx")


def config_from(args) -> LlamaConfig:
    return LlamaConfig(vocab=args.vocab, hidden=args.hidden, intermediate=args.intermediate, layers=args.layers,
                       heads=args.heads)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = LlamaConfig()
    for name in ("vocab", "hidden", "intermediate", "layers", "heads"):
        parser.add_argument(f"--{name}", type=int, default=getattr(defaults, name))


def build(path: Path, config: LlamaConfig, seed: int = 0) -> Path:
    """The model at ``path``, written unless a model of the same configuration is already there."""
    stamp = path.with_name(path.name + ".config")
    if path.exists() and stamp.exists() and stamp.read_text() == repr((config, seed)):
        return path
    write_llama(path, config, seed)
    stamp.write_text(repr((config, seed)))
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT)
    parser.add_argument("--seed", type=int, default=0)
    add_arguments(parser)
    args = parser.parse_args()
    config = config_from(args)
    start = time.monotonic()
    build(args.out, config, args.seed)
    size = args.out.with_name(args.out.name + ".data").stat().st_size
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{args.out}: {config.parameters / 1e9:.2f} B parameters, {size / 2**30:.2f} GiB of data, "
          f"{time.monotonic() - start:.0f} s, peak RSS {peak:.2f} GiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
