"""Exact splitting of an amount into pieces: the largest-remainder (Hamilton) method on integer units.

Every split in apportion goes through `split_exact`, so the pieces of a line always sum to the line:
shares are computed in exact rational arithmetic, floored to the unit (default 1e-12, the scale of
DECIMAL(38,12)), and the units left over go one by one to the largest remainders; ties go to the
earlier target, so the result is deterministic. Negative amounts (credits) split like their absolute
value and keep their sign.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

DEFAULT_UNIT = Decimal("0.000000000001")


def split_exact(amount: Decimal, weights: list[Decimal | int | float | str], unit: Decimal = DEFAULT_UNIT) -> list[Decimal]:
    """Split `amount` in proportion to `weights`; the pieces sum to `amount` exactly.

    >>> split_exact(Decimal("0.01"), [1, 1, 1], Decimal("0.01"))
    [Decimal('0.01'), Decimal('0.00'), Decimal('0.00')]
    >>> split_exact(Decimal("-10"), [1, 2], Decimal("0.01"))
    [Decimal('-3.33'), Decimal('-6.67')]

    If `amount` is not a whole number of units (a sub-cent AWS line split to the cent), the
    sub-unit rest goes to the piece that received the last whole unit, so nothing is lost.
    All weights zero (or no weights) is an error: there is nothing to split by.
    """
    if not weights:
        raise ValueError("nothing to split by: no targets")
    ws = [Fraction(Decimal(str(w))) for w in weights]
    if any(w < 0 for w in ws):
        raise ValueError("split weights must not be negative")
    total_w = sum(ws)
    if total_w == 0:
        raise ValueError("nothing to split by: all weights are zero")
    amount = Decimal(amount)
    sign = -1 if amount < 0 else 1
    a = Fraction(abs(amount))
    u = Fraction(unit)
    whole_units = int(a // u)
    rest = a - whole_units * u  # below one unit; exact
    exact = [whole_units * w / total_w for w in ws]
    floors = [int(e) for e in exact]
    left = whole_units - sum(floors)
    order = sorted(range(len(ws)), key=lambda i: (-(exact[i] - floors[i]), i))
    for i in order[:left]:
        floors[i] += 1
    pieces = [Fraction(f) * u for f in floors]
    if rest:
        # the piece with the largest exact share absorbs the sub-unit rest
        biggest = max(range(len(ws)), key=lambda i: (ws[i], -i))
        pieces[biggest] += rest
    scale = max(-amount.as_tuple().exponent, -unit.as_tuple().exponent, 0)
    q = Decimal(1).scaleb(-scale)
    out = [(Decimal(p.numerator) / Decimal(p.denominator)).quantize(q) * sign for p in pieces]
    assert sum(out) == amount, (amount, weights, out)
    return out


def ratios(weights: list[Decimal | int | float | str]) -> list[Decimal]:
    """Weights normalised to ratios (12 decimals) for AllocatedMethodDetails; informative only."""
    ws = [Decimal(str(w)) for w in weights]
    total = sum(ws)
    return [(w / total).quantize(Decimal("0.000000000001")) for w in ws]
