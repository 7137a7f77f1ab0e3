"""Panel detection by image analysis: foreground, gutters, separator lines, recursive X-Y cuts.

Everything runs on a *working copy* of the figure whose long side is at most ``max_side`` pixels
(boxes are mapped back to the original size at the end); every size threshold is relative to
the working image or to the figure's own text height, never an absolute number of pixels of one
figure.

1. :func:`prepare` decodes to RGB, strips a thin outer frame line (MedICaT-style crops), takes the
   background ("paper") colour from the border ring and marks as foreground every pixel that
   differs from it; specks of a few pixels are dropped.
2. Gaps: rows/columns of a region with no foreground (white gutters, 1 px white lines between dark
   mosaics, uniform black gutters when the paper is black), plus thin *separator lines*: rows or
   columns that are almost all foreground, of one uniform colour, at most a few pixels thick and
   different from the picture on each side along most of their length (an even column inside one
   radiograph is not a separator).
3. :func:`split_labelled` (letters known): recursive X-Y cuts that are accepted only where both
   sides hold a panel letter, so whatever a letter governs (its plot, titles, axis labels,
   subpanels) stays together; letters are erased from the mask first so a letter standing in a
   gutter does not block the cut, and a letter inside a gap, or reaching past its start, goes to
   the side after it (letters precede their panel). Among the gaps that split the letters the
   same way, the one right before the next letter is used; a gap far before that letter (more than
   2.5-3 letter heights) is not a panel boundary. Content above every letter of a region (a
   figure title, shared column headers) is dropped. Where no clean gutter exists, a "soft" one that
   a few strokes cross (at most 6 % of its length) is accepted; leaves still holding several
   letters (interleaved, non-guillotine layouts) are split by assigning each connected component
   to the letter that governs it (:func:`_assign_components`: nearest letter, with a penalty for
   content well above or left of it).
4. :func:`split_unlabelled` (no letters): the same cuts, accepted where both sides hold *major*
   content (an image, a plot frame: a connected component large relative to the figure and to its
   text), so text fragments (axis titles, legends, stray letters) stay with their panel.

A learned detector can be plugged in two ways (boxes in working coordinates):

* ``proposals`` replace the cut leaves as the atoms that letters group (the ``detector`` layout
  method, see ``parse.parse_figure(proposals=...)``);
* ``detections`` are *cut hints* (the ``combined`` method): where letters remain to be separated
  and no gutter (clean or soft) does it, i.e. panels that touch, a line between the detected
  panels (crossing none of them) that separates the letters is cut before falling back to
  component assignment. Gutter cuts come first, so a figure the image analysis can cut is cut
  exactly as without a detector; figures without letters are not cut by the detector (a
  detector that sees several panels in one diagram or photo would split a single-panel figure).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image

from ..ingest.images import to_rgb

Box = tuple[int, int, int, int]  # x1, y1, x2, y2 (x2/y2 exclusive)

FG_DIFF = 40  # a pixel is foreground when a channel differs from the paper colour by more than this


@dataclass
class Canvas:
    """The working copy of one figure and what every later step needs from it."""

    rgb: np.ndarray  # H x W x 3 uint8, working scale
    gray: np.ndarray  # H x W uint8
    fg: np.ndarray  # H x W bool, foreground
    scale: float  # working pixels per original pixel (<= 1), along x
    width: int  # original size
    height: int
    bg: np.ndarray  # paper colour (3,)
    paper: str  # "light" | "dark" | "other"
    area: Box  # working-coordinate region inside an outer frame line (or the whole image)
    scale_y: float | None = None  # the same along y, where rounding a thin side makes it differ (1x5000 -> 1x1000)
    text_h: float = 0.0  # typical glyph height in working pixels (median of glyph-like components)
    comps: np.ndarray | None = field(default=None, repr=False)  # cv2 stats of fg components (x, y, w, h, area)
    # separator-line flags per (box, axis), from ``fg`` and ``gray`` (which stay unchanged)
    line_cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def shape(self) -> tuple[int, int]:
        return self.gray.shape

    @property
    def scales(self) -> tuple[float, float]:
        """(x, y) working pixels per original pixel."""
        return self.scale, self.scale if self.scale_y is None else self.scale_y

    def to_original(self, box: Box) -> list[int]:
        sx, sy = self.scales
        x1, y1, x2, y2 = box
        return [max(0, int(np.floor(x1 / sx))), max(0, int(np.floor(y1 / sy))),
                min(self.width, int(np.ceil(x2 / sx))), min(self.height, int(np.ceil(y2 / sy)))]


def components(mask: np.ndarray):
    """8-connected components of a bool/uint8 mask: ``(n, labels, stats, centroids)`` as
    ``cv2.connectedComponentsWithStats`` gives them. Labels are 16-bit when they fit (the same
    labelling, written and read faster), else 32-bit."""
    m = mask.view(np.uint8) if mask.dtype == bool else mask
    try:
        return cv2.connectedComponentsWithStats(m, connectivity=8, ltype=cv2.CV_16U)
    except cv2.error:  # more than 65535 components
        return cv2.connectedComponentsWithStats(m, connectivity=8)


def near_colour(rgb: np.ndarray, colour, tol: int) -> np.ndarray:
    """uint8 mask, 255 where every channel of ``rgb`` (H x W x 3 uint8) is within ``tol`` of
    ``colour`` (0-255 per channel), else 0: ``(np.abs(rgb - colour) <= tol).all(axis=2)`` in one
    OpenCV pass."""
    lo = tuple(float(max(0, int(c) - tol)) for c in colour)
    hi = tuple(float(min(255, int(c) + tol)) for c in colour)
    return cv2.inRange(rgb, lo, hi)


def load_rgb(image) -> Image.Image:
    """PIL image or path -> fully decoded RGB PIL image (raises on unreadable input)."""
    if isinstance(image, Image.Image):
        img = image
    else:
        img = Image.open(image)
    img.load()
    return to_rgb(img)


def median1d(values) -> float:
    """``float(np.median(values))`` for a non-empty 1-d integer or float32 sequence without NaN, the
    same value without np.median's overhead: the middle element, or the mean of the two middle
    elements computed in the values' own dtype (as numpy does)."""
    a = np.asarray(values)
    n = a.size
    if n == 0:
        return float(np.median(a))
    part = np.partition(a, [(n - 1) // 2, n // 2]) if n > 2 else np.sort(a)
    lo, hi = part[(n - 1) // 2], part[n // 2]
    if n % 2:
        return float(hi)
    if a.dtype.kind in "iub":
        return (float(lo) + float(hi)) / 2
    return float((lo + hi) / 2)


def _frame_depth(lines: np.ndarray, max_depth: int) -> int:
    """How many outermost lines (rows of ``lines``, outermost first) form a dark, uniform frame
    line with light paper just inside it (MedICaT-style 2 px frames)."""
    depth = 0
    for i in range(min(max_depth, len(lines) - 1)):
        line = lines[i].astype(np.int16)
        med = median1d(line)
        if np.mean(np.abs(line - med) < 30) < 0.9:
            break
        if med < 160:
            depth = i + 1
        elif depth:
            break
        # else a uniform light line outside the frame (the anti-aliased edge of a rendered PDF
        # frame): look one line further in
    if depth and median1d(lines[depth]) < 200:
        return 0
    return depth


def paper_colour(ring: np.ndarray) -> tuple[np.ndarray, str]:
    """Paper colour from the border ring's pixels: white when a fair share of the border is white
    (gutters, margins, the white frame of a mosaic), else black when a fair share is black, else
    the most common colour."""
    ring = ring.astype(np.int16)
    white = (ring >= 215).all(axis=1)
    black = (ring <= 40).all(axis=1)
    if white.mean() >= 0.3:
        return np.median(ring[white], axis=0).astype(np.uint8), "light"
    if black.mean() >= 0.3:
        return np.median(ring[black], axis=0).astype(np.uint8), "dark"
    q = ring >> 4
    codes = (q[:, 0] << 8) | (q[:, 1] << 4) | q[:, 2]
    mode = np.bincount(codes).argmax()
    colour = np.median(ring[codes == mode], axis=0).astype(np.uint8)
    lum = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    paper = "light" if lum >= 200 and int(colour.max()) - int(colour.min()) < 40 else ("dark" if lum <= 60 else "other")
    return colour, paper


def _uniform_white(g: np.ndarray, axis: int) -> np.ndarray:
    """Rows (axis=0) / columns (axis=1) of uint8 ``g`` with mean > 215 and std < 6. The means come
    from exact integer sums (equal to numpy's float64 means); the standard deviations, numpy's as
    before, only when some line is that bright (else no line qualifies)."""
    bright = line_counts(g, axis) / g.shape[1 - axis] > 215
    if not bright.any():
        return bright
    return (g.std(axis=1 - axis) < 6) & bright


def prepare(image, max_side: int = 1000) -> Canvas:
    """Decode ``image`` (PIL image or path) into a :class:`Canvas`."""
    img = image if isinstance(image, Image.Image) else Image.open(image)
    W, H = img.size
    scale = min(1.0, max_side / max(W, H))
    if scale <= 0.5 and img.format == "JPEG" and not isinstance(image, Image.Image):
        # JPEG can decode at 1/2, 1/4, 1/8 of its size directly: much faster, same result after
        # the area resize below.
        img.draft("RGB", (int(W * scale) + 1, int(H * scale) + 1))
    img.load()
    img = to_rgb(img)
    tw, th = max(1, round(W * scale)), max(1, round(H * scale))
    factor = int(min(img.width / tw, img.height / th))
    if factor >= 2:  # integer box reduction in PIL first: fast, and less to copy into numpy
        img = img.reduce(factor)
    rgb = np.asarray(img)
    if rgb.shape[1] != tw or rgb.shape[0] != th:
        rgb = cv2.resize(rgb, (tw, th), interpolation=cv2.INTER_AREA if factor >= 2 else cv2.INTER_LINEAR)
    scale, scale_y = rgb.shape[1] / W, rgb.shape[0] / H
    rgb = np.ascontiguousarray(rgb)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    h, w = gray.shape
    # A thin frame line around the whole figure (dark or coloured): ignore it.
    k = max(1, int(0.01 * min(h, w)) + 1)
    top = _frame_depth(gray, k)
    bottom = _frame_depth(gray[::-1], k)
    left = _frame_depth(gray.T, k)
    right = _frame_depth(gray.T[::-1], k)
    area = (left, top, w - right, h - bottom)
    if area[2] - area[0] < w // 2 or area[3] - area[1] < h // 2:
        area = (0, 0, w, h)
    x1, y1, x2, y2 = area
    ring = np.concatenate([rgb[y1:y1 + 2, x1:x2].reshape(-1, 3), rgb[y2 - 2:y2, x1:x2].reshape(-1, 3),
                           rgb[y1:y2, x1:x1 + 2].reshape(-1, 3), rgb[y1:y2, x2 - 2:x2].reshape(-1, 3)])
    bg, paper = paper_colour(ring)
    if paper != "light":
        # Pictures touching the border (a dark mosaic): full-length uniform white rows or
        # columns inside the figure are gutters, so the paper is white after all.
        g = gray[y1:y2, x1:x2]
        lines = np.concatenate([g[:, _uniform_white(g, 1)].ravel(), g[_uniform_white(g, 0)].ravel()])
        if lines.size:
            bg, paper = np.full(3, int(np.median(lines)), np.uint8), "light"
    fg = near_colour(rgb, bg, FG_DIFF) == 0  # a channel differs by more than FG_DIFF
    fg[:y1] = False
    fg[y2:] = False
    fg[:, :x1] = False
    fg[:, x2:] = False
    # Drop specks (JPEG noise, dust): components of a few pixels.
    n, lab, stats, _ = components(fg)
    min_area = max(2, int(round(1e-6 * h * w)))
    small = (stats[:, cv2.CC_STAT_AREA] <= min_area) & (np.maximum(stats[:, 2], stats[:, 3]) <= 2)
    small[0] = False
    if small.any():
        # A speck lies inside its box of at most 2 x 2 pixels: clear its pixels there (the same
        # as ``fg &= ~small[lab]``, without a pass over the whole image).
        ids = np.flatnonzero(small)
        for dy in (0, 1):
            for dx in (0, 1):
                inside = (dx < stats[ids, 2]) & (dy < stats[ids, 3])
                i = ids[inside]
                ys, xs = stats[i, 1] + dy, stats[i, 0] + dx
                mine = lab[ys, xs] == i
                fg[ys[mine], xs[mine]] = False
        keep = ~small
        keep[0] = False
        stats = stats[keep]
    else:
        stats = stats[1:]
    canvas = Canvas(rgb=rgb, gray=gray, fg=fg, scale=scale, width=W, height=H, bg=bg, paper=paper, area=area,
                    scale_y=scale_y, comps=stats)
    canvas.text_h = estimate_text_height(canvas)
    return canvas


def estimate_text_height(canvas: Canvas) -> float:
    """Median height of glyph-like foreground components (small, not line-like)."""
    st = canvas.comps
    h, w = canvas.shape
    if st is None or len(st) == 0:
        return max(6.0, 0.015 * min(h, w))
    ch, cw, ca = st[:, 3], st[:, 2], st[:, 4]
    ok = (ch >= 5) & (ch <= 0.08 * min(h, w) + 5) & (cw <= 1.5 * ch) & (cw >= 0.15 * ch) & (ca >= 0.15 * ch * cw)
    if ok.sum() < 5:
        return max(6.0, 0.015 * min(h, w))
    return median1d(ch[ok])


# ----------------------------------------------------------------------------------------------
# Gaps and cuts


def tighten(fg: np.ndarray, box: Box) -> Box | None:
    """Bounding box of the foreground inside ``box`` (None if empty)."""
    x1, y1, x2, y2 = box
    sub = fg[y1:y2, x1:x2]
    rows = np.flatnonzero(sub.any(axis=1))
    if len(rows) == 0:
        return None
    cols = np.flatnonzero(sub.any(axis=0))
    return (x1 + int(cols[0]), y1 + int(rows[0]), x1 + int(cols[-1]) + 1, y1 + int(rows[-1]) + 1)


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """Runs [start, end) of True in a 1-d bool array."""
    if len(flags) == 0:
        return []
    padded = np.zeros(len(flags) + 2, bool)
    padded[1:-1] = flags
    edges = np.flatnonzero(padded[1:] != padded[:-1]).tolist()  # starts and ends, alternating
    return list(zip(edges[::2], edges[1::2]))


def line_counts(a: np.ndarray, axis: int) -> np.ndarray:
    """Sum per row (axis=0) or column (axis=1) of a 2-d bool or uint8 array (int32): the number
    of True per line, ``a.sum(axis=1 - axis)``, exact integers, by OpenCV (several times faster
    than numpy)."""
    a = a.view(np.uint8) if a.dtype == bool else a
    if a.size == 0:
        return np.zeros(a.shape[axis], np.int32)
    if a.strides[1] != 1:  # not an OpenCV-compatible layout (a transposed view): numpy
        return a.sum(axis=1 - axis, dtype=np.int32)
    return cv2.reduce(a, 1 - axis, cv2.REDUCE_SUM, dtype=cv2.CV_32S).reshape(-1)


def line_share(mask: np.ndarray, axis: int) -> np.ndarray:
    """Share of True per row (axis=0) or column (axis=1) of a bool mask: ``mask.mean(axis=1 -
    axis)``, the same float64 values, a few times faster."""
    return line_counts(mask, axis) / mask.shape[1 - axis]


def _line_flags(canvas: Canvas, box: Box, axis: int) -> np.ndarray:
    """Rows (axis=0) or columns (axis=1) of ``box`` that are thin uniform separator lines
    (read-only: cached per canvas, box and axis; the cuts ask for the same boxes repeatedly)."""
    key = (box, axis)
    flags = canvas.line_cache.get(key)
    if flags is None:
        flags = canvas.line_cache[key] = _find_line_flags(canvas, box, axis)
        flags.flags.writeable = False
    return flags


def _find_line_flags(canvas: Canvas, box: Box, axis: int) -> np.ndarray:
    x1, y1, x2, y2 = box
    fg = canvas.fg[y1:y2, x1:x2]
    length = fg.shape[1] if axis == 0 else fg.shape[0]
    if length < 20:
        return np.zeros(fg.shape[axis], bool)
    full = line_share(fg, axis) >= 0.92
    if not full.any():
        return full
    gray = canvas.gray[y1:y2, x1:x2]
    if axis == 0:
        # Colour statistics of the full rows only: each row is reduced on its own, so the values
        # are those over the whole box. (Not so for columns: numpy sums a column subset in
        # another order, with other rounding.)
        rows = np.flatnonzero(full)
        std = np.zeros(len(full), np.float32)
        mean = np.zeros(len(full), np.float32)
        sub = gray[rows].astype(np.float32)
        std[rows] = sub.std(axis=1)
        mean[rows] = sub.mean(axis=1)
    else:
        gray = gray.astype(np.float32)
        std = gray.std(axis=0)
        mean = gray.mean(axis=0)
    full &= std < 28
    max_thick = max(2, int(round(0.006 * max(canvas.shape))))
    out = np.zeros_like(full)
    for s, e in _runs(full):
        # Split a run where its colour changes (a grey separator beside a black image border).
        cuts = [s] + (np.flatnonzero(np.abs(np.diff(mean[s:e])) > 40) + (s + 1)).tolist() + [e]
        for a, b in zip(cuts, cuts[1:]):
            if b - a <= max_thick and _stands_out(gray, axis, a, b) and not _crossed(fg, axis, a, b):
                out[a:b] = True
    return out


def _crossed(fg: np.ndarray, axis: int, a: int, b: int, max_stroke: int = 3, max_crossings: int = 2) -> bool:
    """Do thin strokes cross the band [a, b) of rows (axis=0) / columns (axis=1), continuing on
    both sides of it (wires crossing the edge of a box in a diagram)? A line between panels is
    touched from both sides only where pictures meet it, over long stretches, not by thin strokes."""
    f = fg if axis == 0 else fg.T
    if a < 1 or b >= f.shape[0]:
        return False
    both = f[a - 1] & f[b]
    n = 0
    for s, e in _runs(both):
        if e - s <= max_stroke:
            n += 1
            if n > max_crossings:
                return True
    return False


def _stands_out(gray: np.ndarray, axis: int, a: int, b: int, diff: float = 20.0, share: float = 0.5) -> bool:
    """Does the thin band [a, b) of rows (axis=0) / columns (axis=1) differ from the picture on
    each side of it (2 px away) along at least ``share`` of its length? A drawn separator does; a
    flat stripe of one picture (a column of even grey in a radiograph) does not."""
    g = gray if axis == 0 else gray.T
    n = g.shape[0]
    band = g[a:b].astype(np.float32).mean(axis=0)
    sides = [g[i].astype(np.float32) for i in (a - 2, b + 1) if 0 <= i < n]
    if not sides:
        return True
    return all(float((np.abs(band - side) > diff).mean()) >= share for side in sides)


def find_gaps(canvas: Canvas, box: Box, axis: int, fg: np.ndarray | None = None,
              lines: bool = True) -> list[tuple[int, int]]:
    """Interior gaps of ``box`` along ``axis`` (0: horizontal gaps = runs of rows, 1: columns), as
    absolute [start, end) coordinates; separator lines count as gaps."""
    fg = canvas.fg if fg is None else fg
    x1, y1, x2, y2 = box
    sub = fg[y1:y2, x1:x2]
    empty = ~sub.any(axis=1 - axis)
    if lines:
        empty |= _line_flags(canvas, box, axis)
    off = y1 if axis == 0 else x1
    n = len(empty)
    return [(s + off, e + off) for s, e in _runs(empty) if s > 0 and e < n]


def _sub(box: Box, axis: int, a: int, b: int) -> Box:
    x1, y1, x2, y2 = box
    return (x1, a, x2, b) if axis == 0 else (a, y1, b, y2)


# ----------------------------------------------------------------------------------------------
# Labelled mode


@dataclass
class Anchor:
    """A panel letter as the splitter sees it (working coordinates)."""

    box: Box
    key: int  # index into the caller's label list

    @property
    def center(self) -> tuple[float, float]:
        return ((self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2)


@dataclass
class Region:
    box: Box  # tight content box (working coordinates)
    anchors: list[Anchor]
    method: str = "xy-cut"


def _erase(fg: np.ndarray, anchors: list[Anchor], pad: int) -> np.ndarray:
    out = fg.copy()
    h, w = fg.shape
    for a in anchors:
        x1, y1, x2, y2 = a.box
        out[max(0, y1 - pad):min(h, y2 + pad), max(0, x1 - pad):min(w, x2 + pad)] = False
    return out


def split_labelled(canvas: Canvas, anchors: list[Anchor], proposals: list[Box] | None = None,
                   detections: list[Box] | None = None) -> list[Region]:
    """One region per anchor (panel letter): recursive cuts separating letters, then component
    assignment where the layout interleaves. Regions may come back empty (``box`` None) for a
    letter that governs no content. ``detections``: detected panel boxes, used as cut hints where
    no gutter (clean or soft) separates the letters."""
    pad = max(1, int(round(0.1 * canvas.text_h)))
    fg = _erase(canvas.fg, anchors, pad)
    out: list[Region] = []
    _cut_labelled(canvas, fg, canvas.area, anchors, out, depth=0, detections=detections or None)
    if proposals:
        out = _group_proposals(canvas, fg, proposals, anchors) or out
    return out


def _side_after(a: Anchor, s: int, axis: int) -> bool:
    """Does letter ``a`` go to the side after a cut at ``s``? Letters precede their panel, so a
    letter inside the gap, or reaching past its start, belongs to what follows."""
    return (a.box[3] if axis == 0 else a.box[2]) > s + 1 or a.center[1 - axis] >= s


def _cut_labelled(canvas: Canvas, fg: np.ndarray, box: Box, anchors: list[Anchor], out: list[Region],
                  depth: int, detections: list[Box] | None = None, method: str = "xy-cut") -> None:
    tight = tighten(fg, box)
    if len(anchors) <= 1 or tight is None or depth > 40:
        if len(anchors) == 1:
            out.append(Region(tight, anchors, method))
        elif len(anchors) > 1:
            out.extend(Region(None, [a]) for a in anchors)
        return
    # Keep the letters' own extent in the region we cut (they may stand outside the content).
    bx1 = min([tight[0]] + [a.box[0] for a in anchors])
    by1 = min([tight[1]] + [a.box[1] for a in anchors])
    bx2 = max([tight[2]] + [a.box[2] for a in anchors])
    by2 = max([tight[3]] + [a.box[3] for a in anchors])
    region = (max(box[0], bx1), max(box[1], by1), min(box[2], bx2), min(box[3], by2))
    th = max(canvas.text_h, 4.0)
    # A header above every letter (a figure title, column headers shared by several panels)
    # belongs to none of them: letters stand at the top-left of their panel.
    top = min(a.box[1] for a in anchors)
    heads = [s for s, e in find_gaps(canvas, region, 0, fg=fg) if s <= top]
    if heads:
        region = (region[0], max(heads), region[2], region[3])
    best = _best_cut(canvas, fg, region, anchors, th, soft=False)
    if best is None:
        # No clean gutter: accept a "soft" one that a few strokes cross (a dashed line drawn
        # across two panels, a shared legend below them).
        best = _best_cut(canvas, fg, region, anchors, th, soft=True)
    if best is None and detections:
        # No gutter at all (panels that touch): a line between detected panels that also
        # separates the letters.
        best = _detector_cut(canvas, fg, region, detections, anchors)
        if best is not None:
            method = "proposals"
    if best is None:
        out.extend(_assign_components(canvas, fg, region, anchors))
        return
    axis, s, before, after = best
    start, end = (region[1], region[3]) if axis == 0 else (region[0], region[2])
    _cut_labelled(canvas, fg, _sub(region, axis, start, s), before, out, depth + 1, detections, method)
    _cut_labelled(canvas, fg, _sub(region, axis, s, end), after, out, depth + 1, detections, method)


SOFT_GAP = 0.06  # a soft gap line may be crossed by foreground over at most this share of its length


def _best_cut(canvas, fg, region, anchors, th, soft):
    """The cut to make in ``region``: (axis, position, letters before, letters after) or None.

    Gaps that split the letters the same way form one option; the option with the widest gap
    wins (soft gaps pay for the strokes crossing them). Within it, the gap right before the first
    letter on the far side is used: letters stand at the top-left of their panel, so content
    between an earlier gap and that letter belongs to the panel before."""
    x1, y1, x2, y2 = region
    options: dict[tuple, list] = {}
    for axis in (0, 1):
        off = y1 if axis == 0 else x1
        if soft:
            frac = line_share(fg[y1:y2, x1:x2], axis)
            flags = frac <= SOFT_GAP
            gaps = [(s + off, e + off) for s, e in _runs(flags) if s > 0 and e < len(flags)]
        else:
            gaps = find_gaps(canvas, region, axis, fg=fg)
        for s, e in gaps:
            after = [a for a in anchors if _side_after(a, s, axis)]
            before = [a for a in anchors if not _side_after(a, s, axis)]
            if not before or not after:
                continue
            width = (e - s) / th
            if soft:
                width -= 20.0 * float(frac[s - off:e - off].mean())
            lead = min(a.box[1 if axis == 0 else 0] for a in after)
            dist = max(0, lead - e)
            # A panel does not start far before its letter (on the development figures at most
            # 2.2 letter heights left of it, 1.2 above it).
            lh = max(a.box[3] - a.box[1] for a in after)
            if dist > (2.5 if axis == 0 else 3.0) * lh:
                continue
            key = (axis, tuple(sorted(a.key for a in after)))
            options.setdefault(key, []).append((width, dist, s, before, after))
    if not options:
        return None
    key, gaps = max(options.items(), key=lambda kv: max(g[0] for g in kv[1]))
    width, dist, s, before, after = min(gaps, key=lambda g: (g[1], -g[0]))
    return key[0], s, before, after


def _detector_cut(canvas: Canvas, fg: np.ndarray, region: Box, detections: list[Box], anchors: list[Anchor]):
    """A cut of ``region`` along a line between detected panel boxes: (axis, position, letters
    before, letters after), or None.

    The detections considered are those mostly (>= half their area) inside ``region``. A line
    qualifies when it crosses none of them (a box may reach over it by up to one text height:
    detector boxes are approximate), has at least one on each side, and leaves letters on both
    sides (by the same rule as gutter cuts). It is placed where the foreground is thinnest between
    the boxes on either side; among qualifying lines the one crossing the least foreground wins."""
    x1, y1, x2, y2 = region
    tol = max(canvas.text_h, 2.0)
    inside = []
    for b in detections:
        ix1, iy1, ix2, iy2 = max(x1, b[0]), max(y1, b[1]), min(x2, b[2]), min(y2, b[3])
        area = (b[2] - b[0]) * (b[3] - b[1])
        if area > 0 and ix2 > ix1 and iy2 > iy1 and (ix2 - ix1) * (iy2 - iy1) >= 0.5 * area:
            inside.append((ix1, iy1, ix2, iy2))
    if len(inside) < 2:
        return None
    best = None
    for axis in (0, 1):
        lo_i, hi_i = (1, 3) if axis == 0 else (0, 2)
        start, end = (y1, y2) if axis == 0 else (x1, x2)
        ink = fg[y1:y2, x1:x2].sum(axis=1 - axis)
        for b in inside:  # a line just past the far edge of box b
            edge = b[hi_i]
            before = [d for d in inside if d[hi_i] <= edge + tol]
            after = [d for d in inside if d[lo_i] >= edge - tol]
            if not before or not after or len(before) + len(after) != len(inside):
                continue  # some box crosses the line (or sits on it)
            nxt = min(d[lo_i] for d in after)
            lo, hi = max(start + 1, min(edge, nxt)), min(end - 1, max(edge, nxt))
            if hi < lo:
                continue
            s = lo + int(np.argmin(ink[lo - start:hi - start + 1]))
            a_after = [a for a in anchors if _side_after(a, s, axis)]
            a_before = [a for a in anchors if not _side_after(a, s, axis)]
            if a_before and a_after and (best is None or ink[s - start] < best[0]):
                best = (int(ink[s - start]), (axis, s, a_before, a_after))
    return best[1] if best else None


def _assign_components(canvas: Canvas, fg: np.ndarray, region: Box, anchors: list[Anchor]) -> list[Region]:
    """Give every connected component of ``region`` to the letter that governs it: the nearest
    letter, where content above or left of a letter costs four times its offset."""
    x1, y1, x2, y2 = region
    sub = fg[y1:y2, x1:x2]
    # Join glyphs into words so a word is not split between two panels.
    k = max(1, int(round(0.25 * canvas.text_h)))
    joined = cv2.dilate(sub.view(np.uint8), np.ones((1, 2 * k + 1), np.uint8))
    n, lab, st, cent = components(joined)
    boxes: dict[int, list[int]] = {i: [] for i in range(len(anchors))}
    if n <= 1:
        return [Region(None, [a]) for a in anchors]
    ab = np.array([a.box for a in anchors], np.float32) - np.array([x1, y1, x1, y1], np.float32)
    cx = cent[1:, 0][:, None]
    cy = cent[1:, 1][:, None]
    # Reference point of a component: its centre, but its top-left for large ones (a big plot is
    # governed by the letter at its corner, not by whatever letter is nearest its middle).
    big = (st[1:, 2] > 6 * canvas.text_h) & (st[1:, 3] > 6 * canvas.text_h)
    rx = np.where(big[:, None], st[1:, 0][:, None] + 2 * canvas.text_h, cx)
    ry = np.where(big[:, None], st[1:, 1][:, None] + 2 * canvas.text_h, cy)
    # Content may start a little left of / above its letter (axis titles, panel titles): the
    # penalty starts beyond 1.5 / 1 letter heights.
    lh = (ab[:, 3] - ab[:, 1])[None, :]
    dx_left = np.maximum(0, ab[None, :, 0] - 1.5 * lh - rx)  # component left of the letter
    dy_up = np.maximum(0, ab[None, :, 1] - lh - ry)  # component above the letter
    dx = np.maximum(0, rx - ab[None, :, 2])
    dy = np.maximum(0, ry - ab[None, :, 3])
    dist = np.hypot(dx + dx_left, dy + dy_up) + 3.0 * (dx_left + dy_up)
    owner = dist.argmin(axis=1)
    for i in range(n - 1):
        x, y, w, h = st[i + 1, :4]
        boxes[int(owner[i])].append([x, y, x + w, y + h])
    out = []
    for j, a in enumerate(anchors):
        if not boxes[j]:
            out.append(Region(None, [a], "components"))
            continue
        b = np.array(boxes[j])
        # The dilation widened each box by k on both sides; undo it.
        bx = (int(b[:, 0].min()) + x1 + k, int(b[:, 1].min()) + y1, int(b[:, 2].max()) + x1 - k, int(b[:, 3].max()) + y1)
        out.append(Region(tighten(fg, bx), [a], "components"))
    return out


def _group_proposals(canvas: Canvas, fg: np.ndarray, proposals: list[Box], anchors: list[Anchor]) -> list[Region]:
    """Letters group external proposal boxes (e.g. a learned detector's) by the same ownership rule."""
    if not proposals:
        return []
    ab = np.array([a.box for a in anchors], np.float32)
    groups: dict[int, list[Box]] = {}
    for p in proposals:
        rx, ry = p[0] + 2 * canvas.text_h, p[1] + 2 * canvas.text_h
        dxl = np.maximum(0, ab[:, 0] - rx)
        dyu = np.maximum(0, ab[:, 1] - ry)
        d = np.hypot(np.maximum(0, rx - ab[:, 2]) + dxl, np.maximum(0, ry - ab[:, 3]) + dyu) + 3 * (dxl + dyu)
        groups.setdefault(int(d.argmin()), []).append(p)
    out = []
    for j, a in enumerate(anchors):
        ps = groups.get(j)
        if not ps:
            out.append(Region(None, [a], "proposals"))
            continue
        b = np.array(ps)
        out.append(Region((int(b[:, 0].min()), int(b[:, 1].min()), int(b[:, 2].max()), int(b[:, 3].max())), [a], "proposals"))
    return out


# ----------------------------------------------------------------------------------------------
# Unlabelled mode


def _major(canvas: Canvas, box: Box) -> bool:
    """Does ``box`` hold major content: a connected component (of the foreground inside the box)
    large for the figure and for its text (an image, a plot's axes/frame, a diagram), not just
    words?"""
    x1, y1, x2, y2 = box
    H, W = canvas.shape
    th = max(canvas.text_h, 4.0)
    need_w, need_h = max(0.08 * W, 4 * th), max(0.08 * H, 4 * th)
    if x2 - x1 < need_w or y2 - y1 < need_h:
        return False
    sub = canvas.fg[y1:y2, x1:x2]
    n, lab, st, _ = components(sub)
    if n <= 1:
        return False
    big = np.flatnonzero((st[1:, 2] >= need_w) & (st[1:, 3] >= need_h)) + 1
    return any(not _text_box(sub, lab, st, i, th) for i in big)


def _text_box(sub: np.ndarray, lab: np.ndarray, st: np.ndarray, i: int, th: float) -> bool:
    """Is component ``i`` a drawn box (a thin outline) holding nothing but a few lines of text
    (a flow-chart box, a framed label)? Such a box is no panel of its own."""
    x, y, w, h, area = (int(v) for v in st[i])
    if h > 6 * th or area > 0.25 * w * h:
        return False
    inner = sub[y:y + h, x:x + w] & (lab[y:y + h, x:x + w] != i)
    if not inner.any():
        return False
    n, _, ist, _ = components(inner)
    return bool((ist[1:, 3] <= 1.5 * th).all())


def split_unlabelled(canvas: Canvas, proposals: list[Box] | None = None) -> list[Region]:
    """Leaf panels of a figure without letters (single-panel figures come back as one region)."""
    if proposals:
        return [Region(tuple(int(v) for v in p), [], "proposals") for p in proposals]
    out: list[Region] = []
    _cut_unlabelled(canvas, canvas.area, out, 0)
    if len(out) <= 1 and canvas.paper != "light":
        # One picture on a non-white ground (a photo, a painting, a 3-D rendering): the panel is
        # the whole image, not the object on its backdrop.
        return [Region(canvas.area, [], "whole")]
    return out or [Region(canvas.area, [], "whole")]


def _cut_unlabelled(canvas: Canvas, box: Box, out: list[Region], depth: int) -> None:
    tight = tighten(canvas.fg, box)
    if tight is None:
        return
    if depth > 40:
        out.append(Region(tight, []))
        return
    best = None
    for axis in (0, 1):
        lo, hi = (tight[1], tight[3]) if axis == 0 else (tight[0], tight[2])
        for s, e in find_gaps(canvas, tight, axis):
            a, b = _sub(tight, axis, lo, s), _sub(tight, axis, e, hi)
            if not (_major(canvas, a) and _major(canvas, b)):
                continue
            score = e - s
            if best is None or score > best[0]:
                best = (score, a, b)
    if best is None:
        out.append(Region(tight, []))
        return
    _cut_unlabelled(canvas, best[1], out, depth + 1)
    _cut_unlabelled(canvas, best[2], out, depth + 1)
