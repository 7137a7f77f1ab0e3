"""Normalise a licence URL or statement to a short code used by the corpus filters."""

from __future__ import annotations

import re

# Order matters: the most specific pattern first.
_CODES = [
    ("cc-by-nc-nd", r"by-nc-nd|noncommercial.{0,40}no\s*deriv"),
    ("cc-by-nc-sa", r"by-nc-sa|noncommercial.{0,40}share\s*alike"),
    ("cc-by-nc", r"by-nc|non-?commercial"),
    ("cc-by-nd", r"by-nd|no\s*deriv"),
    ("cc-by-sa", r"by-sa|share\s*alike"),
    ("cc0", r"publicdomain/zero|\bcc0\b|cc\s*zero"),
    ("public-domain", r"publicdomain/mark|public domain"),
    ("cc-by", r"licenses/by/|creative commons attribution|\bcc[- ]by\b"),
]


def licence_code(licence: str | None) -> str | None:
    """``"http://creativecommons.org/licenses/by/4.0/"`` -> ``"cc-by"``; unknown text -> ``"other"``."""
    if not licence:
        return None
    text = licence.lower()
    for code, pattern in _CODES:
        if re.search(pattern, text):
            return code
    return "other"
