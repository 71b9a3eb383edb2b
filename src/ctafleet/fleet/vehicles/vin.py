"""Vehicle identification numbers: ISO 3779 / North-American check digit (49 CFR 565)."""

from __future__ import annotations

import re

_VALUES = {
    **{str(d): d for d in range(10)},
    **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
    **dict(zip("JKLMN", range(1, 6), strict=True)),
    "P": 7,
    "R": 9,
    **dict(zip("STUVWXYZ", range(2, 10), strict=True)),
}
_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 10, 0, 9, 8, 7, 6, 5, 4, 3, 2)
_VIN = re.compile(r"^[A-HJ-NPR-Z0-9]{17}$")
_NONSTANDARD = re.compile(r"^[A-Z0-9-]{1,32}$")


def check_digit(vin: str) -> str:
    total = sum(_VALUES[c] * w for c, w in zip(vin, _WEIGHTS, strict=True))
    rem = total % 11
    return "X" if rem == 10 else str(rem)


def validate_vin(value: str, *, nonstandard: bool = False) -> str:
    """The normalised VIN, or ValueError saying what is wrong."""
    vin = value.strip().upper()
    if nonstandard:
        if not _NONSTANDARD.match(vin):
            raise ValueError("identifier must be 1-32 letters, digits or dashes")
        return vin
    if len(vin) != 17:
        raise ValueError(
            f"a VIN has 17 characters, this has {len(vin)}; for another format set "
            "vin_nonstandard=true"
        )
    if not _VIN.match(vin):
        raise ValueError("a VIN uses digits and capital letters except I, O and Q")
    expected = check_digit(vin)
    if vin[8] != expected:
        raise ValueError(
            f"check digit (9th character) is {vin[8]!r} but should be {expected!r}; for a VIN "
            "without a North-American check digit set vin_nonstandard=true"
        )
    return vin
