"""Visual markers (arrows, arrowheads, asterisks) on image panels and the patches they designate.

* :mod:`.detect` - ``detect_markers`` (one panel), ``figure_markers`` (one figure, panels found by
  the layout parser); ``method`` heuristic (image-analysis cues, the default) | learned | both.
* :mod:`.learned` - the learned detector (torchvision Faster R-CNN trained on real panels with
  drawn overlays): ``train_marker_detector``, ``load_marker_detector``, the ``"learned"`` source.
* :mod:`.patches` - ``marker_patches``: region ahead of an arrow's tip / around an asterisk, merge
  with caption-derived boxes (Panel2Patch's tau), IoU-NMS.
* :mod:`.synthetic` - drawn markers with known boxes (tests, evaluation, training data).
* :mod:`.cli` - ``panel2patch markers IMAGE... --out FILE.jsonl``.
"""

from .detect import DEFAULTS, SOURCES, detect_markers, figure_markers
from .patches import PATCH_DEFAULTS, marker_patches

__all__ = ["DEFAULTS", "PATCH_DEFAULTS", "SOURCES", "detect_markers", "figure_markers", "marker_patches"]
