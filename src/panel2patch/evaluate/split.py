"""The tune / check split of the real evaluation set (``benchmarks/evalset.py``), by article.

Only ``check`` numbers are results; ``tune`` figures may be looked at and fitted to. Training data
drawn from a source that the evaluation set also uses (e.g. VQA-RAD images as backgrounds for
synthetic markers) keeps to the ``tune`` articles, so no check image is ever trained on.
"""

from __future__ import annotations

import hashlib

__all__ = ["split_of"]


def split_of(article: str) -> str:
    """``"check"`` when sha1("p2p-evalset:" + article) mod 10 < 6, else ``"tune"``."""
    h = int(hashlib.sha1(f"p2p-evalset:{article}".encode()).hexdigest(), 16)
    return "check" if h % 10 < 6 else "tune"
