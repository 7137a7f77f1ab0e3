"""Alignment stage: caption subcaptions <-> detected panels, marker phrases <-> detected patches."""

from .panels import align_panels, align_patches, normalise_label

__all__ = ["align_panels", "align_patches", "normalise_label"]
