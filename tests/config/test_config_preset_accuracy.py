"""A preset's [accuracy] layer: w4a8 turns on the sensitivity fallback, and the user's keys win over it."""

from __future__ import annotations

from qtool.config import resolve_config
from qtool.passes.accuracy import SensitivityFallback, accuracy_passes

W4_FALLBACK = {"max_gap_db": 1.0, "precision": {"weight_bits": 8}, "samples": 16}


def test_w4a8_carries_a_weight_widening_fallback():
    config = resolve_config({}, None, preset="w4a8")
    assert dict(config.accuracy) == {"equalization": False, "smoothquant": False, "fallback": W4_FALLBACK,
                                     "adaround": False, "bias_correction": False, "gptq": False, "awq": False,
                                     "hqq": False, "channel_split": False, "outlier_outputs": False}
    assert config.origins["accuracy.fallback"] == "preset 'w4a8'"
    _, after = accuracy_passes(config.accuracy, data=[{"x": None}])
    assert [type(p) for p in after] == [SensitivityFallback] and after[0].bits == {"weight": 8}


def test_the_users_keys_win_over_the_presets_accuracy_layer(write_config):
    off = resolve_config({}, write_config("[accuracy]\nfallback = false\n"), preset="w4a8")
    assert off.accuracy["fallback"] is False and off.origins["accuracy.fallback"] != "preset 'w4a8'"
    assert accuracy_passes(off.accuracy, data=[{"x": None}]) == ([], [])
    replaced = resolve_config({}, {"accuracy": {"fallback": {"min_snr_db": 20}}}, preset="w4a8")
    assert replaced.accuracy["fallback"] == {"min_snr_db": 20}  # a table replaces the preset's whole table


def test_other_presets_turn_no_accuracy_pass_on():
    for name in ("w8a8", "a16w8", "fp8-e4m3"):
        assert not any(resolve_config({}, None, preset=name).accuracy.values())
