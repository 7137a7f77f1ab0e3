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

import functools

import cv2
import numpy as np

from .split import line_counts, near_colour

KINDS = ("image", "chart", "diagram", "other")


def panel_features(rgb: np.ndarray, bg: np.ndarray | None = None, ink: np.ndarray | None = None) -> dict[str, float]:
    """Statistics of one panel crop (H x W x 3 uint8); ``ink``: its foreground mask if known
    (else pixels differing from ``bg`` by more than 40)."""
    f = _features(rgb, bg, ink)
    return {k: f[k] for k in FEATURES} if f["n"] else dict(f)


FEATURES = ("n", "white", "sat_mean", "edge_frac", "mid_grad", "hlines", "vlines", "dark")


class _Features(dict):
    """The statistics of :func:`panel_features`, the costly ones computed when first read
    (``classify_kind`` needs the line counts only for crops that are not images and the colour
    saturation only for diagrams); the values are those :func:`panel_features` returns."""

    def __init__(self, base: dict, lazy: dict):
        super().__init__(base)
        self._lazy = lazy

    def __missing__(self, key):
        make = self._lazy.get(key)
        if make is None:
            raise KeyError(key)
        value = self[key] = make()
        return value


def _features(rgb: np.ndarray, bg: np.ndarray | None = None, ink: np.ndarray | None = None) -> _Features:
    h, w = rgb.shape[:2]
    if h < 4 or w < 4:
        return _Features({"n": 0}, {})
    full = rgb
    # Work on at most ~192 px on the long side: statistics, not details.
    s = min(1.0, 192.0 / max(h, w))
    if s < 1.0:
        rgb = area_resize(rgb, (max(4, int(w * s)), max(4, int(h * s))))
    paper = np.asarray(bg if bg is not None else (255, 255, 255), np.int16)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    is_paper = near_colour(rgb, paper, 25) != 0  # every channel within 25 of the paper colour
    white = _share(is_paper)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
    # Gradient magnitude thresholds on the squared magnitude: Sobel values of uint8 are integers
    # (|g| <= 1020), so gx^2 + gy^2 is exact in float32 and ``hypot(gx, gy) > t`` is
    # ``gx^2 + gy^2 > t^2`` (checked on every possible pair), without the slow hypot.
    mag2 = cv2.add(cv2.multiply(gx, gx), cv2.multiply(gy, gy))
    edge_frac = _share(mag2 > 80 ** 2)
    # Smooth, textured regions: moderate gradients (photographic tone changes).
    mid_grad = _share((mag2 > 8 ** 2) & (mag2 <= 80 ** 2))

    def sat_mean() -> float:
        nonpaper = ~is_paper
        if not nonpaper.any():
            return 0.0
        sat = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1].astype(np.float32) / 255.0
        return float(sat[nonpaper].mean())

    # Long straight lines (axes, frames): rows / columns with a long run of ink, on the crop's
    # own resolution so that 1 px axis lines survive.
    @functools.cache
    def ink_mask() -> np.ndarray:
        return ink if ink is not None else np.abs(full.astype(np.int16) - paper).max(axis=2) > 40

    def lines(axis: int) -> float:
        return float(_long_runs(ink_mask(), axis=axis, frac=0.4))

    return _Features({"n": 1, "white": white, "edge_frac": edge_frac, "mid_grad": mid_grad, "dark": _share(gray < 60)},
                     {"sat_mean": sat_mean, "hlines": lambda: lines(1), "vlines": lambda: lines(0)})


def area_resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-averaging downscale of ``img`` to ``size`` (w, h), close to ``cv2.INTER_AREA`` and
    several times faster (OpenCV's area resize is quick only for whole-number factors): the
    crop is first reduced by the largest whole factor that keeps it at least ``size`` (trimming
    the at most factor - 1 rows and columns that do not fill a cell, split between opposite
    edges); the remaining factor (under 2) is a nearest-neighbour enlargement to twice ``size``
    (every pixel kept, none blended, so no new gradients) and an exact 2 x 2 average."""
    h, w = img.shape[:2]
    k = min(w // size[0], h // size[1])
    if k >= 2:
        y, x = h % k // 2, w % k // 2
        img = cv2.resize(img[y:y + h - h % k, x:x + w - w % k], (w // k, h // k), interpolation=cv2.INTER_AREA)
    if img.shape[1] == size[0] and img.shape[0] == size[1]:
        return img
    up = cv2.resize(img, (2 * size[0], 2 * size[1]), interpolation=cv2.INTER_NEAREST)
    return cv2.resize(up, size, interpolation=cv2.INTER_AREA)


def _share(mask: np.ndarray) -> float:
    """Share of True in a bool array (``mask.mean()``, the same value, ten times faster)."""
    return np.count_nonzero(mask) / mask.size


def _long_runs(ink: np.ndarray, axis: int, frac: float) -> int:
    """Number of rows (axis=1) / columns (axis=0) holding a contiguous ink run >= frac of the side."""
    n = ink.shape[axis]
    need = int(frac * n)
    if need < 3:
        return 0
    # Only lines holding at least `need` ink pixels can hold such a run: erode just those.
    lines = np.flatnonzero(line_counts(ink, 1 - axis) >= need)
    if len(lines) == 0:
        return 0
    sub = ink[lines] if axis == 1 else ink[:, lines]
    kernel = np.ones((1, need), np.uint8) if axis == 1 else np.ones((need, 1), np.uint8)
    eroded = cv2.erode(np.ascontiguousarray(sub).view(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return int(eroded.any(axis=axis).sum())


def classify_kind(f: dict[str, float]) -> tuple[str, float]:
    """(kind, score in [0, 1]) from :func:`panel_features`.

    1. ``image`` when the crop has photographic texture (a large share of moderate, smooth
       gradients, and not mostly paper), a large dark area (fluorescence, radiology, EM backgrounds) or hardly any
       paper showing;
    2. ``other`` when it is nearly blank, unless it has a long horizontal and a long vertical
       line (a sparse chart: axes, a thin curve and a few labels leave over 97 % paper);
    3. ``chart`` when it has at least one long horizontal and one long vertical line (axes,
       plot frames) or very many of them (grids, heat-map tables);
    4. ``diagram`` otherwise.
    The score grows with the margin of the deciding statistic (heuristic, not calibrated)."""
    if not f.get("n"):
        return "other", 0.3
    if (f["mid_grad"] >= 0.29 and f["white"] < 0.65) or f["dark"] >= 0.25 or f["white"] < 0.3:
        margin = max(f["mid_grad"] - 0.29, f["dark"] - 0.25, 0.3 - f["white"])
        return "image", float(min(0.99, 0.6 + 2 * margin))
    if (f["white"] > 0.97 or f["edge_frac"] < 0.01) and not (f["hlines"] >= 1 and f["vlines"] >= 1):
        return "other", 0.5
    h, v = f["hlines"], f["vlines"]
    if (h >= 1 and v >= 1) or h + v >= 40:
        return "chart", float(min(0.95, 0.55 + 0.05 * min(h, v)))
    return "diagram", float(min(0.9, 0.5 + 0.1 * (1 if h + v == 0 else 0) + 0.2 * f["sat_mean"]))


def panel_kind(rgb: np.ndarray, bg: np.ndarray | None = None, ink: np.ndarray | None = None) -> tuple[str, float]:
    return classify_kind(_features(rgb, bg, ink))
