"""Ingest: JATS articles, PMC OA packages and PDFs -> figure, article and skip tables per shard."""

from .core import DEFAULTS, ingest_paths, ingest_units
from .discover import Unit, discover_units, make_shards

__all__ = ["DEFAULTS", "Unit", "discover_units", "ingest_paths", "ingest_units", "make_shards"]
