"""Panel kind from cheap image statistics: ``image`` | ``chart`` | ``diagram`` | ``other``.

``image``: microscopy, radiology, photographs, histology, gels, 3-D renderings: most pixels are
non-paper, with many grey levels / colours and smooth texture.
``chart``: plots (axes, bars, curves, scatter, heat-map tables): mostly paper, long straight
horizontal and vertical lines, few distinct colours, text along two sides.
``diagram``: schematics, flow charts, illustrations: mostly paper or flat colour fills, few colours,
no axis frame.
``other``: text tables, blank or unreadable crops.

:func:`panel_features` computes the statistics on a crop; :func:`classify_kind` applies a small
hand-written decision list whose thresholds are fractions and ratios (no size in pixels). It was
checked on hand-labelled kinds of the development panels (``tests/data/panel_kinds.json``,
``benchmarks/layout_eval.py``).
"""

from __future__ import annotations

import cv2
import numpy as np

KINDS = ("image", "chart", "diagram", "other")


def panel_features(rgb: np.ndarray, bg: np.ndarray | None = None, ink: np.ndarray | None = None) -> dict[str, float]:
    """Statistics of one panel crop (H x W x 3 uint8); ``ink``: its foreground mask if known
    (else pixels differing from ``bg`` by more than 40)."""
    h, w = rgb.shape[:2]
    if h < 4 or w < 4:
        return {"n": 0}
    full = rgb
    # Work on at most ~192 px on the long side: statistics, not details.
    s = min(1.0, 192.0 / max(h, w))
    if s < 1.0:
        rgb = cv2.resize(rgb, (max(4, int(w * s)), max(4, int(h * s))), interpolation=cv2.INTER_AREA)
    paper = np.asarray(bg if bg is not None else (255, 255, 255), np.int16)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    paper = np.asarray(bg if bg is not None else (255, 255, 255), np.int16)
    diff = np.abs(rgb.astype(np.int16) - paper).max(axis=2)
    is_paper = diff <= 25
    white = float(is_paper.mean())
    sat = hsv[..., 1].astype(np.float32) / 255.0
    nonpaper = ~is_paper
    q = (rgb >> 4).astype(np.int32)
    codes = (q[..., 0] << 8) | (q[..., 1] << 4) | q[..., 2]
    counts = np.bincount(codes[nonpaper].ravel(), minlength=4096) if nonpaper.any() else np.zeros(4096)
    total = max(1, int(nonpaper.sum()))
    top = np.sort(counts)[::-1]
    top8 = float(top[:8].sum() / total)  # share of the 8 most common colours among ink pixels
    n_colours = int((counts >= max(3, 0.002 * total)).sum())
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    mag = np.hypot(gx, gy)
    edges = mag > 80
    edge_frac = float(edges.mean())
    # Smooth, textured regions: moderate gradients (photographic tone changes).
    mid_grad = float(((mag > 8) & (mag <= 80)).mean())
    # Long straight lines (axes, frames): rows / columns with a long run of ink, on the crop's
    # own resolution so that 1 px axis lines survive.
    if ink is None:
        ink = np.abs(full.astype(np.int16) - paper).max(axis=2) > 40
    hlines = _long_runs(ink, axis=1, frac=0.4)
    vlines = _long_runs(ink, axis=0, frac=0.4)
    grey_levels = int(np.count_nonzero(np.bincount(gray[nonpaper].ravel() // 8, minlength=32) > 0.003 * total)) \
        if nonpaper.any() else 0
    return {
        "n": 1,
        "white": white,
        "sat_mean": float(sat[nonpaper].mean()) if nonpaper.any() else 0.0,
        "top8": top8,
        "n_colours": float(n_colours),
        "edge_frac": edge_frac,
        "mid_grad": mid_grad,
        "hlines": float(hlines),
        "vlines": float(vlines),
        "grey_levels": float(grey_levels),
        "dark": float((gray < 60).mean()),
    }


def _long_runs(ink: np.ndarray, axis: int, frac: float) -> int:
    """Number of rows (axis=1) / columns (axis=0) holding a contiguous ink run >= frac of the side."""
    n = ink.shape[axis]
    need = int(frac * n)
    if need < 3:
        return 0
    kernel = np.ones((1, need), np.uint8) if axis == 1 else np.ones((need, 1), np.uint8)
    eroded = cv2.erode(ink.view(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return int(eroded.any(axis=axis).sum())


def classify_kind(f: dict[str, float]) -> tuple[str, float]:
    """(kind, score in [0, 1]) from :func:`panel_features`.

    1. ``image`` when the crop has photographic texture (a large share of moderate, smooth
       gradients, and not mostly paper), a large dark area (fluorescence, radiology, EM backgrounds) or hardly any
       paper showing;
    2. ``other`` when it is nearly blank;
    3. ``chart`` when it has at least one long horizontal and one long vertical line (axes,
       plot frames) or very many of them (grids, heat-map tables);
    4. ``diagram`` otherwise.
    The score grows with the margin of the deciding statistic (heuristic, not calibrated)."""
    if not f.get("n"):
        return "other", 0.3
    if (f["mid_grad"] >= 0.29 and f["white"] < 0.65) or f["dark"] >= 0.25 or f["white"] < 0.3:
        margin = max(f["mid_grad"] - 0.29, f["dark"] - 0.25, 0.3 - f["white"])
        return "image", float(min(0.99, 0.6 + 2 * margin))
    if f["white"] > 0.97 or f["edge_frac"] < 0.01:
        return "other", 0.5
    h, v = f["hlines"], f["vlines"]
    if (h >= 1 and v >= 1) or h + v >= 40:
        return "chart", float(min(0.95, 0.55 + 0.05 * min(h, v)))
    return "diagram", float(min(0.9, 0.5 + 0.1 * (1 if h + v == 0 else 0) + 0.2 * f["sat_mean"]))


def panel_kind(rgb: np.ndarray, bg: np.ndarray | None = None, ink: np.ndarray | None = None) -> tuple[str, float]:
    return classify_kind(panel_features(rgb, bg, ink))
