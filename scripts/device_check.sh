#!/usr/bin/env bash
# The CUDA checks, in one run, on a machine with a GPU whose python3 already has torch (CUDA build), onnx,
# onnxruntime, pluggy, rich, ml_dtypes, pyyaml, scikit-learn, pytest and pytest-xdist:
#
#   pip wheel --no-deps --no-build-isolation -w WHEELS ./core ./plugins/* ./contrib/*    # here, once
#   scripts/device_check.sh WHEELS LOGS                                            # there
#
# 1. scripts/cuda_check.py: CNNs and a BERT-style encoder, float and int8 simulation, CUDA against CPU;
# 2. the executor's op and model tests with qtool's side on CUDA (QTOOL_TEST_DEVICE=cuda), the failures
#    then re-run with the CPU, to tell a CUDA difference from an onnxruntime version difference;
# 3. the tests that need CUDA: accuracy passes and qtool.quantize on CUDA against the CPU.
# Exits non-zero when any step failed; each step's log is written to LOGS.
set -u -o pipefail
wheels=${1:?usage: device_check.sh WHEELS LOGS}
logs=${2:?usage: device_check.sh WHEELS LOGS}
mkdir -p "$logs"
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/qtool-site "$wheels"/*.whl || exit 2
export PYTHONPATH=/tmp/qtool-site PYTHONUNBUFFERED=1
python3 -c "import torch, onnxruntime; print('torch', torch.__version__, torch.cuda.get_device_name(),
'| onnxruntime', onnxruntime.__version__)"
cache="-o cache_dir=/tmp/qtool-pytest-cache"
status=0
python3 scripts/cuda_check.py 2>&1 | tee "$logs/cuda_check.log" || status=1
if ! QTOOL_TEST_DEVICE=cuda python3 -m pytest -q $cache -n 8 tests/executor >"$logs/executor_cuda.log" 2>&1; then
    status=1
    QTOOL_TEST_DEVICE=cpu python3 -m pytest -q $cache --lf tests/executor >"$logs/executor_cpu_rerun.log" 2>&1
    echo "executor tests on CUDA failed; the same failures re-run on the CPU: $(tail -1 "$logs/executor_cpu_rerun.log")"
fi
tail -1 "$logs/executor_cuda.log"
python3 -m pytest -q $cache -rs tests/executor/test_executor_precision.py tests/accuracy/test_accuracy_cuda.py \
    tests/pipeline/test_pipeline_cuda.py tests/calibration/test_calibration_observers.py 2>&1 \
    | tee "$logs/cuda_tests.log" | tail -5 || status=1
exit $status
