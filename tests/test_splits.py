"""split_exact: pieces always sum to their line, and the rounding is largest remainder (Hamilton).

The property test draws random amounts (positive, negative, sub-unit), weights and precisions; the hand
cases are chosen so that other plausible roundings (half-up with the difference on the largest share,
floor with the rest on the last piece, banker's rounding) give a different answer.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apportion.splits import split_exact

UNITS = [Decimal("0.01"), Decimal("0.0001"), Decimal("0.000000000001"), Decimal("1")]


@settings(max_examples=400, deadline=None)
@given(
    cents=st.integers(min_value=-10**14, max_value=10**14),
    scale=st.integers(min_value=0, max_value=12),
    weights=st.lists(st.decimals(min_value=0, max_value=10**6, places=6, allow_nan=False, allow_infinity=False),
                     min_size=1, max_size=12).filter(lambda ws: sum(ws) > 0),
    unit=st.sampled_from(UNITS),
)
def test_pieces_sum_exactly_to_the_amount_for_any_amount_weights_and_precision(cents, scale, weights, unit):
    amount = Decimal(cents).scaleb(-scale)
    pieces = split_exact(amount, weights, unit)
    assert len(pieces) == len(weights)
    assert sum(pieces) == amount
    # every piece has the sign of the amount, and a zero weight gets nothing unless it must take a sub-unit rest
    assert all(p == 0 or (p > 0) == (amount > 0) for p in pieces)
    whole = (abs(amount) // unit) * unit
    for w, p in zip(weights, pieces):
        if w == 0:
            assert p == 0
        # each piece is within one unit (plus the sub-unit rest) of its exact share of the whole units
        exact = whole * Decimal(w) / sum(Decimal(x) for x in weights)
        assert abs(abs(p) - exact) <= unit + (abs(amount) - whole)


@pytest.mark.parametrize("amount, weights, unit, expected", [
    # largest remainder gives the two leftover cents to the first two equal remainders; half-up with the
    # difference on the largest share would give [0.00, 0.01, 0.01]
    ("0.02", [1, 1, 1], "0.01", ["0.01", "0.01", "0.00"]),
    ("0.01", [1, 1, 1], "0.01", ["0.01", "0.00", "0.00"]),
    # shares 2.4, 0.8, 0.8 cents: the two largest remainders take the two cents; flooring with the rest on
    # the last piece would give [0.02, 0.00, 0.02]
    ("0.04", [3, 1, 1], "0.01", ["0.02", "0.01", "0.01"]),
    ("0.10", [1, 2, 3, 4], "0.01", ["0.01", "0.02", "0.03", "0.04"]),
    # 1/3 each of 1.00: 0.33 floor; one cent left goes to the earliest tie
    ("1.00", [1, 1, 1], "0.01", ["0.34", "0.33", "0.33"]),
    # 2/3 and 1/3 of 0.10: floors 0.06 and 0.03, remainders .67 and .33 -> the cent goes to the first
    ("0.10", [2, 1], "0.01", ["0.07", "0.03"]),
    # banker's rounding of 0.125 -> 0.12 would lose a cent; largest remainder keeps it: [0.13, 0.12]
    ("0.25", [1, 1], "0.01", ["0.13", "0.12"]),
    # credits keep their sign and split like their absolute value
    ("-10", [1, 2], "0.01", ["-3.33", "-6.67"]),
    # a sub-cent line split to the cent: the rest below one cent goes to the largest weight
    ("0.015", [1, 3], "0.01", ["0.000", "0.015"]),
    ("0.005", [2, 1], "0.01", ["0.005", "0.000"]),
])
def test_largest_remainder_by_hand(amount, weights, unit, expected):
    assert split_exact(Decimal(amount), weights, Decimal(unit)) == [Decimal(e) for e in expected]


@pytest.mark.parametrize("weights", [[], [0, 0], [1, -1]])
def test_nothing_to_split_by_is_an_error(weights):
    with pytest.raises(ValueError):
        split_exact(Decimal("1"), weights, Decimal("0.01"))
