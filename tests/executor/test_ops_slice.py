"""Concat, Split, Slice and Pad against onnxruntime."""

import numpy as np
import pytest
from op_harness import check_op, i64, randint, randn

X = randn(3, 4, 5)


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("opset", [5, 13])
def test_concat(axis, opset):
    parts = [randn(*[2 if d == axis % 3 else n for d, n in enumerate(X.shape)], seed=i) for i in range(3)]
    check_op("Concat", parts, {"axis": axis}, opset=opset)


def test_concat_with_empty_part():
    check_op("Concat", [randn(2, 3), np.zeros((0, 3), np.float32), randn(1, 3, seed=1)], {"axis": 0}, opset=13)


@pytest.mark.parametrize("axis, sizes", [(0, [1, 2]), (1, [1, 1, 2]), (-1, [2, 3])])
def test_split_sizes(axis, sizes):
    check_op("Split", [X], {"axis": axis, "split": sizes}, opset=11, num_outputs=len(sizes))
    check_op("Split", [X, i64(*sizes)], {"axis": axis}, opset=13, num_outputs=len(sizes))
    check_op("Split", [X, i64(*sizes)], {"axis": axis}, opset=18, num_outputs=len(sizes))


@pytest.mark.parametrize("opset", [11, 13])
def test_split_equal_parts_by_outputs(opset):
    check_op("Split", [randn(2, 6)], {"axis": 1}, opset=opset, num_outputs=3)


@pytest.mark.parametrize("parts", [2, 3, 5])
def test_split_num_outputs(parts):
    """Opset 18: the last part is smaller when the axis does not divide evenly."""
    check_op("Split", [randn(2, 10)], {"axis": 1, "num_outputs": parts}, opset=18, num_outputs=parts)
    check_op("Split", [randn(7, 2)], {"num_outputs": 4}, opset=18, num_outputs=4)


BIG = 2**63 - 1
SLICES = [
    ([0], [2], [0], None),
    ([1, 1], [3, -1], [1, 2], None),
    ([-3], [BIG], [2], None),
    ([-10], [10], [0], None),
    ([0, 1], [3, 4], [0, 1], [2, 2]),
    ([-1], [-BIG], [2], [-1]),
    ([3], [0], [1], [-2]),
    ([10], [-10], [0], [-1]),
    ([4, -1], [-6, 0], [2, 1], [-3, -1]),
    ([2], [2], [2], None),
    ([0, 0, 0], [1, 2, 3], None, None),
]


@pytest.mark.parametrize("starts, ends, axes, steps", SLICES)
@pytest.mark.parametrize("opset", [10, 13])
def test_slice_inputs(starts, ends, axes, steps, opset):
    inputs = [X, i64(*starts), i64(*ends), None if axes is None else i64(*axes)]
    if steps is not None:
        inputs.append(i64(*steps))
    check_op("Slice", inputs, opset=opset)


@pytest.mark.parametrize("starts, ends, axes, steps", [s for s in SLICES if s[3] is None])
def test_slice_attributes(starts, ends, axes, steps):
    attrs = {"starts": starts, "ends": ends} | ({} if axes is None else {"axes": axes})
    check_op("Slice", [X], attrs, opset=9)


def test_slice_int32_indices_on_integers():
    data = randint(0, 100, 4, 6)
    ints = [np.array(v, np.int32) for v in ([1, -1], [4, -6], [0, 1], [2, -2])]
    check_op("Slice", [data, *ints], opset=13)


PADS = [
    [0, 1, 2, 0, 2, 1],
    [1, 0, 0, 1, 0, 0],
    [0, 0, 3, 0, 0, 3],
    [0, -1, 1, 1, 1, -2],
]


@pytest.mark.parametrize("pads", PADS)
@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad_attributes(pads, mode):
    check_op("Pad", [X], {"pads": pads, "mode": mode} | ({"value": 1.5} if mode == "constant" else {}), opset=10)


@pytest.mark.parametrize("pads", PADS)
@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
@pytest.mark.parametrize("opset", [11, 18])
def test_pad_inputs(pads, mode, opset):
    value = np.array(-2.0, np.float32) if mode == "constant" else None
    check_op("Pad", [X, i64(*pads), value], {"mode": mode}, opset=opset)


@pytest.mark.parametrize("pads", PADS)
def test_pad_wrap(pads):
    check_op("Pad", [X, i64(*pads)], {"mode": "wrap"}, opset=19)


@pytest.mark.parametrize("axes, pads", [([1], [2, 1]), ([-1, 0], [1, 0, 2, 1]), ([2, 1], [1, 2, 0, 1])])
@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad_axes_input(axes, pads, mode):
    check_op("Pad", [X, i64(*pads), None, i64(*axes)], {"mode": mode}, opset=18)


def test_pad_integers_constant():
    check_op("Pad", [randint(-5, 5, 2, 3), i64(1, 0, 0, 2), np.array(7, np.int64)], opset=13)
