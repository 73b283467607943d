"""Shape, layout, cast, creation and pass-through ops against onnxruntime."""

import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, numpy_helper
from op_harness import check_op, i64, randint, randn, torch_only

X = randn(2, 3, 4)


@pytest.mark.parametrize("attrs", [{}, {"start": 1}, {"end": -1}, {"start": -2, "end": 3}, {"start": 5}])
def test_shape(attrs):
    check_op("Shape", [X], attrs, opset=15)


def test_size():
    check_op("Size", [X], opset=13)


@pytest.mark.parametrize("shape", [(6, 4), (0, -1), (-1,), (2, 0, 2, 2), (4, 3, 2)])
@pytest.mark.parametrize("opset", [5, 14])
def test_reshape(shape, opset):
    check_op("Reshape", [X, i64(*shape)], opset=opset)


def test_reshape_allowzero():
    check_op("Reshape", [np.zeros((0, 4), np.float32), i64(4, 0)], {"allowzero": 1}, opset=14)


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1])
def test_flatten(axis):
    check_op("Flatten", [X], {"axis": axis}, opset=13)


@pytest.mark.parametrize("perm", [None, [0, 2, 1], [2, 0, 1]])
def test_transpose(perm):
    check_op("Transpose", [X], {} if perm is None else {"perm": perm}, opset=13)


ONES = randn(1, 3, 1, 2)


@pytest.mark.parametrize("axes", [None, [0], [0, -2]])
def test_squeeze_attribute(axes):
    check_op("Squeeze", [ONES], {} if axes is None else {"axes": axes}, opset=11)


@pytest.mark.parametrize("axes", [None, [0], [0, -2]])
def test_squeeze_input(axes):
    check_op("Squeeze", [ONES] + ([] if axes is None else [i64(*axes)]), opset=13)


@pytest.mark.parametrize("axes", [[0], [1, 3], [-1], [0, -1], [4, 0]])
def test_unsqueeze(axes):
    check_op("Unsqueeze", [X], {"axes": axes}, opset=11)
    check_op("Unsqueeze", [X, i64(*axes)], opset=13)


@pytest.mark.parametrize("shape", [(2, 3, 4), (3, 1), (2, 1, 1, 1), (5, 2, 3, 4), (1,), (3, 0), (2, 1, 5)])
def test_expand(shape):
    check_op("Expand", [randn(3, 1), i64(*shape)], opset=13)


def test_expand_imports_no_sympy():
    """torch.broadcast_shapes imports torch._refs and sympy (a second): Expand computes the shape without it."""
    code = ("import sys, numpy as np; from qtool.executor.ops import OpContext, get_op; import torch; "
            "ctx = OpContext('Expand', 'e', 13, 1, torch.device('cpu')); "
            "y, = get_op('Expand')(ctx, {}, [torch.ones(3, 1), torch.tensor([2, 1, 4])]); "
            "assert tuple(y.shape) == (2, 3, 4), y.shape; print('sympy' in sys.modules)")
    ran = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert ran.stdout.strip() == "False", ran.stderr


def test_tile():
    check_op("Tile", [X, i64(1, 2, 3)], opset=13)


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space(mode):
    check_op("DepthToSpace", [randn(2, 8, 2, 3)], {"blocksize": 2, "mode": mode}, opset=13)


def test_space_to_depth():
    check_op("SpaceToDepth", [randn(2, 2, 4, 6)], {"blocksize": 2}, opset=13)


def test_identity():
    check_op("Identity", [randint(0, 5, 3)], opset=16)


@pytest.mark.parametrize("opset", [7, 10, 13])
def test_dropout_inference(opset):
    """Inference passes data through with an all-true mask (of the data's type before opset 10).

    onnxruntime zeroes the mask before opset 12, against the spec, so the mask is checked here.
    """
    attrs = {"ratio": 0.3} if opset < 12 else {}
    check_op("Dropout", [X], attrs, opset=opset)
    _, mask = torch_only("Dropout", [X], attrs, opset=opset, num_outputs=2)
    assert mask.dtype == (np.float32 if opset < 10 else bool)
    assert mask.shape == X.shape and mask.all()


def test_dropout_mask_matches_onnxruntime_from_opset_12():
    check_op("Dropout", [X], opset=13, num_outputs=2)


def test_dropout_training_mode_drops_and_rescales():
    x = np.ones((64, 64), np.float32)
    y, mask = torch_only("Dropout", [x, np.array(0.25, np.float32), np.array(True)], opset=13, num_outputs=2)
    np.testing.assert_allclose(y, np.where(mask, 1 / 0.75, 0.0), rtol=1e-6)
    assert 0.65 < mask.mean() < 0.85


def test_dropout_ratio_input_without_training():
    check_op("Dropout", [X, np.array(0.2, np.float32), np.array(False)], opset=13, num_outputs=2)


FLOATS = np.array([-2.7, -0.5, 0.0, 0.4, 1.5, 3.9, 300.0], np.float32)


@pytest.mark.parametrize(
    "source, to",
    [
        (FLOATS, TensorProto.INT32),
        (FLOATS, TensorProto.INT64),
        (FLOATS, TensorProto.BOOL),
        (FLOATS, TensorProto.FLOAT16),
        (FLOATS, TensorProto.DOUBLE),
        (np.array([0, 1, 1, 0], bool), TensorProto.FLOAT),
        (np.array([0, 3, -4], np.int64), TensorProto.BOOL),
        (np.array([200, -56, 7], np.int32), TensorProto.INT8),
        (np.array([70000, -1, 7], np.int64), TensorProto.INT32),
        (np.array([1, 2], np.int8), TensorProto.FLOAT),
    ],
)
@pytest.mark.parametrize("opset", [9, 13])
def test_cast(source, to, opset):
    check_op("Cast", [source], {"to": to}, opset=opset)


@pytest.mark.parametrize("saturate", [0, 1])
def test_cast_to_float8_e4m3fn(saturate):
    x = np.array([0.1, -1.5, 300, 460, 470, -1000, 1e-9, np.inf, -np.inf, np.nan], np.float32)
    check_op("Cast", [x], {"to": TensorProto.FLOAT8E4M3FN, "saturate": saturate}, opset=21)


def test_cast_like():
    check_op("CastLike", [FLOATS, np.zeros(1, np.int32)], opset=15)


@pytest.mark.parametrize(
    "attrs",
    [
        {"value": numpy_helper.from_array(randn(2, 3))},
        {"value": numpy_helper.from_array(i64(4, 5))},
        {"value": numpy_helper.from_array(np.array(True))},
        {"value_float": 1.5},
        {"value_floats": [1.0, 2.5]},
        {"value_int": 7},
        {"value_ints": [1, -2, 3]},
    ],
)
def test_constant(attrs):
    check_op("Constant", [], attrs, opset=13)


@pytest.mark.parametrize(
    "value", [None, np.array([2.5], np.float32), np.array([3], np.int64), np.array([1], np.int32), np.array([True])]
)
@pytest.mark.parametrize("shape", [(2, 3), (0,), ()])
def test_constant_of_shape(value, shape):
    attrs = {} if value is None else {"value": numpy_helper.from_array(value)}
    check_op("ConstantOfShape", [i64(*shape)], attrs, opset=9)


@pytest.mark.parametrize("bounds", [(0, 5, 1), (10, 2, -3), (3, 3, 1), (-4, 7, 2)])
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.int32])
def test_range_whole_steps(bounds, dtype):
    check_op("Range", [np.array(v, dtype) for v in bounds], opset=11)


@pytest.mark.parametrize("bounds", [(0.5, 2.0, 0.25), (1.0, -1.0, -0.3), (0.0, 1.0, 0.1)])
def test_range_fractional_steps(bounds):
    check_op("Range", [np.array(v, np.float32) for v in bounds], opset=11)


@pytest.mark.parametrize("attrs", [{}, {"k": 1}, {"k": -2}, {"dtype": TensorProto.INT64}])
def test_eye_like(attrs):
    check_op("EyeLike", [randn(3, 4)], attrs, opset=9)
