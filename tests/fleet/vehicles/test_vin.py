"""VIN validation: the North-American check digit (49 CFR 565) and the non-standard escape."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ctafleet.fleet.vehicles.vin import check_digit, validate_vin

KNOWN_GOOD = ["1M8GDM9AXKP042788", "1HGCM82633A004352", "11111111111111111", "5YJSA1E10HF000316"]
VIN_CHARS = "0123456789ABCDEFGHJKLMNPRSTUVWXYZ"
# The transliteration table: letters sharing a value cannot be told apart by the check digit.
VALUE = {
    **{str(d): d for d in range(10)},
    **dict(zip("ABCDEFGH", range(1, 9), strict=True)),
    **dict(zip("JKLMN", range(1, 6), strict=True)),
    "P": 7,
    "R": 9,
    **dict(zip("STUVWXYZ", range(2, 10), strict=True)),
}


@pytest.mark.parametrize("vin", KNOWN_GOOD)
def test_known_good_vins_validate(vin: str) -> None:
    assert validate_vin(vin) == vin
    assert check_digit(vin) == vin[8]


def test_check_digit_x_for_remainder_ten() -> None:
    assert check_digit("1M8GDM9AXKP042788") == "X"


def test_input_is_normalised() -> None:
    assert validate_vin("  1hgcm82633a004352 ") == "1HGCM82633A004352"
    assert validate_vin(" wvwzzz1jzxw000001", nonstandard=True) == "WVWZZZ1JZXW000001"


@pytest.mark.parametrize("vin", KNOWN_GOOD)
def test_every_wrong_check_digit_is_rejected(vin: str) -> None:
    for wrong in "0123456789X":
        if wrong == vin[8]:
            continue
        with pytest.raises(ValueError, match="check digit"):
            validate_vin(vin[:8] + wrong + vin[9:])


@pytest.mark.parametrize("letter", ["I", "O", "Q"])
def test_letters_i_o_q_are_not_allowed(letter: str) -> None:
    vin = "1HGCM82633A00435" + letter
    with pytest.raises(ValueError, match="except I, O and Q"):
        validate_vin(vin)


@pytest.mark.parametrize(
    "vin", ["", "1HGCM82633A00435", "1HGCM82633A0043521", "1HGCM82633A004352" * 2]
)
def test_wrong_length_is_rejected(vin: str) -> None:
    with pytest.raises(ValueError, match="17 characters"):
        validate_vin(vin)


def test_punctuation_is_rejected() -> None:
    with pytest.raises(ValueError, match="except I, O and Q"):
        validate_vin("1HGCM8263-A004352")


def test_nonstandard_accepts_european_vin_without_check_digit() -> None:
    european = "WVWZZZ1JZXW000001"  # 'Z' filler where a North-American VIN has its check digit
    with pytest.raises(ValueError, match="check digit"):
        validate_vin(european)
    assert validate_vin(european, nonstandard=True) == european
    assert validate_vin("ABC-123", nonstandard=True) == "ABC-123"


@pytest.mark.parametrize("value", ["", "A B", "ÄBC", "X" * 33, "ABC_123", "ABC/1"])
def test_nonstandard_still_has_a_format(value: str) -> None:
    with pytest.raises(ValueError, match="1-32 letters"):
        validate_vin(value, nonstandard=True)


def _with_check_digit(body: str) -> str:
    vin = body[:8] + "0" + body[9:]
    return vin[:8] + check_digit(vin) + vin[9:]


vin_bodies = st.text(alphabet=VIN_CHARS, min_size=17, max_size=17)


@settings(max_examples=200, deadline=None)
@given(vin_bodies)
def test_any_vin_with_its_check_digit_validates(body: str) -> None:
    vin = _with_check_digit(body)
    assert validate_vin(vin) == vin


@settings(max_examples=300, deadline=None)
@given(vin_bodies, st.integers(0, 16), st.sampled_from(VIN_CHARS))
def test_single_substitution_is_detected(body: str, position: int, replacement: str) -> None:
    vin = _with_check_digit(body)
    if position == 8 or VALUE[replacement] == VALUE[vin[position]]:
        return
    typo = vin[:position] + replacement + vin[position + 1 :]
    with pytest.raises(ValueError, match="check digit"):
        validate_vin(typo)
