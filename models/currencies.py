"""ISO 4217 codes a bill may be issued in, from pycountry (the maintained ISO code lists).

pycountry lists every ISO 4217 code, including ones no invoice is issued in: precious metals, bond
market units, the IMF's SDR, test and no-currency codes, and the fund (non-tender) codes. A
BillingCurrency outside the remaining set quarantines the row.
"""

from __future__ import annotations

from functools import cache

import pycountry

# Not legal tender: metals (XAU gold, XAG silver, XPD palladium, XPT platinum), European bond-market
# units (XBA-XBD), SDR (XDR), Sucre (XSU), ADB unit (XUA), Arab accounting dinar (XAD), testing (XTS),
# no currency (XXX), and fund codes (BOV, CHE, CHW, CLF, COU, MXV, USN, UYI, UYW).
NOT_BILLING_CURRENCIES = frozenset({
    "XAU", "XAG", "XPD", "XPT", "XBA", "XBB", "XBC", "XBD", "XDR", "XSU", "XUA", "XAD", "XTS", "XXX",
    "BOV", "CHE", "CHW", "CLF", "COU", "MXV", "USN", "UYI", "UYW",
})


@cache
def billing_currency_codes() -> tuple[str, ...]:
    """Sorted active ISO 4217 codes that money is billed in (USD, EUR, JPY, ...)."""
    return tuple(sorted(c.alpha_3 for c in pycountry.currencies if c.alpha_3 not in NOT_BILLING_CURRENCIES))
