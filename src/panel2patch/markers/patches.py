"""Patches: the region each marker designates, in figure pixels, clipped to its panel.

``marker_patches(markers, panel_bbox, params=None, caption_boxes=())`` -> patches::

    {"bbox": [x1, y1, x2, y2], "marker_indices": [0, 2], "source": "marker" | "caption",
     "score": 0.9}

``markers`` are in figure pixels (``bbox``, ``type``, ``tip``, ``direction``, ``score``); indices in
``marker_indices`` refer to that list.

Proposal per marker (Panel2Patch's "markers with no caption box are expanded to a local crop"):

* arrow / arrowhead / "other" with a tip: a square of side ``side = clip(arrow_scale x marker
  length, min_frac x S, max_frac x S)`` (S = the panel's short side) whose centre lies
  ``ahead x side`` beyond the tip along the pointing direction - so the tip sits just inside the
  patch's near edge when ``ahead`` = 0.5 - ``tip_margin``.
* asterisk, or any marker without a direction: a square of side ``clip(asterisk_scale x marker
  size, ...)`` centred on the marker (an asterisk sits on or beside what it marks).

Caption-derived boxes (Panel2Patch's second proposal path, e.g. from a grounding model; optional)
are merged as in the paper: a caption box is kept when its centre lies within normalised distance
``tau`` of a marker's anchor (tip, else centre), the distance being divided by the panel
diagonal; a kept caption box takes the marker's index, and that marker then needs no local crop
of its own (its crop is still proposed but the caption box, scored higher, wins the NMS).
Finally IoU-NMS (``nms_iou``) over the union; a suppressed patch hands its marker indices to the
patch that suppressed it.
"""

from __future__ import annotations

import math

from ..evaluate.boxes import iou

__all__ = ["PATCH_DEFAULTS", "marker_patches", "clip_box"]

PATCH_DEFAULTS = {
    "arrow_scale": 1.5,    # patch side = this x the arrow's long side ...
    "asterisk_scale": 3.0,  # ... or this x the asterisk's long side
    "min_frac": 0.15,      # ... but at least this x the panel's short side
    "max_frac": 0.5,       # ... and at most this x the panel's short side
    "ahead": 0.5,          # centre = tip + direction x (ahead - tip_margin) x side
    "tip_margin": 0.1,     # how far the tip reaches into the patch, as a fraction of side
    "tau": 0.1,            # Panel2Patch: caption box kept when centre within tau x panel diagonal of a marker
    "nms_iou": 0.5,
    "caption_bonus": 0.1,  # caption-described boxes outrank the generic local crop at NMS
}


def clip_box(b, panel) -> list:
    return [int(max(panel[0], min(panel[2], round(b[0])))), int(max(panel[1], min(panel[3], round(b[1])))),
            int(max(panel[0], min(panel[2], round(b[2])))), int(max(panel[1], min(panel[3], round(b[3]))))]


def _anchor(m) -> tuple[float, float]:
    if m.get("tip") is not None:
        return float(m["tip"][0]), float(m["tip"][1])
    b = m["bbox"]
    return (b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0


def _local_crop(m, panel, p) -> list:
    b = m["bbox"]
    short = max(1.0, min(panel[2] - panel[0], panel[3] - panel[1]))
    size = max(b[2] - b[0], b[3] - b[1])
    d = m.get("direction")
    if m.get("tip") is not None and d is not None and m.get("type") != "asterisk":
        side = min(max(p["arrow_scale"] * size, p["min_frac"] * short), p["max_frac"] * short)
        n = math.hypot(d[0], d[1]) or 1.0
        dx, dy = d[0] / n, d[1] / n
        off = (p["ahead"] - p["tip_margin"]) * side
        cx, cy = m["tip"][0] + dx * off, m["tip"][1] + dy * off
    else:
        side = min(max(p["asterisk_scale"] * size, p["min_frac"] * short), p["max_frac"] * short)
        cx, cy = (b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0
    return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]


def marker_patches(markers: list, panel_bbox, params: dict | None = None, caption_boxes=()) -> list:
    """Patches for the markers of one panel (all in figure pixels)."""
    p = {**PATCH_DEFAULTS, **(params or {})}
    panel = [float(v) for v in panel_bbox]
    diag = math.hypot(panel[2] - panel[0], panel[3] - panel[1]) or 1.0
    cands = []
    for i, m in enumerate(markers):
        box = clip_box(_local_crop(m, panel, p), panel)
        if box[2] > box[0] and box[3] > box[1]:
            cands.append({"bbox": box, "marker_indices": [i], "source": "marker",
                          "score": float(m.get("score", 0.5))})
    for cb in caption_boxes or ():
        box = clip_box(cb, panel)
        if box[2] <= box[0] or box[3] <= box[1]:
            continue
        cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
        near = [i for i, m in enumerate(markers)
                if math.hypot(cx - _anchor(m)[0], cy - _anchor(m)[1]) / diag <= p["tau"]]
        if near:
            best = max(float(markers[i].get("score", 0.5)) for i in near)
            cands.append({"bbox": box, "marker_indices": near, "source": "caption",
                          "score": min(1.0, best + p["caption_bonus"])})
    cands.sort(key=lambda c: -c["score"])
    kept: list = []
    for c in cands:
        for k in kept:
            if iou(c["bbox"], k["bbox"]) >= p["nms_iou"]:
                k["marker_indices"] = sorted(set(k["marker_indices"]) | set(c["marker_indices"]))
                break
        else:
            kept.append({**c, "marker_indices": list(c["marker_indices"])})
    for k in kept:
        k["score"] = round(k["score"], 4)
    return kept
