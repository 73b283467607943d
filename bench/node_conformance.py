"""qtool's executor against onnxruntime on onnx's own node tests, for the op families the executor registers.

Every node test case onnx generates whose ops all have an executor kernel runs through the executor (float)
and through an onnxruntime CPU session; each side passes a case when its outputs match onnx's expected ones
(same dtype and shape, within the case's tolerances). Prints both pass rates on the same cases.

    python bench/node_conformance.py            # rates
    python bench/node_conformance.py --failures # and every case a side fails, with the first line of why
"""

from __future__ import annotations

import argparse
import platform
import time
import warnings
from datetime import date

import onnx
import onnxruntime
from qtool.executor import load_plugin_ops
from qtool.executor.ops import supported_op_types
from qtool.testing.node_tests import node_test_cases, op_types, run_executor, run_onnxruntime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--failures", action="store_true", help="list the failing cases of each side")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    load_plugin_ops()
    registered = set(supported_op_types())
    cases = [case for case in node_test_cases() if op_types(case) <= registered]
    print(f"{date.today()} on {platform.machine()}, onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}: "
          f"{len(cases)} node test cases of {len({t for c in cases for t in op_types(c)})} registered op types")
    for label, runner in (("qtool executor", run_executor), ("onnxruntime", run_onnxruntime)):
        failures, start = {}, time.perf_counter()
        for case in cases:
            try:
                runner(case)
            except Exception as exc:  # noqa: BLE001 - any failure counts, with its reason
                failures[case.name] = f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:140]}"
        passed = len(cases) - len(failures)
        print(f"{label:15s} {passed}/{len(cases)} passed ({100 * passed / len(cases):.1f}%) "
              f"in {time.perf_counter() - start:.1f} s")
        if args.failures:
            for name, why in sorted(failures.items()):
                print(f"    {name}: {why}")


if __name__ == "__main__":
    main()
