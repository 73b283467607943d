"""The policy bitmap: bitwise behaviour and validation of combinations."""

import pytest

from qtool.quant import QuantizationPolicy as P
from qtool.quant.policy import policy_problems


def test_or_is_bitwise_and_membership_works():
    policy = P.SYMMETRICAL | P.PER_CHANNEL | P.LINEAR
    assert isinstance(policy, P)
    assert int(policy) == int(P.SYMMETRICAL) | int(P.PER_CHANNEL) | int(P.LINEAR)
    assert policy.has(P.PER_CHANNEL) and not policy.has(P.PER_TENSOR)
    assert policy.describe() == "SYMMETRICAL|PER_CHANNEL|LINEAR"


def test_flags_are_distinct_bits():
    values = [int(f) for f in P]
    assert len(set(values)) == len(values)
    assert all(v & (v - 1) == 0 for v in values)


@pytest.mark.parametrize(
    "policy, fragment",
    [
        (P.SYMMETRICAL | P.ASYMMETRICAL | P.PER_TENSOR | P.LINEAR, "symmetry"),
        (P.PER_TENSOR | P.LINEAR, "symmetry"),
        (P.SYMMETRICAL | P.PER_TENSOR | P.PER_CHANNEL | P.LINEAR, "granularity"),
        (P.SYMMETRICAL | P.PER_TENSOR, "number format"),
        (P.SYMMETRICAL | P.PER_TENSOR | P.LINEAR | P.FLOATING, "number format"),
        (P.SYMMETRICAL | P.PER_TENSOR | P.FLOATING | P.POWER_OF_2, "POWER_OF_2"),
    ],
)
def test_invalid_combinations_name_the_conflict(policy, fragment):
    assert any(fragment in problem for problem in policy_problems(policy))


def test_valid_combinations_pass():
    for policy in (
        P.SYMMETRICAL | P.PER_TENSOR | P.LINEAR,
        P.ASYMMETRICAL | P.PER_CHANNEL | P.LINEAR | P.POWER_OF_2,
        P.SYMMETRICAL | P.PER_BLOCK | P.LINEAR | P.DYNAMIC,
        P.SYMMETRICAL | P.PER_TENSOR | P.FLOATING,
    ):
        assert policy_problems(policy) == []
