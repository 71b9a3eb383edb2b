"""The ETag helpers: the version as a strong tag, If-Match parsed strictly."""

from __future__ import annotations

import pytest

from ctafleet.api.etag import etag, parse_if_match
from ctafleet.api.problems import Problem


def test_etag_is_the_quoted_version() -> None:
    assert etag(1) == '"v1"'
    assert etag(123456) == '"v123456"'


@pytest.mark.parametrize(
    ("header", "version"),
    [
        (None, None),
        ("*", None),
        (" * ", None),
        ('"v3"', 3),
        (' "v3" ', 3),
        ('"v0"', 0),
        ('"v999999999999999999"', 999_999_999_999_999_999),
        # Accepted as the same version: a proxy that compresses may weaken the tag it passes on.
        ('W/"v3"', 3),
    ],
)
def test_if_match_values(header: str | None, version: int | None) -> None:
    assert parse_if_match(header) == (None if version is None else frozenset({version}))


@pytest.mark.parametrize(
    ("header", "versions"),
    [
        ('"v1", "v2"', {1, 2}),
        ('"v7",W/"v8" ,  "v9"', {7, 8, 9}),
        # RFC 9110: a tag that is not ours only fails to match; ours in the list still may.
        ('"abc", "v4"', {4}),
    ],
)
def test_if_match_lists(header: str, versions: set[int]) -> None:
    assert parse_if_match(header) == frozenset(versions)


@pytest.mark.parametrize(
    "header",
    [
        "",
        "v3",
        "3",
        '"3"',
        '"v3',
        'v3"',
        "'v3'",
        '"v-3"',
        '"v3.0"',
        '"V3"',
        '"v1000000000000000000"',
        '"x1", "y2"',
        'w/"v3"',
        '"v3"' + " " * 300 + "x",
        "x" * 5000,
    ],
)
def test_anything_else_fails_the_precondition(header: str) -> None:
    with pytest.raises(Problem) as exc:
        parse_if_match(header)
    assert (exc.value.status, exc.value.slug) == (412, "precondition-failed")
