"""A small glyph classifier trained on rendered characters (no model file, nothing downloaded).

Templates are rendered once per process (about 0.3 s, cached) from the fonts that ship with
Pillow (Aileron, its built-in default) and, when present, the DejaVu fonts Debian installs
(``fonts-dejavu-core``: sans, bold, condensed, oblique, serif). Each glyph is rendered at several
sizes, binarised at several levels (thin/bold strokes), and at a low resolution (aliasing of the
8-12 px labels found on small figures), then normalised like a candidate (:func:`glyph_vectors`).

Classification is nearest-template by cosine similarity, scored per class by the best template.
Classes are the 52 Latin letters plus digits and symbols that act as "not a label" classes.
"""

from __future__ import annotations

import functools
import string
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

GRID = 20  # glyphs are normalised onto a GRID x GRID canvas
BLUR = 1.0  # Gaussian sigma on that canvas
LETTERS = string.ascii_lowercase + string.ascii_uppercase
REJECT = "0123456789()[]*+-#%&?@/|<>=~$"
CLASSES = LETTERS + REJECT

_FONT_DIRS = ["/usr/share/fonts/truetype/dejavu", "/usr/share/fonts/dejavu", "/usr/share/fonts/TTF"]
_FONT_FILES = ["DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSansCondensed-Bold.ttf", "DejaVuSans-Oblique.ttf",
               "DejaVuSans-BoldOblique.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf"]


def _fonts() -> list:
    """Font factories: Pillow's built-in scalable font first, then the DejaVu files found."""
    out = [lambda size: ImageFont.load_default(size)]
    for d in _FONT_DIRS:
        for name in _FONT_FILES:
            p = Path(d) / name
            if p.is_file():
                out.append(functools.partial(ImageFont.truetype, str(p)))
        if len(out) > 1:
            break
    return out


def _blur_matrix(n: int, sigma: float) -> np.ndarray:
    """[n, n] matrix of a 1-d Gaussian blur with OpenCV's default border (reflect-101) and its
    kernel size for float images (``GaussianBlur(a, (0, 0), sigma)`` is ``B @ a @ B.T``)."""
    k = cv2.getGaussianKernel(int(round(sigma * 4 * 2 + 1)) | 1, sigma, cv2.CV_64F).ravel()
    r = len(k) // 2
    B = np.zeros((n, n))
    for i in range(n):
        for t in range(-r, r + 1):
            j = i + t
            while j < 0 or j >= n:  # reflect-101: ... 2 1 | 0 1 2 ... n-2 n-1 | n-2 ...
                j = -j if j < 0 else 2 * (n - 1) - j
            B[i, j] += k[t + r]
    return B.astype(np.float32)


_BLUR = _blur_matrix(GRID, BLUR)


def glyph_vectors(masks) -> np.ndarray:
    """Glyph crops (bool or 0..1 ink) -> [n, GRID*GRID + 2] normalised feature vectors.

    Each glyph is scaled to fit the grid (aspect kept) and centred, area-averaged, blurred (stroke
    width and position tolerance), then zero-mean / unit-norm; the aspect ratio and the ink
    density are appended, weighted. The blur and normalisation run on all glyphs at once."""
    n = len(masks)
    grids = np.zeros((n, GRID, GRID), np.float32)
    shape = np.zeros((n, 2), np.float32)
    empty = np.zeros(n, bool)
    for i, mask in enumerate(masks):
        m = np.asarray(mask, dtype=np.float32)
        x, y, w, h = cv2.boundingRect((m > 0.25).view(np.uint8))  # the ink's bounding box
        if w == 0:
            empty[i] = True
            continue
        m = np.ascontiguousarray(m[y:y + h, x:x + w])
        s = (GRID - 2) / max(h, w)
        nh, nw = max(1, round(h * s)), max(1, round(w * s))
        oy, ox = (GRID - nh) // 2, (GRID - nw) // 2
        grids[i, oy:oy + nh, ox:ox + nw] = cv2.resize(m, (nw, nh), interpolation=cv2.INTER_LINEAR if s > 1 else cv2.INTER_AREA)
        shape[i] = (0.35 * np.tanh(np.log(h / w)), 0.25 * (float(fmean(m)) - 0.4))
    v = (_BLUR @ grids @ _BLUR.T).reshape(n, -1)
    v -= v.mean(axis=1, keepdims=True)
    v /= np.sqrt(np.einsum("ij,ij->i", v, v))[:, None] + 1e-6
    out = np.concatenate([v, shape], axis=1)
    out[empty] = 0.0
    return out


def fmean(a: np.ndarray):
    """``a.mean()`` of a non-empty float array, the same value (numpy's pairwise sum divided by
    the count, in the array's dtype) without ``ndarray.mean``'s Python-level overhead (this runs
    a few times per glyph)."""
    return np.add.reduce(a, axis=None) / a.size


def _render(ch: str, font) -> np.ndarray | None:
    """Anti-aliased rendering of one character (uint8, cropped to its ink) or None."""
    left, top, right, bottom = font.getbbox(ch)
    if right <= left or bottom <= top:
        return None
    img = Image.new("L", (right - left + 4, bottom - top + 4), 0)
    ImageDraw.Draw(img).text((2 - left, 2 - top), ch, fill=255, font=font)
    a = np.asarray(img)
    return a if a.max() > 0 else None


@functools.lru_cache(maxsize=1)
def templates() -> tuple[np.ndarray, np.ndarray]:
    """(features [n, d], class index [n]) of the rendered templates, sorted by class, the same
    number per class (cached per process)."""
    per_class: list[list[np.ndarray]] = [[] for _ in CLASSES]  # glyph masks
    for make in _fonts():
        for size, thrs in ((32, (80, 180)), (16, (96, 0)), (10, (100, 0))):
            try:
                font = make(size)
            except OSError:
                continue
            for ci, ch in enumerate(CLASSES):
                g = _render(ch, font)
                if g is None:
                    continue
                for thr in thrs:
                    per_class[ci].append(g >= thr if thr else g / 255.0)
    k = min(len(v) for v in per_class)
    feats = glyph_vectors([m for v in per_class for m in v[:k]])
    return feats, np.repeat(np.arange(len(CLASSES)), k)


# Rank of the template subspace the similarities are computed in (see GlyphClassifier).
RANK = 128


class GlyphClassifier:
    """Nearest-template classifier over :data:`CLASSES`.

    Similarities are computed in the span of the templates' top ``rank`` principal directions
    (uncentred, from the templates' Gram matrix): a candidate ``v`` and the templates are projected
    onto that basis, so ``v . t`` becomes ``(v P) . (t P)``, which differs from it by the product of
    the two residuals. The blurred 20 x 20 glyphs are smooth, so at rank 128 every template keeps
    all but at most 4 % of its norm, and on the 1,152 candidates of the development and EXSCLAIM
    figures the best similarity per class moves by at most 0.0004 (3x fewer multiply-adds than
    the full 402 dimensions). ``rank=None``: exact similarities."""

    def __init__(self, rank: int | None = RANK):
        self.feats, self.labels = templates()
        self.n_classes = len(CLASSES)
        # Templates in (template, class) order: the best template per class is then an
        # elementwise max over contiguous rows of n_classes (much faster than a max over the
        # short last axis of class-major order).
        per_class = len(self.feats) // self.n_classes
        feats = self.feats.reshape(self.n_classes, per_class, -1).transpose(1, 0, 2).reshape(len(self.feats), -1)
        self.basis = None
        if rank is not None and rank < feats.shape[1]:
            _, vecs = np.linalg.eigh((feats.T @ feats).astype(np.float64))
            self.basis = np.ascontiguousarray(vecs[:, ::-1][:, :rank], dtype=np.float32)  # [d, rank]
            feats = feats @ self.basis
        self.feats_t = np.ascontiguousarray(feats.T)  # [d or rank, n]: a contiguous right operand

    def class_scores(self, vectors: np.ndarray) -> np.ndarray:
        """[n, n_classes] best cosine similarity per class."""
        if len(vectors) == 0:
            return np.zeros((0, self.n_classes), np.float32)
        v = np.asarray(vectors, np.float32)
        if self.basis is not None:
            v = v @ self.basis
        sims = v @ self.feats_t
        return sims.reshape(len(vectors), -1, self.n_classes).max(axis=1)

    def letter_probs(self, vectors: np.ndarray, temperature: float = 25.0) -> np.ndarray:
        """[n, 26] case-folded letter probabilities (softmax over all classes, letters summed by case;
        mass on reject classes is dropped, so rows sum to < 1 for non-letters)."""
        s = self.class_scores(vectors)
        if len(s) == 0:
            return np.zeros((0, 26), np.float32)
        e = np.exp((s - s.max(axis=1, keepdims=True)) * temperature)
        p = e / e.sum(axis=1, keepdims=True)
        letters = p[:, :26] + p[:, 26:52]
        # "I", "l" and "1"/"|" are the same stroke: share their mass between i and l.
        stroke = p[:, LETTERS.index("I")] + p[:, LETTERS.index("l")] + p[:, CLASSES.index("1")] + p[:, CLASSES.index("|")]
        letters[:, 8] = np.maximum(letters[:, 8], stroke)
        letters[:, 11] = np.maximum(letters[:, 11], stroke)
        return letters

    def upper_probs(self, vectors: np.ndarray, temperature: float = 25.0) -> np.ndarray:
        """[n] probability mass on upper-case shapes among letters."""
        s = self.class_scores(vectors)
        if len(s) == 0:
            return np.zeros(0, np.float32)
        e = np.exp((s[:, :52] - s[:, :52].max(axis=1, keepdims=True)) * temperature)
        return e[:, 26:52].sum(axis=1) / e.sum(axis=1)


@functools.lru_cache(maxsize=1)
def classifier() -> GlyphClassifier:
    return GlyphClassifier()
