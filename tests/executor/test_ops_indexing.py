"""Gather/Scatter family, NonZero and OneHot against onnxruntime."""

import numpy as np
import pytest
from op_harness import check_op, i64, randint, randn

X = randn(3, 4, 5)


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("indices", [np.array(1), i64(0, -1, 2), np.array([[0, 1], [-2, 2]], np.int32)])
@pytest.mark.parametrize("opset", [11, 13])
def test_gather(axis, indices, opset):
    check_op("Gather", [X, indices], {"axis": axis}, opset=opset)


def test_gather_scalar_from_vector():
    check_op("Gather", [i64(4, 5, 6), np.array(-1, np.int64)], opset=13)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather_elements(axis):
    shape = [2, 3, 4]
    indices = randint(-X.shape[axis], X.shape[axis], *shape)
    check_op("GatherElements", [X, indices], {"axis": axis}, opset=13)


@pytest.mark.parametrize(
    "indices, batch_dims",
    [
        (i64(1, 2).reshape(1, 2), 0),
        (np.array([[0, 1, 2], [2, -1, 0]]), 0),
        (np.array([[[1], [0]], [[2], [-1]]]), 0),
        (np.array([[1], [0], [2]]), 1),
        (np.array([[[1, 2], [0, 0]], [[3, 4], [2, 1]], [[0, 0], [1, 1]]]), 1),
        (randint(-5, 5, 3, 4, 1), 2),
    ],
)
def test_gather_nd(indices, batch_dims):
    check_op("GatherND", [X, indices.astype(np.int64)], {"batch_dims": batch_dims}, opset=13)


def test_gather_nd_scalar_result():
    check_op("GatherND", [randn(2, 3), i64(1, 2)], opset=13)


@pytest.mark.parametrize("opset", [11, 12])
def test_gather_nd_without_batch_dims_attribute(opset):
    check_op("GatherND", [X, np.array([[0, 1], [2, 3]], np.int64)], opset=opset)


SCATTER_ND = [
    (np.array([[0], [2]]), randn(2, 4, 5, seed=1)),
    (np.array([[0, 1], [2, -1]]), randn(2, 5, seed=1)),
    (np.array([[[0, 1, 2]], [[1, 3, 4]]]), randn(2, 1, seed=1)),
]


@pytest.mark.parametrize("indices, updates", SCATTER_ND)
@pytest.mark.parametrize("opset", [11, 13])
def test_scatter_nd(indices, updates, opset):
    check_op("ScatterND", [X, indices.astype(np.int64), updates], opset=opset)


@pytest.mark.parametrize("reduction", ["add", "mul", "max", "min"])
def test_scatter_nd_reductions_with_duplicates(reduction):
    indices = np.array([[0], [2], [0]], np.int64)
    check_op("ScatterND", [X, indices, randn(3, 4, 5, seed=1)], {"reduction": reduction}, opset=18)


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("reduction", [None, "add", "mul", "max", "min"])
def test_scatter_elements(axis, reduction):
    if reduction is None:  # duplicates are undefined without a reduction: distinct, negative targets
        indices = -1 - np.indices((2, 3, 4))[axis]
    else:
        indices = randint(-X.shape[axis], X.shape[axis], 2, 3, 4)
    attrs = {"axis": axis} | ({} if reduction is None else {"reduction": reduction})
    check_op("ScatterElements", [X, indices.astype(np.int64), randn(2, 3, 4, seed=1)], attrs, opset=18)


def test_scatter_deprecated_name():
    indices = np.array([[1, 0, 2]], np.int64)
    check_op("Scatter", [randn(3, 3), indices, randn(1, 3, seed=1)], {"axis": 0}, opset=10)


@pytest.mark.parametrize("x", [randint(0, 2, 3, 4).astype(bool), randint(-1, 2, 2, 3, 2), randn(5)])
def test_non_zero(x):
    check_op("NonZero", [x], opset=13)


@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("indices", [i64(0, 2, -1, 5, -4), np.array([[1.0, 3.0], [0.0, -2.0]], np.float32)])
def test_one_hot(axis, indices):
    """Negative indices count back from depth; out-of-range ones give all-off rows."""
    depth = np.array(4, indices.dtype)
    check_op("OneHot", [indices, depth, np.array([0.5, 2.0], np.float32)], {"axis": axis}, opset=11)
