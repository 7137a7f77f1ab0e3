"""Visual markers (arrows, arrowheads, asterisks/stars, other pointer glyphs) on image panels.

``detect_markers(panel_rgb, params=None, exclude=())`` -> list of markers in panel pixels::

    {"type": "arrow" | "arrowhead" | "asterisk" | "other", "bbox": [x1, y1, x2, y2],
     "colour": "red" | ... | None, "tip": [x, y] | None, "direction": [dx, dy] | None,
     "score": 0.0-1.0, "source": "shapes"}

Boxes are x2/y2 exclusive. ``tip`` is the point an arrow/arrowhead points at, ``direction`` the
unit vector it points along (image axes: x right, y down).

How (the ``"shapes"`` proposal source, no learning):

1. Candidate masks. *Colour*: pixels with high chroma (max-min of R, G, B), by hysteresis
   (seeds >= ``chroma_hi``, grown within >= ``chroma_lo``); on a near-grey-scale panel every
   colourful pixel is a candidate, on a colourful panel only pixels of a hue that is rare in the
   panel (< ``rare_hue_frac`` of its pixels). *Extreme intensity* (grey-scale panels only): near
   white (>= ``white_level``, low chroma) and near black (<= ``black_level``) pixels that are
   also ``local_contrast`` brighter/darker than the local mean (cuts a glyph loose from large
   white/black areas it touches); the component must stand out sharply from its surroundings
   (ring contrast >= ``ring_contrast``) and be flat inside (``glyph_std``), which separates drawn
   glyphs from bone or air that fade gradually, and its shape must score >=
   ``min_score_extreme`` (anatomy can look like a blunt triangle; set on the synthetic "tune"
   split). The white (black) cue is skipped where more than ``white_max_frac``
   (``black_max_frac``) of the panel is white (black).
2. Connected components of plausible size (long side between ``min_size`` px and
   ``max_frac`` of the panel's short side; at least ``min_frac`` of it).
3. Shape analysis on the component's contour:
   *arrowhead* - a solid triangle (area / minimum enclosing triangle >= ``tri_fill``); tip = the
   sharpest vertex. *arrow* - principal-axis width profile: a tapering solid head (narrow at the
   tip, widest within the head, barbs on both sides of the shaft) at one end, a thin filled shaft
   of steady width behind it, the whole mirror-symmetric about its axis (rules out "L", "1",
   "7"); tip = the extreme point on the head end. *asterisk* - a star of >= 5 spokes (convexity
   defects deep relative to the radius, spread around the centre). *other* - a chevron / open
   arrowhead (a "V" of two strokes: acute, symmetric, inner corner on its axis), colour mask only.
4. Rejections: boxes overlapping a panel-letter box (``exclude``), scale bars (long thin filled
   bars), components within ~2% of the panel edge (frames, cut background), text and textures
   (more than one other component of the same mask right around it: markers stand alone), then
   IoU-NMS among all candidates.

Known limits: thin line-drawn arrows with open heads (only the coloured chevron is handled),
markers touching a structure of their own colour, tiny markers (< ~10 px), small white/black
arrowheads whose anti-aliased fill falls under ``min_score_extreme``; charts are not searched
(no ``markers_non_image``).

``method`` picks the proposal sources (:data:`SOURCES`, functions ``(rgb, params) -> list of
marker dicts`` in panel pixels): ``verified`` (the default) = the marker verifier of
:mod:`.verify`: the same colour / white / black components, judged by a small CNN shipped in the
package (``verifier``: another weights file; ``verify_score``: the probability kept) instead of
the shape rules below, which were fitted to a few figures and miss most markers on unseen ones;
``heuristic`` = ``"shapes"`` above; ``learned`` =
the torchvision detector of :mod:`.learned` (weights file ``weights``, boxes of score >=
``learned_score``; colour, tip and direction from the glyph inside the box by the same cues);
``both`` = the union: a learned box that overlaps a shape marker (IoU >= ``nms_iou``) confirms it
(its score becomes the higher of the two, ``source`` ``"shapes+learned"``), the others join as
they are. ``learned``/``both`` without ``weights`` fall back to ``heuristic`` with a warning, so
the default needs no trained model. Then the exclusions and NMS below apply to all.
"""

from __future__ import annotations

import logging
import math

import cv2
import numpy as np

from ..evaluate.boxes import iou

__all__ = ["DEFAULTS", "METHODS", "SOURCES", "detect_markers", "colour_name", "iou", "nms"]

log = logging.getLogger(__name__)

DEFAULTS = {
    "max_side": 900,          # analyse a copy of the panel at most this long (speed)
    "chroma_hi": 60,          # colour seed: max(RGB) - min(RGB)
    "chroma_lo": 35,          # colour grow threshold
    "grey_panel_frac": 0.06,  # panel is "grey-scale" when fewer pixels than this have chroma >= chroma_lo
    "rare_hue_frac": 0.02,    # on a colourful panel, hue bins rarer than this are marker candidates
    "white_level": 235,
    "black_level": 30,
    "white_max_frac": 0.15,   # skip the white cue where more pixels are white (paper, legends)
    "black_max_frac": 0.6,    # skip the black cue where more pixels are black
    "glyph_std": 14,          # grey-level spread inside a white/black glyph
    "ring_contrast": 60,
    "local_contrast": 40,     # white/black glyph pixel vs the local mean grey     # |mean(component) - mean(ring around it)| for white/black glyphs
    "min_size": 9,            # px, long side of a marker (working scale)
    "min_frac": 0.025,        # long side >= this x panel short side ...
    "max_frac": 0.4,          # ... and <= this x panel short side
    "tri_fill": 0.72,         # arrowhead: area / minimal enclosing triangle
    "min_score_extreme": 0.785,  # white/black glyphs need a clean shape (set on the synthetic "tune" split)
    "nms_iou": 0.3,
    "method": "verified",     # verified | heuristic | learned | both (see METHODS)
    "weights": None,          # learned marker detector (.pt from train_marker_detector); None: heuristic only
    "learned_score": 0.5,     # keep learned boxes with at least this score
    "verifier": None,         # marker verifier weights (.pt); None: the weights shipped in the package
    "verify_score": 0.75,     # keep candidates the verifier calls a marker with at least this probability (chosen on the tune split)
    "verify_min_size": 12,    # px (working scale), long side of a verifier candidate
    "verify_open": 5,         # px; white/black masks also opened by a disc this wide (0: off), so a marker joined
                              # to text or an outline by a thin stroke is a candidate of its own (chosen on the tune split)
    "verify_hyst": 30,        # grey levels; the verifier's white mask grown by hysteresis down to white_level minus
                              # this (0: off), so a thin anti-aliased white stroke is one candidate (chosen on the tune split)
}
METHODS = {"heuristic": ("shapes",), "learned": ("learned",), "both": ("shapes", "learned"),
           "verified": ("verified",)}


# --------------------------------------------------------------------------- small helpers

def nms(items: list, iou_thr: float, key="score") -> list:
    """Greedy IoU-NMS on dicts with ``bbox`` and ``score``; returns kept items, best first."""
    order = sorted(items, key=lambda m: -m[key])
    kept: list = []
    for m in order:
        if all(iou(m["bbox"], k["bbox"]) < iou_thr for k in kept):
            kept.append(m)
    return kept


def colour_name(rgb) -> str | None:
    """Mean RGB of a glyph -> small named palette (by hue / lightness)."""
    r, g, b = (float(v) for v in rgb)
    mx, mn = max(r, g, b), min(r, g, b)
    if mx - mn < 40:
        if mx >= 170:
            return "white"
        if mx <= 80:
            return "black"
        return "grey"
    h, s, v = cv2.cvtColor(np.uint8([[[r, g, b]]]), cv2.COLOR_RGB2HSV)[0, 0]
    hue = float(h) * 2.0
    if hue < 15 or hue >= 340:
        return "pink" if (v > 200 and s < 110) else "red"
    if hue < 40:
        return "orange"
    if hue < 70:
        return "yellow"
    if hue < 165:
        return "green"
    if hue < 195:
        return "cyan"
    if hue < 255:
        return "blue"
    if hue < 290:
        return "purple"
    return "magenta"


def _hue_bins(rgb: np.ndarray, nbins: int = 12) -> np.ndarray:
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    return (hsv[..., 0].astype(np.int32) * nbins // 180).clip(0, nbins - 1)


# --------------------------------------------------------------------------- candidate masks

def chroma_of(rgb: np.ndarray) -> np.ndarray:
    """max(R, G, B) - min(R, G, B) per pixel (uint8; OpenCV: numpy's reduction over the short
    colour axis is several times slower, same values)."""
    r, g, b = cv2.split(rgb)
    return cv2.subtract(cv2.max(cv2.max(r, g), b), cv2.min(cv2.min(r, g), b))


def _colour_mask(rgb: np.ndarray, p: dict, chroma: np.ndarray) -> tuple[np.ndarray, bool]:
    lo = chroma >= p["chroma_lo"]
    grey = np.count_nonzero(lo) / lo.size < p["grey_panel_frac"]
    if not grey:
        bins = _hue_bins(rgb)
        counts = np.bincount(bins[lo], minlength=12) / lo.size
        rare = counts < p["rare_hue_frac"]
        lo &= rare[bins]
    hi = lo & (chroma >= p["chroma_hi"])
    return _hysteresis(hi.astype(np.uint8), lo.astype(np.uint8)), grey


def _extreme_masks(rgb: np.ndarray, p: dict, chroma: np.ndarray, hyst: int = 0) -> list[tuple[str, np.ndarray]]:
    """Near-white and near-black glyph masks. ``hyst`` > 0: the white mask is grown by hysteresis,
    its level lowered by that many grey levels where the lower-level component holds a pixel at
    the full level, so a thin anti-aliased white stroke, white only along its core, is one
    component instead of fragments. (Not for black: on radiographs a lowered black level joins
    black glyphs to dark anatomy.)"""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    # extreme AND much brighter/darker than the local mean (a box of ~12% of the panel): a glyph
    # is separated from large white/black areas (paper, air outside the body) it may touch
    k = max(15, int(0.12 * min(gray.shape)) | 1)
    local = cv2.blur(gray.astype(np.float32), (k, k))
    g = gray.astype(np.float32)
    bright = (chroma < 40) & (g - local >= p["local_contrast"])
    white = ((gray >= p["white_level"]) & bright).astype(np.uint8)
    if hyst > 0:
        white = _hysteresis(white, ((gray >= p["white_level"] - hyst) & bright).astype(np.uint8))
    black = ((gray <= p["black_level"]) & (local - g >= p["local_contrast"])).astype(np.uint8)
    return [("white", white), ("black", black)]


def _hysteresis(core: np.ndarray, wide: np.ndarray) -> np.ndarray:
    """The components of ``wide`` (uint8 0/1) that hold a pixel of ``core``."""
    if not core.any():
        return core
    n, lab = cv2.connectedComponents(wide, connectivity=8)
    keep = np.zeros(n, bool)
    keep[np.unique(lab[core > 0])] = True
    keep[0] = False
    return keep[lab].astype(np.uint8)


# --------------------------------------------------------------------------- shape analysis

def _principal(pts: np.ndarray):
    c = pts.mean(axis=0)
    d = pts - c
    cov = d.T @ d / max(1, len(d))
    w, v = np.linalg.eigh(cov)
    axis = v[:, np.argmax(w)]
    return c, axis, np.array([-axis[1], axis[0]])


def _arrowhead(cnt, area) -> tuple[float, np.ndarray, np.ndarray, float] | None:
    try:
        tri_area, tri = cv2.minEnclosingTriangle(cnt.astype(np.float32))
    except cv2.error:
        return None
    if tri_area <= 0:
        return None
    fill = area / tri_area
    tri = tri.reshape(3, 2)
    # sharpest vertex = tip
    angles = []
    for i in range(3):
        a, b, c = tri[i], tri[(i + 1) % 3], tri[(i + 2) % 3]
        u, v = b - a, c - a
        cosang = float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v) + 1e-9))
        angles.append(math.degrees(math.acos(max(-1.0, min(1.0, cosang)))))
    k = int(np.argmin(angles))
    tip = tri[k]
    base_mid = (tri[(k + 1) % 3] + tri[(k + 2) % 3]) / 2
    d = tip - base_mid
    d = d / (np.linalg.norm(d) + 1e-9)
    # move the tip onto the contour (the enclosing triangle may overshoot)
    pts = cnt.reshape(-1, 2).astype(np.float64)
    proj = pts @ d
    tip_c = pts[proj >= proj.max() - 1.0].mean(axis=0)
    # a near-equilateral triangle gives an ambiguous direction: lower confidence
    sharp = 1.0 if (sorted(angles)[1] - angles[k]) > 8 else 0.85
    return fill * sharp, tip_c, d, angles[k]


def _mirror_overlap(pts: np.ndarray, c: np.ndarray, ax: np.ndarray) -> float:
    """Share of the points whose mirror image about the line (c, ax) falls on the shape (1 px slack)."""
    ip = np.round(pts).astype(int)
    x0, y0 = ip.min(axis=0) - 3
    w, h = ip.max(axis=0) - (x0, y0) + 4
    m = np.zeros((h, w), np.uint8)
    m[ip[:, 1] - y0, ip[:, 0] - x0] = 1
    m = cv2.dilate(m, np.ones((3, 3), np.uint8))
    v = pts - c
    r = 2 * np.outer(v @ ax, ax) - v + c
    rx = np.round(r[:, 0]).astype(int) - x0
    ry = np.round(r[:, 1]).astype(int) - y0
    ok = (rx >= 0) & (rx < w) & (ry >= 0) & (ry < h)
    hit = np.zeros(len(pts), bool)
    hit[ok] = m[ry[ok], rx[ok]] > 0
    return float(hit.mean())


def _arrow(pts: np.ndarray) -> tuple[float, np.ndarray, np.ndarray] | None:
    """Width profile along the principal axis: tapering head at one end, thin steady shaft."""
    if len(pts) < 20:
        return None
    if max(np.ptp(pts[:, 0]), np.ptp(pts[:, 1])) < 12:
        return None  # too few pixels to tell a head from a shaft
    c, ax, nrm = _principal(pts.astype(np.float64))
    t = (pts - c) @ ax
    s = (pts - c) @ nrm
    L = t.max() - t.min() + 1
    nb = int(max(10, min(40, L / 2)))
    bins = ((t - t.min()) / L * nb).astype(int).clip(0, nb - 1)
    smin = np.full(nb, np.inf)
    smax = np.full(nb, -np.inf)
    np.minimum.at(smin, bins, s)
    np.maximum.at(smax, bins, s)
    cnt = np.bincount(bins, minlength=nb)
    width = np.where(cnt > 0, smax - smin + 1, 0.0)
    thick = cnt * nb / L  # pixels per unit length (filled thickness)
    if (cnt == 0).sum() > nb * 0.1:
        return None
    best = None
    for flip in (False, True):
        w = width[::-1] if flip else width
        th = thick[::-1] if flip else thick
        head_n = max(3, int(round(nb * 0.7)))
        head = w[:head_n]
        k = int(np.argmax(head))
        wh = head[k]
        shaft = w[k + 2:] if k + 2 < nb else np.array([])
        if len(shaft) < nb * 0.3:
            continue
        shaft_core = shaft[: max(1, len(shaft) - 1)]
        ws = float(np.median(shaft_core))
        if ws <= 0 or wh < 1.6 * ws or wh < 4:
            continue
        if L < 2.2 * wh * 0.8 and L < 3 * ws:
            continue
        tipw = float(w[: max(1, nb // 10)].mean())
        if tipw > 0.72 * wh:
            continue
        # head widens monotonically (roughly) from tip to widest point
        if k >= 2:
            mono = np.mean(np.diff(head[: k + 1]) >= -1.0)
            if mono < 0.7:
                continue
        else:
            continue
        # shaft: steady width, and filled (not two separate strokes)
        var = float(np.std(shaft_core) / (ws + 1e-9))
        if var > 0.6:
            continue
        fill_shaft = float(np.median((th[k + 2:] / np.maximum(1, w[k + 2:]))[: max(1, len(shaft) - 1)]))
        if fill_shaft < 0.6:
            continue
        # a solid head: across the head the strokes fill their extent (an "L" or "V" does not)
        fill_head = float(np.median(th[: k + 1] / np.maximum(1, w[: k + 1])))
        if fill_head < 0.6:
            continue
        # barbs on both sides of the shaft (a "1" or "7" has its flag on one side only)
        lo_ = smin[::-1] if flip else smin
        hi_ = smax[::-1] if flip else smax
        sh = slice(k + 2, nb - 1 if nb - 1 > k + 2 else nb)
        left = float(np.median(lo_[sh]) - lo_[k])
        right = float(hi_[k] - np.median(hi_[sh]))
        if min(left, right) < 0.25 * ws or min(left, right) < 0.3 * max(left, right):
            continue
        sym = _mirror_overlap(pts, c, ax)
        if sym < 0.75:
            continue  # arrows are mirror-symmetric about their shaft ("L", "4", "7" are not)
        score = min(1.0, 0.45 + 0.1 * min(wh / ws, 3.0) + 0.1 * (1 - var) + 0.15 * sym)
        sgn = -1.0 if flip else 1.0
        d = -ax * sgn  # points from shaft to head (head is at low t when not flipped)
        proj = (pts - c) @ d
        tip = pts[proj >= proj.max() - 1.0].mean(axis=0)
        if best is None or score > best[0]:
            best = (score, tip, d)
    return best


def _asterisk(cnt, area) -> float | None:
    hull = cv2.convexHull(cnt)
    hull_area = cv2.contourArea(hull)
    if hull_area <= 0:
        return None
    solidity = area / hull_area
    if not (0.25 <= solidity <= 0.85):
        return None
    (cx, cy), rad = cv2.minEnclosingCircle(cnt)
    if rad < 3 or hull_area / (math.pi * rad * rad) < 0.5:
        return None
    try:
        hidx = cv2.convexHull(cnt, returnPoints=False)
        defects = cv2.convexityDefects(cnt, hidx)
    except cv2.error:
        return None
    if defects is None:
        return None
    deep = []
    pts = cnt.reshape(-1, 2)
    for sidx, eidx, fidx, depth in defects.reshape(-1, 4):
        if depth / 256.0 >= 0.2 * rad:
            fx, fy = pts[fidx]
            deep.append(math.atan2(fy - cy, fx - cx))
    if not (5 <= len(deep) <= 12):
        return None
    ang = np.sort(np.array(deep))
    gaps = np.diff(np.concatenate([ang, ang[:1] + 2 * math.pi]))
    if gaps.max() > math.radians(115):
        return None
    return min(1.0, 0.6 + 0.05 * len(deep) + 0.2 * (1 - gaps.std() / (gaps.mean() + 1e-9)))


def _chevron(cnt, area, pts) -> tuple[float, np.ndarray, np.ndarray] | None:
    """An open arrowhead: a 'V' of two strokes (solidity low, triangle-ish hull)."""
    hull = cv2.convexHull(cnt)
    hull_area = cv2.contourArea(hull)
    if hull_area <= 0 or not (0.2 <= area / hull_area <= 0.6):
        return None
    r = _arrowhead(hull, hull_area)
    if r is None or r[0] < 0.8 or r[3] > 75:
        return None  # an open arrowhead is acute; a right angle is an "L" or a corner
    # one deep convexity defect (the inside of the V)
    try:
        defects = cv2.convexityDefects(cnt, cv2.convexHull(cnt, returnPoints=False))
    except cv2.error:
        return None
    if defects is None:
        return None
    (cx, cy), rad = cv2.minEnclosingCircle(cnt)
    deep = [d for d in defects.reshape(-1, 4) if d[3] / 256.0 >= 0.3 * rad]
    if len(deep) != 1:
        return None
    # the inside corner of a "V" lies on its axis, behind the tip (not so for an "L" or "7")
    f = cnt.reshape(-1, 2)[deep[0][2]].astype(float)
    v = f - np.asarray(r[1], float)
    d = np.asarray(r[2], float)
    if v @ d > 0 or abs(v[0] * d[1] - v[1] * d[0]) > 0.2 * rad:
        return None
    if _mirror_overlap(pts, pts.mean(axis=0), np.asarray(r[2], float)) < 0.75:
        return None  # a chevron is symmetric about its pointing direction ("L", "V"-ish letters need not be)
    return 0.6, r[1], r[2]


def _classify(comp: np.ndarray, allow_other: bool, tri_fill: float = DEFAULTS["tri_fill"]):
    """comp: binary uint8 crop of one component -> (type, score, tip, direction) or None."""
    cnts, _ = cv2.findContours(comp, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not cnts:
        return None
    cnt = max(cnts, key=cv2.contourArea)
    c_area = cv2.contourArea(cnt)
    if c_area <= 4:
        return None
    ys, xs = np.nonzero(comp)
    pts = np.stack([xs, ys], axis=1).astype(np.float64)
    hull_area = cv2.contourArea(cv2.convexHull(cnt))
    solidity = c_area / hull_area if hull_area > 0 else 0.0
    if solidity >= 0.85:
        r = _arrowhead(cnt, c_area)
        if r is not None and r[0] >= tri_fill:
            return "arrowhead", float(min(1.0, r[0])), r[1], r[2]
    if 0.3 <= solidity <= 0.92:
        r = _arrow(pts)
        if r is not None:
            return "arrow", float(r[0]), r[1], r[2]
    s = _asterisk(cnt, c_area)
    if s is not None:
        return "asterisk", float(s), None, None
    if allow_other:
        r = _chevron(cnt, c_area, pts)
        if r is not None:
            return "other", float(r[0]), r[1], r[2]
    return None


# --------------------------------------------------------------------------- the shape source

def _cluttered(i: int, stats: np.ndarray, centres: np.ndarray, n_max: int = 1) -> bool:
    """Text and textures: more than ``n_max`` other components of the same mask (>= 3 px) with
    their centre within the component's box grown by 0.75 x its long side. Markers stand alone."""
    x, y, w, h = stats[i, :4]
    g = 0.75 * max(w, h)
    cx, cy = centres[:, 0], centres[:, 1]
    near = (cx >= x - g) & (cx <= x + w + g) & (cy >= y - g) & (cy <= y + h + g) & (stats[:, 4] >= 3)
    near[0] = False
    near[i] = False
    # parts lying inside the box itself (anti-aliasing debris) are not neighbours
    inside = (cx >= x) & (cx <= x + w) & (cy >= y) & (cy <= y + h) & (stats[:, 4] < 0.1 * stats[i, 4])
    return int((near & ~inside).sum()) > n_max


def _note(dbg, st, mask: str, why: str) -> None:
    """Record why a component was rejected (``params["_debug"]`` = a list; for development)."""
    if dbg is not None:
        x, y, w, h = (int(v) for v in st[:4])
        dbg.append(([x, y, x + w, y + h], mask, why))


def shape_proposals(rgb: np.ndarray, params: dict) -> list:
    """The ``"shapes"`` source: colour / extreme-intensity components judged by their shape."""
    p = params
    H, W = rgb.shape[:2]
    short = min(H, W)
    lo_size = max(p["min_size"], p["min_frac"] * short)
    hi_size = p["max_frac"] * short
    chroma = chroma_of(rgb)  # one pass for both masks
    cmask, grey = _colour_mask(rgb, p, chroma)
    masks = [("colour", cmask)]
    if grey:
        masks += _extreme_masks(rgb, p, chroma)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) if grey else None
    out = []
    dbg = p.get("_debug")
    for name, mask in masks:
        if not mask.any():
            continue
        if name != "colour" and mask.mean() > p[f"{name}_max_frac"]:
            continue  # paper-like background or a mostly black/white image: no glyph cue
        n, lab, stats, centres = cv2.connectedComponentsWithStats(mask, connectivity=8)
        ids = [i for i in range(1, n) if stats[i, 4] >= 6]
        if name != "colour" and len(ids) > 3000:
            ids = [i for i in ids if stats[i, 4] >= 15]
        for i in ids:
            x, y, w, h, a = stats[i]
            long_side = max(w, h)
            if long_side < lo_size or long_side > hi_size:
                _note(dbg, stats[i], name, "size")
                continue
            e = max(2, int(0.02 * short))  # panel frames and gutter lines are a few px thick
            if x < e or y < e or x + w > W - e or y + h > H - e:
                _note(dbg, stats[i], name, "edge")
                continue  # touches the panel edge: background or a cut structure
            if _cluttered(i, stats, centres):
                _note(dbg, stats[i], name, "clutter")
                continue
            if a < 0.12 * w * h and long_side < 3 * lo_size:
                _note(dbg, stats[i], name, "sparse")
                continue
            # scale bar: a long thin filled bar
            if max(w, h) >= 4 * min(w, h) and a >= 0.75 * w * h:
                _note(dbg, stats[i], name, "scalebar")
                continue
            comp = (lab[y:y + h, x:x + w] == i).astype(np.uint8)
            if name != "colour":
                # a drawn glyph stands out sharply from its surroundings
                pad = max(2, int(round(0.15 * long_side)))
                y0, y1, x0, x1 = max(0, y - pad), min(H, y + h + pad), max(0, x - pad), min(W, x + w + pad)
                full = np.zeros((y1 - y0, x1 - x0), np.uint8)
                full[y - y0:y - y0 + h, x - x0:x - x0 + w] = comp
                ring = cv2.dilate(full, np.ones((5, 5), np.uint8), iterations=max(1, pad // 2)) & (1 - full)
                ring &= (lab[y0:y1, x0:x1] == 0)
                if ring.sum() < 5:
                    _note(dbg, stats[i], name, "ring")
                    continue
                g = gray[y0:y1, x0:x1]
                contrast = float(g[full > 0].mean() - g[ring > 0].mean())
                if (name == "white" and contrast < p["ring_contrast"]) or \
                        (name == "black" and contrast > -p["ring_contrast"]):
                    _note(dbg, stats[i], name, "contrast")
                    continue
                if float(g[full > 0].std()) > p["glyph_std"]:
                    _note(dbg, stats[i], name, "flat")
                    continue  # drawn glyphs are flat
            r = _classify(comp, allow_other=(name == "colour"), tri_fill=p["tri_fill"])
            if r is None:
                _note(dbg, stats[i], name, "shape")
                continue
            typ, score, tip, d = r
            pix = rgb[y:y + h, x:x + w][comp > 0]
            col = colour_name(pix.mean(axis=0)) if name == "colour" else name
            if name != "colour":
                score *= 0.9
                if score < p["min_score_extreme"]:
                    _note(dbg, stats[i], name, "score")
                    continue  # white/black shapes: real anatomy can look like a blunt triangle
            out.append({"type": typ, "bbox": [int(x), int(y), int(x + w), int(y + h)], "colour": col,
                        "tip": [float(tip[0] + x), float(tip[1] + y)] if tip is not None else None,
                        "direction": [float(d[0]), float(d[1])] if d is not None else None,
                        "score": round(float(score), 4), "source": "shapes"})
    return out


def learned_proposals(rgb: np.ndarray, params: dict) -> list:
    """The ``"learned"`` source (torch is imported only when it is used)."""
    from .learned import proposals

    return proposals(rgb, params)


def verifier_proposals(rgb: np.ndarray, params: dict) -> list:
    """The ``"verified"`` source (torch is imported only when it is used)."""
    from .verify import verified_proposals

    return verified_proposals(rgb, params)


SOURCES = {"shapes": shape_proposals, "learned": learned_proposals, "verified": verifier_proposals}


def _sources(p: dict) -> tuple[str, ...]:
    if p["method"] not in METHODS:
        raise ValueError(f"unknown markers method {p['method']!r} (one of {sorted(METHODS)})")
    if p["method"] in ("learned", "both") and not p.get("weights"):
        if not getattr(_sources, "warned", False):
            log.warning("markers method %r needs detect.weights; using the heuristic detector", p["method"])
            _sources.warned = True
        return METHODS["heuristic"]
    return METHODS[p["method"]]


def combine(shapes: list, learned: list, iou_thr: float) -> list:
    """Union of shape and learned markers: a learned box over a shape marker confirms it (higher
    score, ``source`` "shapes+learned"; the shape marker's tip and type are kept); the other
    learned boxes join."""
    out = [dict(m) for m in shapes]
    for m in learned:
        j = max(range(len(out)), key=lambda j: iou(m["bbox"], out[j]["bbox"]), default=None)
        if j is not None and out[j]["source"] != "learned" and iou(m["bbox"], out[j]["bbox"]) >= iou_thr:
            out[j]["score"] = max(out[j]["score"], m["score"])
            out[j]["source"] = "shapes+learned"
        else:
            out.append(m)
    return out


def _overlaps(box, ex) -> bool:
    ix = min(box[2], ex[2]) - max(box[0], ex[0])
    iy = min(box[3], ex[3]) - max(box[1], ex[1])
    return ix > 0 and iy > 0


def detect_markers(panel_rgb: np.ndarray, params: dict | None = None, exclude=()) -> list:
    """Markers on one image panel (RGB uint8 array). ``exclude``: boxes in panel pixels (panel
    letters) that no marker may overlap. Returns markers in panel pixels, best score first."""
    p = {**DEFAULTS, **(params or {})}
    rgb = np.ascontiguousarray(panel_rgb[..., :3]) if panel_rgb.ndim == 3 else \
        np.ascontiguousarray(np.repeat(panel_rgb[..., None], 3, axis=2))
    H, W = rgb.shape[:2]
    if H < 16 or W < 16:
        return []
    s = min(1.0, p["max_side"] / max(H, W))
    work = cv2.resize(rgb, (max(1, round(W * s)), max(1, round(H * s))), interpolation=cv2.INTER_AREA) \
        if s < 1.0 else rgb
    per_source = {name: SOURCES[name](work, p) for name in _sources(p)}
    found = combine(per_source.get("shapes", []), per_source.get("learned", []), p["nms_iou"]) + \
        per_source.get("verified", [])
    out = []
    for m in found:
        b = m["bbox"]
        m = dict(m)
        if s < 1.0:
            m["bbox"] = [int(math.floor(b[0] / s)), int(math.floor(b[1] / s)),
                         min(W, int(math.ceil(b[2] / s))), min(H, int(math.ceil(b[3] / s)))]
            if m.get("tip") is not None:
                m["tip"] = [m["tip"][0] / s, m["tip"][1] / s]
        if any(_overlaps(m["bbox"], e) for e in exclude if e is not None):
            continue
        out.append(m)
    return nms(out, p["nms_iou"])


def figure_markers(image, params: dict | None = None, patch_params: dict | None = None, layout: dict | None = None,
                   kinds=("image",)) -> dict:
    """One figure (PIL image, path or RGB array) -> markers and patches in figure pixels.

    Panels come from ``layout`` (a :func:`panel2patch.layout.parse.parse_figure` result) or are
    found here; markers are searched on panels whose kind is in ``kinds``, every panel letter box
    excluded. Returns ``{"markers": [... + "panel_index", "direction"], "patches": [...],
    "panels": n}``; ``marker_indices`` of patches index the figure's marker list."""
    from PIL import Image

    from ..ingest.images import to_rgb
    from ..layout.parse import parse_figure
    from .patches import marker_patches

    if isinstance(image, np.ndarray):
        rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
        pil = Image.fromarray(np.ascontiguousarray(rgb[..., :3]))
    else:
        pil = Image.open(image) if not isinstance(image, Image.Image) else image
        pil.load()
        pil = to_rgb(pil)
        rgb = np.asarray(pil)
    H, W = rgb.shape[:2]
    if layout is None:
        layout = parse_figure(pil)
    panels = layout.get("panels") or [{"bbox": [0, 0, W, H], "label_bbox": None, "kind": "image"}]
    letters = [p["label_bbox"] for p in panels if p.get("label_bbox")]
    markers, patches = [], []
    for pi, p in enumerate(panels):
        if p.get("kind") not in kinds:
            continue
        x1, y1, x2, y2 = (int(v) for v in p["bbox"])
        x1, y1, x2, y2 = max(0, x1), max(0, y1), min(W, x2), min(H, y2)
        if x2 - x1 < 16 or y2 - y1 < 16:
            continue
        ex = [[lb[0] - x1, lb[1] - y1, lb[2] - x1, lb[3] - y1] for lb in letters]
        found = detect_markers(rgb[y1:y2, x1:x2], params, exclude=ex)
        local = []
        for m in found:
            b = m["bbox"]
            m = {**m, "bbox": [b[0] + x1, b[1] + y1, b[2] + x1, b[3] + y1], "panel_index": pi}
            if m.get("tip") is not None:
                m["tip"] = [round(m["tip"][0] + x1, 1), round(m["tip"][1] + y1, 1)]
            if m.get("direction") is not None:
                m["direction"] = [round(m["direction"][0], 4), round(m["direction"][1], 4)]
            local.append(m)
        base = len(markers)
        markers.extend(local)
        for pt in marker_patches(local, [x1, y1, x2, y2], patch_params):
            pt["marker_indices"] = [base + i for i in pt["marker_indices"]]
            pt["panel_index"] = pi
            patches.append(pt)
    return {"markers": markers, "patches": patches, "panels": len(panels)}
