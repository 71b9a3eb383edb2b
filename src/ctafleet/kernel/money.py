"""Money is integer minor units with an ISO 4217 currency code; never a float."""

from __future__ import annotations

# ISO 4217 codes in use; a typo like "EUD" is refused rather than stored.
CURRENCIES = frozenset(
    [
        "AED",
        "AUD",
        "BRL",
        "CAD",
        "CHF",
        "CLP",
        "CNY",
        "COP",
        "CZK",
        "DKK",
        "EGP",
        "EUR",
        "GBP",
        "HKD",
        "HUF",
        "IDR",
        "ILS",
        "INR",
        "ISK",
        "JPY",
        "KES",
        "KRW",
        "MXN",
        "MYR",
        "NGN",
        "NOK",
        "NZD",
        "PEN",
        "PHP",
        "PKR",
        "PLN",
        "QAR",
        "RON",
        "SAR",
        "SEK",
        "SGD",
        "THB",
        "TRY",
        "TWD",
        "UAH",
        "USD",
        "VND",
        "ZAR",
    ]
)
# Digits after the decimal point where it is not 2 (ISO 4217 minor unit).
_EXPONENT = {"CLP": 0, "ISK": 0, "JPY": 0, "KRW": 0, "VND": 0}
MAX_MINOR = 10**13  # ten trillion cents: above any fleet's single amount


def validate_currency(value: str) -> str:
    if value not in CURRENCIES:
        raise ValueError(f"unsupported currency {value!r}; use an ISO 4217 code like USD or EUR")
    return value


def exponent(currency: str) -> int:
    """How many minor units make a major one, as a power of ten (USD: 2, JPY: 0)."""
    return _EXPONENT.get(validate_currency(currency), 2)


def format_minor(amount_minor: int, currency: str) -> str:
    """`4599900, "USD"` → `45999.00 USD` (for CSV and e-mails; the UI localises)."""
    digits = exponent(currency)
    sign = "-" if amount_minor < 0 else ""
    whole, frac = divmod(abs(amount_minor), 10**digits)
    return f"{sign}{whole}.{frac:0{digits}d} {currency}" if digits else f"{sign}{whole} {currency}"
