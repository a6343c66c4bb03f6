"""The summary cache keeps only validators that can be trusted (RFC 7232 §2.2.2)."""

from __future__ import annotations

import email.utils

from pyostree.summarycache import strong_validators


def test_last_modified_within_two_seconds_is_dropped() -> None:
    now = 1_800_000_000.5
    fresh = email.utils.formatdate(now - 0.5, usegmt=True)
    old = email.utils.formatdate(now - 60, usegmt=True)
    # A file rewritten in the same second would still answer 304: do not keep that date.
    assert strong_validators(('"etag"', fresh), now) == ('"etag"', None)
    assert strong_validators((None, old), now) == (None, old)
    assert strong_validators((None, "not a date"), now) == (None, None)
    assert strong_validators((None, None), now) == (None, None)
