"""Resize and Upsample against onnxruntime."""

import numpy as np
import pytest
from op_harness import check_op, i64, randint, randn, torch_only

X = randn(1, 2, 4, 5)
F32 = np.float32
NO_ROI = np.zeros(0, F32)

SCALES = [(1, 1, 2, 2), (1, 1, 0.5, 0.6), (1, 1, 1.5, 3), (1, 1, 0.75, 1.7)]
SIZES = [(1, 2, 8, 10), (1, 2, 3, 2), (1, 2, 7, 5), (1, 2, 1, 1)]
TRANSFORMS = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"]
NEAREST_MODES = ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]


def _scales(values):
    return np.array(values, F32)


@pytest.mark.parametrize("scales", SCALES)
@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("nearest_mode", NEAREST_MODES)
def test_nearest_scales(scales, transform, nearest_mode):
    attrs = {"mode": "nearest", "coordinate_transformation_mode": transform, "nearest_mode": nearest_mode}
    check_op("Resize", [X, NO_ROI, _scales(scales)], attrs, opset=13)


@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("transform", TRANSFORMS + ["half_pixel_symmetric"])
def test_nearest_sizes(sizes, transform):
    attrs = {"coordinate_transformation_mode": transform}
    check_op("Resize", [X, None, None, i64(*sizes)], attrs, opset=19)


@pytest.mark.parametrize("nearest_mode", NEAREST_MODES)
@pytest.mark.parametrize("opset", [11, 13, 17])
def test_tf_half_pixel_for_nn(nearest_mode, opset):
    """tf2onnx's export of TensorFlow's nearest resize with half_pixel_centers (at any opset, though ONNX deprecates
    the mode from 13 on: onnxruntime runs it)."""
    attrs = {"mode": "nearest", "coordinate_transformation_mode": "tf_half_pixel_for_nn", "nearest_mode": nearest_mode}
    for scales in SCALES:
        check_op("Resize", [X, NO_ROI, _scales(scales)], attrs, opset=opset)
    for sizes in SIZES:
        check_op("Resize", [X, NO_ROI, np.zeros(0, F32) if opset == 11 else None, i64(*sizes)], attrs, opset=opset)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("scales", SCALES)
@pytest.mark.parametrize("transform", TRANSFORMS + ["half_pixel_symmetric"])
def test_interpolating_scales(mode, scales, transform):
    attrs = {"mode": mode, "coordinate_transformation_mode": transform}
    check_op("Resize", [X, NO_ROI, _scales(scales)], attrs, opset=19)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("sizes", SIZES)
@pytest.mark.parametrize("opset", [11, 13, 18])
def test_interpolating_sizes(mode, sizes, opset):
    """Opset 11 needs an empty scales input next to sizes; later opsets omit it."""
    scales = np.zeros(0, F32) if opset == 11 else None
    check_op("Resize", [X, NO_ROI, scales, i64(*sizes)], {"mode": mode}, opset=opset)


@pytest.mark.parametrize("a", [-0.75, -0.5])
@pytest.mark.parametrize("exclude_outside", [0, 1])
@pytest.mark.parametrize("scales", SCALES[:3])
def test_cubic_options(a, exclude_outside, scales):
    attrs = {"mode": "cubic", "cubic_coeff_a": a, "exclude_outside": exclude_outside}
    check_op("Resize", [X, NO_ROI, _scales(scales)], attrs, opset=13)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("scales", [(1, 1, 0.5, 0.4), (1, 1, 0.75, 2), (1, 1, 2, 2)])
def test_antialias(mode, scales):
    data = randn(1, 2, 8, 10)
    check_op("Resize", [data, None, _scales(scales)], {"mode": mode, "antialias": 1}, opset=18)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("roi", [(0, 0, 0.2, 0.1, 1, 1, 0.9, 0.7), (0, 0, -0.2, 0.3, 1, 1, 1.3, 1.2)])
def test_tf_crop_and_resize(mode, roi):
    attrs = {"mode": mode, "coordinate_transformation_mode": "tf_crop_and_resize", "extrapolation_value": 9.0}
    check_op("Resize", [X, np.array(roi, F32), None, i64(1, 2, 3, 4)], attrs, opset=13)
    check_op("Resize", [X, np.array(roi, F32), _scales((1, 1, 2, 1.5))], attrs, opset=13)


@pytest.mark.parametrize("policy", ["stretch", "not_larger", "not_smaller"])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_axes_and_aspect_ratio(policy, mode):
    attrs = {"mode": mode, "axes": [3, 2], "keep_aspect_ratio_policy": policy}
    check_op("Resize", [X, None, None, i64(7, 6)], attrs, opset=18)


@pytest.mark.parametrize("policy", ["not_larger", "not_smaller"])
def test_negative_axes_with_aspect_ratio(policy):
    """onnxruntime ignores the policy for negative axes, so compare with the same axes positive."""
    sizes = i64(7, 6)
    (negative,) = torch_only(
        "Resize", [X, None, None, sizes], {"axes": [-1, -2], "keep_aspect_ratio_policy": policy}, opset=18
    )
    expected = check_op(
        "Resize", [X, None, None, sizes], {"axes": [3, 2], "keep_aspect_ratio_policy": policy}, opset=18
    )
    np.testing.assert_array_equal(negative, expected[0])


def test_negative_axes():
    check_op("Resize", [X, None, None, i64(7, 6)], {"mode": "linear", "axes": [-1, 2]}, opset=18)


def test_axes_with_scales():
    check_op("Resize", [X, None, _scales((2.5,))], {"mode": "linear", "axes": [3]}, opset=18)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("scales", SCALES)
def test_resize_opset_10(mode, scales):
    check_op("Resize", [X, _scales(scales)], {"mode": mode}, opset=10)


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("scales", [(1, 1, 2, 2), (1, 1, 1.5, 3), (1, 1, 3, 2.5)])
def test_upsample(mode, scales):
    check_op("Upsample", [X], {"mode": mode, "scales": [float(s) for s in scales]}, opset=7)
    check_op("Upsample", [X, _scales(scales)], {"mode": mode}, opset=9)


def test_nearest_keeps_integer_type():
    check_op("Resize", [randint(0, 9, 1, 1, 3, 3, dtype=np.int32), NO_ROI, _scales((1, 1, 2, 1.5))], opset=13)


@pytest.mark.parametrize("scales", SCALES[:2])
def test_linear_uint8_truncates(scales):
    """Results on an integer boundary may truncate either way (axis-by-axis sums round
    differently from onnxruntime's), so the scales here keep clear of that."""
    data = randint(0, 255, 1, 1, 4, 5, dtype=np.uint8)
    check_op("Resize", [data, NO_ROI, _scales(scales)], {"mode": "linear"}, opset=13)


def test_three_spatial_axes():
    data = randn(1, 1, 3, 4, 5)
    check_op("Resize", [data, NO_ROI, _scales((1, 1, 2, 0.5, 1.5))], {"mode": "linear"}, opset=13)
