"""Panel letters: find printed labels ("A", "b", "(c)", "d."), read them, pick the figure's set.

1. Candidates (:func:`find_candidates`): connected components of dark ink on a light ground and of
   light ink on a dark ground (letters printed on micrographs or CT slices: brighter than the
   local mean), of glyph size relative to the figure and its text height, not part of a word (no
   glyph-sized neighbour on the same line within 0.3 glyph heights) nor of rotated text (none
   directly above / below), on a ground of the opposite polarity, with a dot above merged ("i",
   "j") and brackets / a trailing period beside them taken into the label box. A vectorised
   pre-filter (integral images) removes most word glyphs first; coloured glyphs (legend entries)
   count less.
2. Reading: the rendered-glyph classifier (:mod:`.glyphs`, default) or tesseract
   (``reader="tesseract"``: every candidate pasted on one sheet, ONE ``tesseract --psm 6`` call
   per figure, its TSV rows mapped back to the sheet cells). Each candidate gets a capital and a
   small-letter reading (a bar reads "I" as a capital, "l" as a small letter).
3. Selection (:func:`candidate_runs`): runs a, b, c ... grown from each "a" candidate, under a
   capitals and a small-letters hypothesis (glyph heights compared in x-height units), with
   bonuses for labels aligned in rows / columns and for the reading order; missing letters are
   filled by position; runs are scored by certainty minus size inconsistency.
   ``parse._split_with_letters`` then checks each run against the layout (every letter must sit
   at the top-left of a plausible panel) and drops stray glyphs.

Coordinates here are those of the :class:`~.split.Canvas` (working scale).
"""

from __future__ import annotations

import os
import shutil
import string
import subprocess
import tempfile
from dataclasses import dataclass, field

import cv2
import numpy as np

from .glyphs import classifier, fmean, glyph_vectors
from .split import Box, Canvas, components, median1d

LOWER = string.ascii_lowercase
KERNEL3 = np.ones((3, 3), np.uint8)


@dataclass
class Candidate:
    box: Box  # the glyph (working coordinates)
    label_box: Box  # glyph + brackets / period
    mask: np.ndarray = field(repr=False)  # glyph ink inside ``box``
    polarity: str  # "dark" (dark ink on light ground) | "light"
    height: int
    probs: np.ndarray | None = field(default=None, repr=False)  # [26] letter probabilities, either case
    p_upper: np.ndarray | None = field(default=None, repr=False)  # [26] reading as a capital
    p_lower: np.ndarray | None = field(default=None, repr=False)  # [26] reading as a small letter
    upper: float = 0.5  # probability the glyph is an upper-case shape
    isolation: float = 1.0


@dataclass
class Label:
    text: str  # "A", "b"
    box: Box  # label box incl. brackets (working coordinates)
    glyph_box: Box
    score: float
    index: int  # position in the alphabet (0 = a)
    cand: int = -1  # index of the candidate it was read from


# ----------------------------------------------------------------------------------------------
# Candidates


def _components(mask: np.ndarray):
    n, lab, st, _ = components(mask)
    return n, lab, st


def _boxsum(S: np.ndarray, x1, y1, x2, y2) -> np.ndarray:
    """Sums of a 2-d array over boxes, from its integral image ``S`` (vectorised, clipped)."""
    H, W = S.shape[0] - 1, S.shape[1] - 1
    # (np.minimum / np.maximum: np.clip's checks cost more than the clipping of a few integers)
    x1, x2 = np.minimum(np.maximum(x1, 0), W), np.minimum(np.maximum(x2, 0), W)
    y1, y2 = np.minimum(np.maximum(y1, 0), H), np.minimum(np.maximum(y2, 0), H)
    x2, y2 = np.maximum(x1, x2), np.maximum(y1, y2)
    return S[y2, x2] - S[y1, x2] - S[y2, x1] + S[y1, x1]


# What counting pixels in boxes costs, in nanoseconds, one way or the other (fitted on the 187
# counts of the 32 development and EXSCLAIM figures, one core): gathering the pixels of small
# boxes, slicing large boxes one by one, or an integral image of the whole mask (its pixels
# first looked up in a component table: 8-bit labels through an OpenCV table, else np.take).
GATHER_NS = (40_000, 5.4, 150)  # fixed, per box pixel, per box
SLICE_NS = (23_000, 1_080)  # fixed, per box
INTEGRAL_NS = (3_000, 0.2, 0.54, 1.15)  # fixed, per image pixel: plain mask, 8-bit / 16-bit table


def _integral_is_cheaper(a: np.ndarray, boxes, table: np.ndarray | None) -> bool:
    """Whether one integral image of ``a`` counts ``boxes`` faster than :func:`_box_counts`."""
    n = len(boxes[0][0]) * len(boxes)
    px = sum(int(np.maximum(b[2] - b[0], 0).dot(np.maximum(b[3] - b[1], 0))) for b in boxes)
    if px <= GATHER_PIXELS_PER_BOX * n:
        direct = GATHER_NS[0] + GATHER_NS[1] * px + GATHER_NS[2] * n
    else:
        direct = SLICE_NS[0] + SLICE_NS[1] * n
    per_px = INTEGRAL_NS[1] if table is None else INTEGRAL_NS[2] if len(table) <= 256 else INTEGRAL_NS[3]
    return INTEGRAL_NS[0] + per_px * a.size < direct


def _box_counts(a: np.ndarray, x1, y1, x2, y2, table: np.ndarray | None = None) -> np.ndarray:
    """Per box (integer coordinate arrays, clipped to the image like :func:`_boxsum`): the number
    of nonzero pixels of ``a`` in it, or, with ``table``, of ``table[a]`` (``a``: labels).

    Small boxes (the usual case: bands and rings around glyphs) are counted by gathering all their
    pixels at once, larger ones box by box."""
    H, W = a.shape
    x1, x2 = np.minimum(np.maximum(x1, 0), W), np.minimum(np.maximum(x2, 0), W)
    y1, y2 = np.minimum(np.maximum(y1, 0), H), np.minimum(np.maximum(y2, 0), H)
    bw, bh = np.maximum(x2 - x1, 0), np.maximum(y2 - y1, 0)
    area = bw * bh
    if int(area.sum()) <= GATHER_PIXELS_PER_BOX * len(area):
        # every pixel of every box: its box b, its offset o inside the box, its flat index
        b = np.repeat(np.arange(len(area)), area)
        o = np.arange(len(b)) - np.repeat(np.cumsum(area) - area, area)
        w = bw[b]
        v = a.reshape(-1)[(y1[b] + o // w) * W + x1[b] + o % w]
        if table is not None:
            v = table[v]
        return np.bincount(b[v != 0], minlength=len(area))
    out = np.zeros(len(area), np.int64)
    for k, bx1, by1, bx2, by2 in zip(np.flatnonzero(area).tolist(), *(v[area > 0].tolist() for v in (x1, y1, x2, y2))):
        sub = a[by1:by2, bx1:bx2]
        out[k] = np.count_nonzero(table[sub] if table is not None else sub)
    return out


# Gathering pixels beats slicing box by box while boxes hold fewer pixels than this on average.
GATHER_PIXELS_PER_BOX = 150


def _lookup(table: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """``table[lab]`` for a uint8 table over component labels: an OpenCV look-up table when the
    labels fit in 8 bits, else ``np.take`` (both much faster than fancy indexing)."""
    if len(table) <= 256:
        lut = np.zeros(256, np.uint8)
        lut[:len(table)] = table
        return cv2.LUT(lab.astype(np.uint8), lut)
    return np.take(table, lab)


def _prefilter(gray: np.ndarray, m: np.ndarray, lab: np.ndarray, st: np.ndarray, idx: np.ndarray,
               hmin: int, hmax: int, polarity: str) -> np.ndarray:
    """Fast, conservative pre-filter over many glyphs at once (box counts): drop glyphs with
    a glyph-sized neighbour right beside them on their line (inside words), with much ink of
    their polarity around them, or standing on the wrong ground. The full tests in
    :func:`find_candidates` decide for the rest.

    The tests run in that order, each on the glyphs the previous ones kept (most glyphs are
    inside words, so the later counts cover few boxes)."""
    x, y, w, h = st[1:, 0], st[1:, 1], st[1:, 2], st[1:, 3]
    H, W = gray.shape

    def counts(a, boxes, table=None):
        """Pixel counts of ``a`` (or ``table[a]``) per box, for each of ``boxes``: from an
        integral image, or box by box (the same integers), whichever is expected to be faster."""
        if not _integral_is_cheaper(a, boxes, table):
            return [_box_counts(a, *b, table=table) for b in boxes]
        S = cv2.integral(_lookup(table, a) if table is not None else a.view(np.uint8))
        return [_boxsum(S, *b) for b in boxes]

    # 1. A glyph-sized component in the bands right and left of the glyph (a word).
    small = np.zeros(len(st), bool)
    small[1:] = (h <= 1.6 * hmax) & (w <= 3 * hmax) & ~((h >= 0.8 * hmin) & (w <= 0.45 * h))  # not brackets
    gx1, gy1, gw, gh = x[idx], y[idx], w[idx], h[idx]
    gx2 = gx1 + gw
    band = np.maximum(1, np.round(0.25 * gh)).astype(np.int64)
    r1, r2 = gy1 + gh // 4, gy1 + gh - gh // 4
    right, left = counts(lab, [(gx2 + 1, r1, gx2 + 1 + band, r2), (gx1 - 1 - band, r1, gx1 - 1, r2)],
                         table=small.view(np.uint8))
    idx = idx[(right == 0) & (left == 0)]
    if len(idx) == 0:
        return idx
    # 2. Much ink of its polarity around it, 3. the wrong ground around it (in a ring of 0.3 heights).
    gx1, gy1, gw, gh = x[idx], y[idx], w[idx], h[idx]
    gx2, gy2 = gx1 + gw, gy1 + gh
    pad = np.maximum(2, (0.3 * gh).astype(np.int64))
    ex1, ey1, ex2, ey2 = gx1 - pad, gy1 - pad, gx2 + pad, gy2 + pad
    ring_area = (np.minimum(np.maximum(ex2, 0), W) - np.minimum(np.maximum(ex1, 0), W)) * \
        (np.minimum(np.maximum(ey2, 0), H) - np.minimum(np.maximum(ey1, 0), H)) - gw * gh
    ring_area = np.maximum(ring_area, 1)
    ink_out, ink_in = counts(m, [(ex1, ey1, ex2, ey2), (gx1, gy1, gx2, gy2)])
    ok = (ink_out - ink_in) / ring_area <= 0.3
    idx, ring_area = idx[ok], ring_area[ok]
    if len(idx) == 0:
        return idx
    ex1, ey1, ex2, ey2, gx1, gy1, gx2, gy2 = (v[ok] for v in (ex1, ey1, ex2, ey2, gx1, gy1, gx2, gy2))
    ground = (gray >= 150) if polarity == "dark" else (gray <= 110)
    ground_out, ground_in = counts(ground, [(ex1, ey1, ex2, ey2), (gx1, gy1, gx2, gy2)])
    return idx[(ground_out - ground_in) / ring_area >= 0.45]


def _context(x, y, w, h, idx) -> dict[str, np.ndarray]:
    """The context tests of :func:`find_candidates` for all glyphs ``idx`` of one mask at once
    (components given by their boxes ``x, y, w, h``). A glyph's context: the other components
    whose top edge lies from 2 glyph heights above it to 1 below it, and which reach within 2
    heights left or right of it.

    * an i/j dot (a small component just above, overlapping horizontally; the first in top-edge
      order) joins the glyph and leaves the context;
    * brackets and a period beside the glyph on its line widen its label box (``lx1`` ... ``ly2``);
    * ``keep`` is False for a glyph that is part of a word: a glyph-sized neighbour on the same line
      closer than a word space, or (rotated text) directly above / below;
    * ``word_gap``: a glyph-sized neighbour on its line within a word space.

    Returns per-glyph arrays (aligned with ``idx``): gx1, gy1, gx2, gy2 (glyph + dot), lx1, ly1,
    lx2, ly2, dot (component index or -1), keep, word_gap."""
    K = len(idx)
    order = np.argsort(y, kind="stable")
    ys_sorted = y[order]
    bx1, by1, bw, bh = x[order], y[order], w[order], h[order]
    bx2, by2 = bx1 + bw, by1 + bh
    gx1, gy1 = x[idx].astype(np.int64), y[idx].astype(np.int64)
    gx2, gy2 = gx1 + w[idx], gy1 + h[idx]
    gh = gy2 - gy1
    lo = np.searchsorted(ys_sorted, gy1 - 2 * gh)
    hi = np.searchsorted(ys_sorted, gy2 + gh)
    # (glyph, component) pairs, glyph by glyph, components in top-edge order
    cnt = hi - lo
    seg = np.repeat(np.arange(K), cnt)
    rows = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt) + np.repeat(lo, cnt)
    sel = (bx1[rows] < (gx2 + 2 * gh)[seg]) & (bx2[rows] > (gx1 - 2 * gh)[seg]) & (order[rows] != idx[seg])
    seg, rows = seg[sel], rows[sel]
    cx1, cy1, cw, ch, cx2, cy2 = bx1[rows], by1[rows], bw[rows], bh[rows], bx2[rows], by2[rows]
    # i/j dot: a small component just above, overlapping horizontally.
    g = seg
    dot = (cx1 < gx2[g]) & (cx2 > gx1[g]) & (cy2 <= gy1[g] + 1) & (cy2 >= gy1[g] - 0.5 * gh[g]) & \
          (cw <= 0.8 * gh[g]) & (ch <= 0.5 * gh[g])
    dot_comp = np.full(K, -1, np.int64)
    if dot.any():
        first_glyph, first = np.unique(seg[dot], return_index=True)
        j = order[rows[dot][first]]
        dot_comp[first_glyph] = j
        gx1[first_glyph] = np.minimum(gx1[first_glyph], x[j])
        gy1[first_glyph] = np.minimum(gy1[first_glyph], y[j])
        gx2[first_glyph] = np.maximum(gx2[first_glyph], x[j] + w[j])
        gh = gy2 - gy1
        # a glyph with a dot leaves every dot-like component out of its context
        drop = dot & (dot_comp[seg] >= 0)
        keep_pair = ~drop
        seg, cx1, cy1, cw, ch, cx2, cy2 = (v[keep_pair] for v in (seg, cx1, cy1, cw, ch, cx2, cy2))
    g = seg
    G = gh[g]
    # Same-line neighbours (vertical overlap > 40 % of the glyph).
    ov = np.minimum(cy2, gy2[g]) - np.maximum(cy1, gy1[g])
    same_line = ov > 0.4 * G
    gap_r = cx1 - gx2[g]
    gap_l = gx1[g] - cx2
    # Brackets and a period beside the glyph belong to the label.
    bracket = same_line & (ch >= 0.8 * G) & (ch <= 1.6 * G) & (cw <= 0.45 * G) & \
        (((gap_r >= -1) & (gap_r <= 0.35 * G)) | ((gap_l >= -1) & (gap_l <= 0.35 * G)))
    period = same_line & (ch <= 0.3 * G) & (cw <= 0.3 * G) & (gap_r >= -1) & (gap_r <= 0.3 * G) & \
        (cy2 >= gy2[g] - 0.25 * G)
    extra = bracket | period
    lx1, ly1, lx2, ly2 = gx1.copy(), gy1.copy(), gx2.copy(), gy2.copy()
    if extra.any():
        e = seg[extra]
        np.minimum.at(lx1, e, cx1[extra])
        np.minimum.at(ly1, e, cy1[extra])
        np.maximum.at(lx2, e, cx2[extra])
        np.maximum.at(ly2, e, cy2[extra])
    L1, T1, L2, T2 = lx1[g], ly1[g], lx2[g], ly2[g]
    # Part of a word: a glyph-sized neighbour on the same line, closer than a word space,
    # or (rotated text) directly above / below.
    glyphlike = (ch <= 1.6 * G) & (cw <= 3 * G) & (cw * ch >= 3)
    others = same_line & ~extra & glyphlike
    # (a title set smaller right after a label, 'h Eco-HAB', is at a word space of the smaller size)
    space = np.where(ch < 0.75 * G, 0.2 * G, 0.3 * G)
    near = others & (((cx1 >= L2 - 1) & (cx1 - L2 < space)) | ((cx2 <= L1 + 1) & (L1 - cx2 < space)) |
                     ((cx1 < L2) & (cx2 > L1)))
    hov = np.minimum(cx2, L2) - np.maximum(cx1, L1)
    column = glyphlike & (hov > 0.4 * (L2 - L1)) & (np.maximum(ch, cw) >= 0.4 * G)
    vgap = np.where(cy1 >= T2 - 1, cy1 - T2, T1 - cy2)
    word_gap = others & (((cx1 >= L2 - 1) & (cx1 - L2 < 0.8 * G)) | ((cx2 <= L1 + 1) & (L1 - cx2 < 0.8 * G)))

    def count(mask):
        return np.bincount(seg[mask], minlength=K)

    keep = (count(near) == 0) & (count(column & (vgap < 0.3 * G)) == 0) & (count(column & (vgap < 0.6 * G)) < 2)
    return {"gx1": gx1, "gy1": gy1, "gx2": gx2, "gy2": gy2, "lx1": lx1, "ly1": ly1, "lx2": lx2, "ly2": ly2,
            "dot": dot_comp, "keep": keep, "word_gap": count(word_gap) > 0}


def _dark_ground_share(gray: np.ndarray, block: int = 4, level: int = 100) -> float:
    """Share of the ``block`` x ``block`` cells of ``gray`` whose mean is under ``level``."""
    H, W = gray.shape
    if H < block or W < block:
        return float(np.count_nonzero(gray < level)) / max(gray.size, 1)
    cells = cv2.resize(gray[:H - H % block, :W - W % block], (W // block, H // block), interpolation=cv2.INTER_AREA)
    return np.count_nonzero(cells < level) / cells.size


def find_candidates(canvas: Canvas, max_candidates: int = 100) -> list[Candidate]:
    """Label candidates of a figure (see the module docstring); at most ``max_candidates`` glyphs
    per ink polarity are examined in detail, the tallest first."""
    gray = canvas.gray
    H, W = gray.shape
    hmin = max(6, int(round(0.6 * canvas.text_h)))
    hmax = max(24, int(0.12 * min(H, W)))
    out: list[Candidate] = []
    masks = []
    # Dark ink: much darker than the paper (works on white and on light colour grounds).
    masks.append(("dark", gray < 140))
    # Light ink on dark ground (micrographs, radiology, dark mosaics): brighter than the local
    # mean (small glyphs are anti-aliased, a fixed threshold breaks their strokes).
    # Skipped when the figure has (almost) no dark ground to print on: under 0.5 % of its 4 x 4
    # blocks dark on average (dark text strokes alone darken few whole blocks).
    if _dark_ground_share(gray) >= 0.005:
        block = max(11, int(0.05 * min(H, W)) | 1)
        local = cv2.blur(gray, (block, block))
        masks.append(("light", (cv2.subtract(gray, local) > 40) & (gray > 110)))
    for polarity, m in masks:
        n, lab, st = _components(m)
        if n <= 1:
            continue
        x, y, w, h, a = st[1:, 0], st[1:, 1], st[1:, 2], st[1:, 3], st[1:, 4]
        # Dots of i/j: small blobs; merge into the glyph below them later.
        # (A bar narrower than a tenth of its height is a line or a tick, not an "I" or "l".)
        glyph = (h >= hmin) & (h <= hmax) & (w <= 1.6 * h) & (w >= np.maximum(2, 0.1 * h)) & (a >= 0.1 * w * h)
        idx = np.flatnonzero(glyph)
        if len(idx) == 0:
            continue
        idx = _prefilter(gray, m, lab, st, idx, hmin, hmax, polarity)
        if len(idx) == 0:
            continue
        if len(idx) > max_candidates:  # keep the tallest glyphs (labels are rarely smaller than text)
            idx = idx[np.argsort(-h[idx], kind="stable")[:max_candidates]]
        ctx = _context(x, y, w, h, idx)
        kept = np.flatnonzero(ctx["keep"])
        # Per glyph as Python ints / bools (one conversion per array, not per value).
        rows = zip(idx[kept].tolist(), *(ctx[c][kept].tolist() for c in
                                         ("gx1", "gy1", "gx2", "gy2", "lx1", "ly1", "lx2", "ly2", "dot", "word_gap")))
        for i, gx1, gy1, gx2, gy2, lx1, ly1, lx2, ly2, dot_j, word_gap in rows:
            gh = gy2 - gy1
            # Light glyphs must stand on a dark ground, dark glyphs on a light one.
            pad = max(2, int(0.3 * gh))
            rx1, ry1, rx2, ry2 = max(0, lx1 - pad), max(0, ly1 - pad), min(W, lx2 + pad), min(H, ly2 + pad)
            ring = gray[ry1:ry2, rx1:rx2]
            n_in = (ly2 - ly1) * (lx2 - lx1)
            n_ring = ring.size - n_in
            if n_ring <= 0:
                continue
            inner = gray[ly1:ly2, lx1:lx2]
            ring_mean = (float(ring.sum(dtype=np.int64)) - float(inner.sum(dtype=np.int64))) / n_ring
            if polarity == "light":
                if ring_mean > 110:
                    continue
                ink_ring = (np.count_nonzero(ring > 170) - np.count_nonzero(inner > 170)) / n_ring
            else:
                if ring_mean < 150:
                    continue
                ink_ring = (np.count_nonzero(ring < 140) - np.count_nonzero(inner < 140)) / n_ring
            # Isolation: how much of the ring is ink of the same polarity.
            if ink_ring > 0.25:
                continue
            isolation = (1.0 - ink_ring) * (0.6 if word_gap else 1.0)
            sub = lab[gy1:gy2, gx1:gx2]
            comp = sub == (i + 1)
            if dot_j >= 0:
                comp |= sub == (dot_j + 1)
            # Soft ink (anti-aliasing) inside the component's dilated footprint (float32, in place).
            gsub = gray[gy1:gy2, gx1:gx2]
            ink = gsub.astype(np.float32)
            if polarity == "dark":
                den = max(ring_mean - float(gsub.min()), 1.0)
                np.subtract(ring_mean, ink, out=ink)
            else:
                den = max(float(gsub.max()) - ring_mean, 1.0)
                ink -= ring_mean
            ink /= den
            np.maximum(ink, 0, out=ink)
            np.minimum(ink, 1, out=ink)
            ink *= cv2.dilate(comp.view(np.uint8), KERNEL3)
            # Coloured glyphs are mostly annotations (legend entries, markers); labels are
            # printed black, or white on pictures. (Channel max / min over the box, then the
            # glyph's pixels: the same values, in the same order, as per pixel over its pixels.)
            r, g, b = cv2.split(canvas.rgb[gy1:gy2, gx1:gx2])
            mx = cv2.max(cv2.max(r, g), b)[comp]
            if len(mx):
                mx = mx.astype(np.float32)
                sat = float(fmean((mx - cv2.min(cv2.min(r, g), b)[comp]) / np.maximum(mx, 1.0)))
                if sat > 0.35:
                    isolation *= 0.6
            out.append(Candidate(box=(gx1, gy1, gx2, gy2), label_box=(lx1, ly1, lx2, ly2), mask=ink,
                                 polarity=polarity, height=gy2 - gy1, isolation=isolation))
    return out


# ----------------------------------------------------------------------------------------------
# Reading


# Letters whose capital is the same shape as the small letter (once cropped and scaled).
SAME_SHAPE = "cosuvwxzp"


def _case_probs(pl: np.ndarray, letterness: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[n, 52] letter probabilities (a..z, A..Z) -> (upper [n, 26], lower [n, 26]) readings: the
    capital and the small reading of each letter, a bar counting as "I" (capitals) or "l"."""
    lower = pl[:, :26].copy()
    upper = pl[:, 26:].copy()
    for ch in SAME_SHAPE:
        k = LOWER.index(ch)
        upper[:, k] = lower[:, k] = pl[:, k] + pl[:, 26 + k]
    bar = pl[:, LOWER.index("l")] + pl[:, 26 + LOWER.index("i")]
    upper[:, LOWER.index("i")] = np.maximum(upper[:, LOWER.index("i")], bar)
    lower[:, LOWER.index("l")] = np.maximum(lower[:, LOWER.index("l")], bar)
    return upper * letterness[:, None], lower * letterness[:, None]


def read_glyph(cands: list[Candidate]) -> None:
    """Fill the readings of every candidate with the rendered-glyph classifier."""
    if not cands:
        return
    clf = classifier()
    vecs = glyph_vectors([c.mask for c in cands])
    scores = clf.class_scores(vecs)
    t = 25.0
    e = np.exp((scores - scores.max(axis=1, keepdims=True)) * t)
    p_all = e / e.sum(axis=1, keepdims=True)
    # How much a candidate looks like a letter at all (vs digits / symbols), softened.
    letterness = np.sqrt(p_all[:, :52].sum(axis=1))
    el = np.exp((scores[:, :52] - scores[:, :52].max(axis=1, keepdims=True)) * t)
    pl = el / el.sum(axis=1, keepdims=True)
    up, lo = _case_probs(pl, letterness)
    for i, c in enumerate(cands):
        c.p_upper, c.p_lower = up[i], lo[i]
        c.probs = np.maximum(up[i], lo[i])
        c.upper = float(pl[i, 26:].sum())


def tesseract_available() -> bool:
    return shutil.which("tesseract") is not None


def read_tesseract(cands: list[Candidate], cell: int = 48) -> None:
    """Read all candidates with ONE tesseract call: glyphs pasted on a sheet, one per line.

    ``probs`` becomes one-hot (times tesseract's confidence) on the letter read, zero when it read
    no single letter."""
    if not cands:
        return
    if not tesseract_available():
        raise RuntimeError("tesseract is not installed (apt-get install tesseract-ocr)")
    margin = cell // 2
    rows = []
    for c in cands:
        m = c.mask
        h, w = m.shape
        s = (cell * 0.7) / max(h, 1)
        g = cv2.resize((255 - m * 255).astype(np.uint8), (max(1, int(round(w * s))), max(1, int(round(h * s)))),
                       interpolation=cv2.INTER_CUBIC)
        rows.append(g)
    width = max(r.shape[1] for r in rows) + 2 * margin
    sheet = np.full((len(rows) * (cell + margin) + margin, width), 255, np.uint8)
    for k, g in enumerate(rows):
        y = margin + k * (cell + margin) + (cell - g.shape[0]) // 2
        sheet[y:y + g.shape[0], margin:margin + g.shape[1]] = g
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "sheet.png")
        cv2.imwrite(path, sheet)
        env = dict(os.environ, OMP_THREAD_LIMIT=os.environ.get("OMP_THREAD_LIMIT", "1"))
        res = subprocess.run(["tesseract", path, "stdout", "--psm", "6", "-l", "eng", "tsv"],
                             capture_output=True, text=True, env=env, timeout=120)
    for c in cands:
        c.probs = np.zeros(26, np.float32)
        c.p_upper = np.zeros(26, np.float32)
        c.p_lower = np.zeros(26, np.float32)
    for line in res.stdout.splitlines()[1:]:
        parts = line.split("\t")
        if len(parts) < 12 or parts[0] != "5":
            continue
        text = parts[11].strip().strip("()[].,:;")
        top, height = int(parts[7]), int(parts[9])
        k = int((top + height / 2 - margin) // (cell + margin))
        if not (0 <= k < len(cands)) or len(text) != 1:
            continue
        ch = text
        conf = max(0.0, min(1.0, float(parts[10]) / 100.0))
        if ch in "|1":
            ch = "l"
        if ch.lower() in LOWER:
            j = LOWER.index(ch.lower())
            conf = max(0.3, conf)
            c = cands[k]
            c.probs[j] = conf
            if ch.isupper() or ch.lower() in SAME_SHAPE:
                c.p_upper[j] = conf
            if ch.islower() or ch.lower() in SAME_SHAPE:
                c.p_lower[j] = conf
            if ch == "l":
                c.p_upper[LOWER.index("i")] = conf
            c.upper = 1.0 if ch.isupper() else 0.0


# ----------------------------------------------------------------------------------------------
# Selection


def select_labels(cands: list[Candidate], min_prob: float = 0.3, min_letters: int = 2,
                  size_tol: float = 0.25, exclude: set[int] | frozenset = frozenset(),
                  max_letters: int = 26) -> list[Label]:
    """The figure's label set: the best run of :func:`candidate_runs` ([] when there is none)."""
    runs = candidate_runs(cands, min_prob, min_letters, size_tol, exclude, max_letters, top=1)
    return runs[0] if runs else []


def candidate_runs(cands: list[Candidate], min_prob: float = 0.3, min_letters: int = 2,
                   size_tol: float = 0.25, exclude: set[int] | frozenset = frozenset(),
                   max_letters: int = 26, top: int = 4) -> list[list[Label]]:
    """Runs a, b, c ... of candidates of one size, best first (at most ``top``, all distinct).

    A run starts at an "a" candidate and grows letter by letter: the next letter goes to the
    candidate reading it best (reading probability x isolation) among those within ``size_tol`` of
    the run's median glyph height (in x-height units for small letters) and not next to a letter
    already taken; one letter may be missing inside the run when the one after it is read with
    confidence. A candidate aligned with a letter already taken (same top edge: a row of panels;
    same left edge: a column) reads with up to twice its certainty, and the nearest candidate
    continuing the reading order from the previous letter with 1.3 times. Missing letters are
    looked for again once the run is complete. ``exclude``: candidate indices not to use;
    ``max_letters``: runs stop before that letter. A run's score is
    :func:`_run_score`; runs shorter than ``min_letters`` are dropped."""
    index = [i for i, c in enumerate(cands) if c.probs is not None and i not in exclude]
    cands = [cands[i] for i in index]
    if len(cands) < min_letters:
        return []
    iso = np.array([c.isolation for c in cands])[:, None]
    readings = {"upper": np.stack([c.p_upper for c in cands]) * iso, "lower": np.stack([c.p_lower for c in cands]) * iso}
    heights = np.array([c.height for c in cands], np.float32)
    centers = np.array([((c.box[0] + c.box[2]) / 2, (c.box[1] + c.box[3]) / 2) for c in cands], np.float32)
    tops = np.array([(c.box[1], c.box[3]) for c in cands], np.float32)  # top and bottom edges
    lefts = np.array([c.label_box[0] for c in cands], np.float32)
    found: dict[tuple, tuple[float, str, dict]] = {}
    for case in ("upper", "lower"):
        # Compare glyph sizes in "x-height units": lower-case letters with ascenders/descenders
        # are taller than a, c, e ... ; capitals all share one height.
        rel = np.ones(26, np.float32) if case == "upper" else LOWER_REL
        Pc = readings[case]
        for a0 in np.flatnonzero(Pc[:, 0] >= min_prob / 2):
            chosen = _grow_run(Pc, heights, centers, int(a0), rel, size_tol, min_prob, tops, lefts, max_letters)
            if len(chosen) < min_letters:
                continue
            key = (case, tuple(sorted(chosen.items())))
            found[key] = (_run_score(Pc, heights, rel, chosen), case, chosen)
    out = []
    for score, case, chosen in sorted(found.values(), key=lambda t: -t[0])[:top]:
        P = readings[case]
        labels = []
        for k, i in sorted(chosen.items()):
            c = cands[i]
            ch = LOWER[k].upper() if case == "upper" else LOWER[k]
            labels.append(Label(text=ch, box=c.label_box, glyph_box=c.box, score=float(min(1.0, P[i, k])), index=k,
                                cand=index[i]))
        out.append(labels)
    return out


def _run_score(P, heights, rel, chosen: dict[int, int]) -> float:
    """Sum over the run of (reading certainty - 0.2), minus a penalty for unequal glyph sizes
    (a figure's labels are set in one font size)."""
    ks = list(chosen)
    ids = [chosen[k] for k in ks]
    certainty = float(sum(P[i, k] - 0.2 for k, i in chosen.items()))
    hn = np.log(heights[ids] / rel[ks])
    return certainty - 2.0 * len(ks) * float(hn.std())


# Height of each lower-case letter relative to the x-height (a, c, e, m, n, o, r, s, u, v, w, x, z).
LOWER_REL = np.array([1.0 if ch in "acemnorsuvwxz" else (1.25 if ch == "t" else 1.4) for ch in LOWER], np.float32)


def _grow_run(P, heights, centers, a0, rel, size_tol, min_prob, tops, lefts, max_letters=26) -> dict[int, int]:
    chosen = {0: a0}
    used = {a0}
    k, skipped = 1, False
    xh = heights / 1.0  # candidate heights
    while k < max_letters:
        ref = median1d([heights[i] / rel[kk] for kk, i in chosen.items()])
        pick = _next_letter(P, xh / rel[k], centers, used, chosen, k, ref, size_tol, min_prob, tops, lefts)
        if pick is None and not skipped and k + 1 < max_letters:
            after = _next_letter(P, xh / rel[k + 1], centers, used, chosen, k + 1, ref, size_tol, 0.75, tops, lefts)
            if after is not None:
                skipped = True
                k += 1
                pick = after
        if pick is None:
            break
        chosen[k] = pick
        used.add(pick)
        k += 1
    return _fill_gaps(P, heights, centers, chosen, rel, size_tol, min_prob, tops, lefts)


def _next_letter(P, heights, centers, used, chosen, k, ref, size_tol, min_prob, tops, lefts):
    """The candidate for letter ``k``: best reading x alignment bonus x reading-order bonus."""
    ok = (P[:, k] >= min_prob / 2) & (np.abs(np.log(heights / ref)) <= np.log1p(size_tol))
    if used:
        ok[list(used)] = False
    if not ok.any():
        return None
    taken = centers[list(chosen.values())]
    d = np.abs(centers[:, None, :] - taken[None, :, :]).max(axis=2).min(axis=1)
    ok &= d >= 1.5 * ref
    idx = np.flatnonzero(ok)
    if len(idx) == 0:
        return None
    eff = P[idx, k] * (1.0 + 0.5 * _alignments(tops[idx], lefts[idx], taken_tl(chosen, tops, lefts), ref))
    # Reading order: the next label is usually the nearest one to the right of the previous letter
    # on its row, or below it in its column.
    prev = max(chosen)
    if prev == k - 1:
        p = chosen[prev]
        tol = 0.35 * ref
        right = _same_row(tops[idx], tops[p:p + 1], tol)[:, 0] & (lefts[idx] > lefts[p])
        below = (np.abs(lefts[idx] - lefts[p]) <= tol) & (tops[idx, 0] > tops[p, 0])
        for flag, dist in ((right, lefts[idx] - lefts[p]), (below, tops[idx, 0] - tops[p, 0])):
            if flag.any():
                j = np.flatnonzero(flag)[np.argmin(dist[flag])]
                eff[j] *= 1.3
    j = int(np.argmax(eff))
    return int(idx[j]) if eff[j] >= min_prob else None


def _fill_gaps(P, heights, centers, chosen, rel, size_tol, min_prob, tops, lefts) -> dict[int, int]:
    """Letters missing inside the run, now that every other letter (and its row and column) is
    known: by reading as in the run, else by position alone when the letters before and after
    it share a row (or a column) and a letter-like glyph of the run's size sits between them."""
    for k in range(1, max(chosen)):
        if k in chosen:
            continue
        ref = median1d([heights[i] / rel[kk] for kk, i in chosen.items()])
        used = set(chosen.values())
        pick = _next_letter(P, heights / rel[k], centers, used, chosen, k, ref, size_tol,
                            min_prob, tops, lefts)
        if pick is None and k - 1 in chosen and k + 1 in chosen:
            a, b = chosen[k - 1], chosen[k + 1]
            tol = 0.35 * ref
            size_ok = np.abs(np.log(heights / rel[k] / ref)) <= np.log1p(size_tol)
            letter_like = P.sum(axis=1) >= 0.3
            if _same_row(tops[a:a + 1], tops[b:b + 1], tol)[0, 0]:
                between = _same_row(tops, tops[a:a + 1], tol)[:, 0] & (lefts > lefts[a]) & (lefts < lefts[b])
            elif abs(lefts[a] - lefts[b]) <= tol:
                between = (np.abs(lefts - lefts[a]) <= tol) & (tops[:, 0] > tops[a, 0]) & (tops[:, 0] < tops[b, 0])
            else:
                between = np.zeros(len(P), bool)
            ok = between & size_ok & letter_like
            ok[list(used)] = False
            if ok.sum() == 1:
                pick = int(np.flatnonzero(ok)[0])
        if pick is not None:
            chosen[k] = pick
    return chosen


def taken_tl(chosen, tops, lefts):
    ids = list(chosen.values())
    return tops[ids], lefts[ids]


def _same_row(a: np.ndarray, b: np.ndarray, tol: float) -> np.ndarray:
    """(top, bottom) rows a [n, 2] vs b [m, 2] -> [n, m]: tops or bottoms (baselines) level."""
    return (np.abs(a[:, None, 0] - b[None, :, 0]) <= tol) | (np.abs(a[:, None, 1] - b[None, :, 1]) <= tol)


def _alignments(tops, lefts, taken, ref) -> np.ndarray:
    """0, 1 or 2: is a candidate level with a taken letter (row) / left-aligned with one (column)?"""
    t_tops, t_lefts = taken
    tol = 0.35 * ref
    row = _same_row(tops, t_tops, tol).any(axis=1)
    col = (np.abs(lefts[:, None] - t_lefts[None, :]) <= tol).any(axis=1)
    return row.astype(np.float32) + col.astype(np.float32)


def find_labels(canvas: Canvas, reader: str = "glyph") -> tuple[list[Label], list[Candidate]]:
    cands = find_candidates(canvas)
    if reader == "tesseract":
        read_tesseract(cands)
    else:
        read_glyph(cands)
    return select_labels(cands), cands


# ----------------------------------------------------------------------------------------------
# Reading order


def reading_order(boxes: list[Box | list[int]]) -> list[int]:
    """Row-major order of boxes, robust to slight misalignment: a box joins the current row when
    it overlaps the row's vertical extent by at least half of the smaller height."""
    idx = sorted(range(len(boxes)), key=lambda i: (boxes[i][1], boxes[i][0]))
    rows: list[list[int]] = []
    extent: list[list[float]] = []
    for i in idx:
        x1, y1, x2, y2 = boxes[i]
        placed = False
        for r, (ry1, ry2) in enumerate(extent):
            ov = min(ry2, y2) - max(ry1, y1)
            if ov >= 0.5 * min(ry2 - ry1, y2 - y1):
                rows[r].append(i)
                extent[r] = [min(ry1, y1), max(ry2, y2)]
                placed = True
                break
        if not placed:
            rows.append([i])
            extent.append([y1, y2])
    order = []
    for r in sorted(range(len(rows)), key=lambda r: extent[r][0]):
        order.extend(sorted(rows[r], key=lambda i: boxes[i][0]))
    return order
