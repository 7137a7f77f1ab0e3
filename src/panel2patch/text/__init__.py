"""Caption understanding: subcaption splitting, marker phrases, inline figure references.

Rule based and deterministic (no ML); see :mod:`.split`, :mod:`.markers`, :mod:`.refs`.
"""

from .markers import MARKER_TYPES, find_marker_phrases
from .refs import cited_panels, panel_letters_from_citation, parse_citations
from .split import segment_caption, split_caption

__all__ = [
    "split_caption",
    "segment_caption",
    "find_marker_phrases",
    "MARKER_TYPES",
    "panel_letters_from_citation",
    "cited_panels",
    "parse_citations",
]
