"""``bench/`` goes on ``sys.path`` so that the benchmarks' measurement helpers can be tested."""

import sys
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))  # last: bench/ holds generic names
