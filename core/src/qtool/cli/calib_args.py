"""The calibration-data flags that ``quantize`` and ``analyse`` share: layout, sample count, NaN/Inf handling."""

from __future__ import annotations

from ..errors import QtoolError


def add_calibration_flags(parser) -> None:
    # the layouts written out (qtool.calibration.sources.LAYOUTS): the parser's start does not import the package
    parser.add_argument("--calib-layout", choices=("samples", "feeds"), default=None,
                        help="samples: arrays hold samples along their first axis (default; feeds where the model "
                             "has a scalar input, which has no such axis, and for ONNX test data, each "
                             "test_data_set_* one call, which refuses samples); feeds: each file is "
                             "one model call with exactly the shapes the model takes (recurrent state, "
                             "sequence-first or fixed-batch inputs)")
    parser.add_argument("--calib-samples", type=int, metavar="N",
                        help="use only the first N samples (feeds) of the calibration data")
    parser.add_argument("--calib-skip-nonfinite", action="store_true",
                        help="skip calibration samples holding NaN (counted) instead of stopping")


def calibration_options(args) -> dict:
    """The keyword arguments of qtool.quantize that the flags set; a flag of the data without data is refused (with
    --load-state and no --calib they were ignored without a word)."""
    flags = (("--calib-layout", args.calib_layout), ("--calib-samples", args.calib_samples),
             ("--calib-skip-nonfinite", args.calib_skip_nonfinite))
    given = [flag for flag, value in flags if value not in (None, False)]
    if given and args.calib is None:
        raise QtoolError(f"{', '.join(given)} shape(s) the calibration data, and no --calib was given")
    return {"calib_layout": args.calib_layout, "max_samples": args.calib_samples,
            "skip_nonfinite": args.calib_skip_nonfinite}
