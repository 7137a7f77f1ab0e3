"""Learned candidate verifier for markers: every glyph-like component of a panel is judged by a
small CNN (marker type or "none", and where its tip is), instead of hand-set shape rules.

Why: the shape rules (:mod:`.detect`) were fitted to a few figures and reject most real markers
on unseen figures (white arrows beside text labels read as "clutter", notched or shadowed heads
fail the triangle test, thin call-outs fail the width profile). Candidates are cheap and nearly
complete; judging them is where learning helps.

Candidates (:func:`candidates`): connected components of the colour mask (chroma; on colourful
panels rare hues only), the white and the black mask (extreme grey levels that stand out from
the local mean, the white one grown by hysteresis with ``verify_hyst``; see
:func:`.detect._extreme_masks`), of plausible size, not at the panel edge;
with ``verify_open`` also those of the white and black masks opened by a small disc (a marker
touching a text label or an outline is cut free).

Input per candidate (:func:`features`): a square window around it (``window`` x its long side),
resized to ``CROP`` x ``CROP``, three channels: the component itself, the grey image (normalised
in the window) and every component of the same mask in the window (neighbours: text beside an
arrowhead, texture); plus 6 numbers (which mask, size relative to the panel, fill, aspect).

Network (:class:`VerifierNet`): 3 conv blocks (16-32-64 channels) and two heads: class logits
over :data:`CLASSES` and the tip as (x, y) in the window, in [0, 1].

Training (:func:`train_verifier`): candidates of synthetic panels - real image panels (VQA-RAD
radiographs of the ``tune`` half, CC0; EXSCLAIM micrographs; procedural micrographs) with markers
drawn in the real styles (:func:`.synthetic.overlay` ``varied=True``, plus drop shadows and text
labels right beside the markers) - and of the hand-labelled tune figures' image panels (their
labelled markers are positives, every other component a negative). A candidate whose box has IoU
>= 0.5 with a drawn marker takes its type and tip; one with IoU in (0.1, 0.5) is left out (a
part of a marker); the rest are "none".

Inference (:func:`verified_proposals`): candidates with marker probability >= ``verify_score``,
type = the most likely marker class, tip = the predicted point moved onto the glyph (its nearest
pixel), direction = from the glyph's centroid to the tip.
"""

from __future__ import annotations

import json
import logging
import math
import time
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from ..digest import sha256_file

log = logging.getLogger(__name__)

__all__ = ["CLASSES", "CROP", "FORMAT", "DEFAULT_WEIGHTS", "candidates", "features", "VerifierNet",
           "load_verifier", "verified_proposals", "train_verifier"]

FORMAT = "panel2patch-marker-verifier/1"
CLASSES = ("none", "arrow", "arrowhead", "asterisk", "other")
CROP = 32
WINDOW = 1.5
MASKS = ("colour", "white", "black")
DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "marker_verifier.pt"
MAX_CANDIDATES = 400


# --------------------------------------------------------------------------- candidates

def candidates(rgb: np.ndarray, p: dict) -> tuple[list[dict], dict]:
    """Glyph-like components of one panel (working scale). Returns (candidates, planes): each
    candidate ``{"bbox", "mask", "label", "area"}``; ``planes[mask] = (labels, stats)``.

    With ``p["verify_open"]`` > 0 the white and black masks are also opened by a disc that wide
    (planes ``white+open``, ``black+open``): a marker joined to a text label, an outline or another
    marker by a thin stroke is one component of the mask but its own component of the opened mask.
    Opened components with the box of a component already taken are not repeated."""
    from .detect import _colour_mask, _extreme_masks, chroma_of

    H, W = rgb.shape[:2]
    short = min(H, W)
    lo_size = max(p.get("verify_min_size", p["min_size"]), p["min_frac"] * short)
    hi_size = p["max_frac"] * short
    chroma = chroma_of(rgb)
    cmask, _ = _colour_mask(rgb, p, chroma)
    masks = [("colour", cmask)] + _extreme_masks(rgb, p, chroma, hyst=int(p.get("verify_hyst", 0)))
    e = max(2, int(0.02 * short))
    k_open = int(p.get("verify_open", 0))
    if k_open:
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k_open, k_open))
        masks += [(f"{name}+open", cv2.morphologyEx(mask, cv2.MORPH_OPEN, disc)) for name, mask in masks
                  if name != "colour"]
    out, planes, seen = [], {}, set()
    for name, mask in masks:
        if not mask.any():
            continue
        n, lab, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        planes[name] = (lab, stats)
        x, y, w, h, a = (stats[1:, k] for k in range(5))
        long_side = np.maximum(w, h)
        ok = (a >= 6) & (long_side >= lo_size) & (long_side <= hi_size) & \
             (x >= e) & (y >= e) & (x + w <= W - e) & (y + h <= H - e)
        ids = np.nonzero(ok)[0] + 1
        if len(ids) > MAX_CANDIDATES:  # keep the largest: texture gives thousands of specks
            ids = ids[np.argsort(-stats[ids, 4], kind="stable")[:MAX_CANDIDATES]]
        for i in ids:
            x_, y_, w_, h_, a_ = (int(v) for v in stats[i])
            if name.endswith("+open") and (x_, y_, w_, h_) in seen:
                continue
            seen.add((x_, y_, w_, h_))
            out.append({"bbox": [x_, y_, x_ + w_, y_ + h_], "mask": name, "label": int(i), "area": a_})
    return out, planes


def _window(b) -> tuple[float, float, float]:
    cx, cy = (b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0
    side = WINDOW * max(b[2] - b[0], b[3] - b[1]) + 4
    return cx - side / 2, cy - side / 2, side


def _warp(img: np.ndarray, x0: float, y0: float, side: float, interp) -> np.ndarray:
    s = CROP / side
    M = np.float32([[s, 0, -x0 * s], [0, s, -y0 * s]])
    return cv2.warpAffine(img, M, (CROP, CROP), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def features(rgb: np.ndarray, cands: list[dict], planes: dict) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3, CROP, CROP) float32 windows and (N, 6) float32 numbers for the candidates."""
    n = len(cands)
    X = np.zeros((n, 3, CROP, CROP), np.float32)
    V = np.zeros((n, 6), np.float32)
    if not n:
        return X, V
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    short = float(min(rgb.shape[:2]))
    for k, c in enumerate(cands):
        lab, _ = planes[c["mask"]]
        x0, y0, side = _window(c["bbox"])
        bx0, by0 = max(0, int(math.floor(x0))), max(0, int(math.floor(y0)))
        bx1 = min(rgb.shape[1], int(math.ceil(x0 + side)) + 1)
        by1 = min(rgb.shape[0], int(math.ceil(y0 + side)) + 1)
        sub = lab[by0:by1, bx0:bx1]
        interp = cv2.INTER_AREA if side > CROP else cv2.INTER_LINEAR
        X[k, 0] = _warp((sub == c["label"]).astype(np.float32), x0 - bx0, y0 - by0, side, interp)
        gw = _warp(gray[by0:by1, bx0:bx1], x0 - bx0, y0 - by0, side, interp)
        X[k, 1] = (gw - gw.mean()) / (gw.std() + 8.0)
        X[k, 2] = _warp((sub > 0).astype(np.float32), x0 - bx0, y0 - by0, side, interp)  # the whole mask
        b = c["bbox"]
        w, h = b[2] - b[0], b[3] - b[1]
        V[k, MASKS.index(_base_mask(c["mask"]))] = 1.0
        V[k, 3] = max(w, h) / short
        V[k, 4] = c["area"] / max(1.0, w * h)
        V[k, 5] = min(w, h) / max(1.0, max(w, h))
    return X, V


# --------------------------------------------------------------------------- network

def _net():
    import torch
    from torch import nn

    class VerifierNet(nn.Module):
        def __init__(self, arch: str = "double"):
            super().__init__()
            if arch not in ARCHS:
                raise ValueError(f"unknown verifier arch {arch!r} (one of {ARCHS})")

            def block(i, o):
                convs = [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]
                if arch == "double":
                    convs += [nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True)]
                return nn.Sequential(*convs, nn.MaxPool2d(2))

            self.body = nn.Sequential(block(3, 16), block(16, 32), block(32, 64))
            self.fc = nn.Sequential(nn.Linear(64 * (CROP // 8) ** 2 + 6, 96), nn.ReLU(inplace=True))
            self.cls = nn.Linear(96, len(CLASSES))
            self.tip = nn.Linear(96, 2)

        def forward(self, x, v):
            h = self.fc(torch.cat([self.body(x).flatten(1), v], 1))
            return self.cls(h), torch.sigmoid(self.tip(h))

    return VerifierNet


ARCHS = ("double", "single")  # two 3x3 convolutions per block (10 M multiply-adds a candidate) or one (2.8 M)


def VerifierNet(arch: str = "double"):  # noqa: N802 - a class built lazily so that torch is imported only when used
    return _net()(arch)


@lru_cache(maxsize=4)
def _load(path: str, mtime: float):
    import torch

    obj = torch.load(path, map_location="cpu", weights_only=True)
    if obj.get("format") != FORMAT:
        raise ValueError(f"{path} is not a marker verifier ({obj.get('format')!r}, expected {FORMAT!r})")
    net = VerifierNet(obj.get("meta", {}).get("arch", "double"))
    net.load_state_dict(obj["state_dict"])
    net.eval()
    _fuse_batchnorm(net)
    return net.to(memory_format=torch.channels_last)  # 1.5-1.8x faster convolutions on CPU


def _fuse_batchnorm(net) -> None:
    """Fold each eval-mode BatchNorm into the convolution before it (the same function, one layer
    less per block: inference only)."""
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    for seq in net.body:
        for k in range(len(seq) - 1):
            if isinstance(seq[k], nn.Conv2d) and isinstance(seq[k + 1], nn.BatchNorm2d):
                seq[k], seq[k + 1] = fuse_conv_bn_eval(seq[k], seq[k + 1]), nn.Identity()


def load_verifier(path: str | Path | None = None):
    """The verifier at ``path`` (default: the weights shipped in the package), loaded once per process."""
    p = Path(path) if path else DEFAULT_WEIGHTS
    if not p.exists():
        raise FileNotFoundError(f"marker verifier weights not found: {p}")
    return _load(str(p.resolve()), p.stat().st_mtime)


def predict(net, X: np.ndarray, V: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities (N, len(CLASSES)) and tips in the window (N, 2) in [0, 1]."""
    import torch

    if not len(X):
        return np.zeros((0, len(CLASSES)), np.float32), np.zeros((0, 2), np.float32)
    with torch.inference_mode():
        logits, tip = net(torch.from_numpy(X).contiguous(memory_format=torch.channels_last), torch.from_numpy(V))
        return torch.softmax(logits, 1).numpy(), tip.numpy()


def _snap(tip, lab: np.ndarray, label: int, bbox) -> tuple[np.ndarray, np.ndarray]:
    """Predicted tip moved onto the glyph's nearest pixel; direction from the glyph centroid to it."""
    x1, y1, x2, y2 = bbox
    ys, xs = np.nonzero(lab[y1:y2, x1:x2] == label)
    pts = np.stack([xs + x1, ys + y1], 1).astype(np.float64)
    d2 = ((pts - tip) ** 2).sum(1)
    t = pts[int(np.argmin(d2))]
    c = pts.mean(0)
    d = t - c
    n = np.hypot(*d)
    return t, (d / n if n > 0 else np.array([0.0, 0.0]))


def _snap_unopened(t: np.ndarray, d: np.ndarray, c: dict, planes: dict, k: int) -> np.ndarray:
    """For a candidate of an opened mask, whose tip ``t`` (direction ``d``) :func:`_snap` put on
    the opened component: the tip moved out to where the glyph as drawn ends, i.e. the pixel of the
    unopened mask farthest along ``d`` among those within ``k`` px of the component and ``2 k`` px
    of ``t`` (the opening cut the point off)."""
    if not d.any():
        return t
    x1, y1, x2, y2 = c["bbox"]
    lab, _ = planes[c["mask"]]
    base, _ = planes[_base_mask(c["mask"])]
    H, W = base.shape
    X1, Y1, X2, Y2 = max(0, x1 - k), max(0, y1 - k), min(W, x2 + k), min(H, y2 + k)
    comp = (lab[Y1:Y2, X1:X2] == c["label"]).astype(np.uint8)
    near = cv2.dilate(comp, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1))) > 0
    ys, xs = np.nonzero(near & (base[Y1:Y2, X1:X2] > 0))
    pts = np.stack([xs + X1, ys + Y1], 1).astype(np.float64)
    pts = pts[((pts - t) ** 2).sum(1) <= (2 * k) ** 2]
    return pts[int(np.argmax(pts @ d))] if len(pts) else t


def _base_mask(name: str) -> str:
    """``"white+open"`` -> ``"white"``: the mask an opened plane was made from."""
    return name.split("+")[0]


def verified_proposals(rgb: np.ndarray, params: dict) -> list[dict]:
    """The ``"verified"`` source: candidates the verifier calls a marker (prob >= ``verify_score``)."""
    from .detect import colour_name

    net = load_verifier(params.get("verifier"))
    cands, planes = candidates(rgb, params)
    X, V = features(rgb, cands, planes)
    prob, tips = predict(net, X, V)
    out = []
    for c, pr, tp in zip(cands, prob, tips):
        score = 1.0 - float(pr[0])
        if score < params["verify_score"]:
            continue
        typ = CLASSES[1 + int(np.argmax(pr[1:]))]
        b = c["bbox"]
        lab, _ = planes[c["mask"]]
        tip = d = None
        if typ != "asterisk":
            x0, y0, side = _window(b)
            t, d = _snap(np.array([x0 + tp[0] * side, y0 + tp[1] * side]), lab, c["label"], b)
            if c["mask"].endswith("+open"):  # the opening blunts the point: snap onto the glyph as drawn
                t = _snap_unopened(t, d, c, planes, int(params.get("verify_open", 0)))
            tip = [float(t[0]), float(t[1])]
            d = [float(d[0]), float(d[1])]
        if c["mask"] == "colour":
            comp = lab[b[1]:b[3], b[0]:b[2]] == c["label"]
            col = colour_name(rgb[b[1]:b[3], b[0]:b[2]][comp].mean(axis=0))
        else:
            col = _base_mask(c["mask"])
        out.append({"type": typ, "bbox": list(b), "colour": col, "tip": tip, "direction": d,
                    "score": round(score, 4), "source": "verified"})
    return _drop_contained(out)


def _drop_contained(markers: list, frac: float = 0.6) -> list:
    """Drop a marker whose box lies mostly (>= ``frac`` of its area) inside a better marker's box:
    the drop shadow or outline of a glyph (another mask) is not a second marker."""
    kept: list = []
    for m in sorted(markers, key=lambda m: -m["score"]):
        b = m["bbox"]
        area = max(1, (b[2] - b[0]) * (b[3] - b[1]))
        if any(max(0, min(b[2], k["bbox"][2]) - max(b[0], k["bbox"][0])) *
               max(0, min(b[3], k["bbox"][3]) - max(b[1], k["bbox"][1])) >= frac * area for k in kept):
            continue
        kept.append(m)
    return kept


# --------------------------------------------------------------------------- training data

_WORDS = ["Fluid", "Dilated bowel", "Stent", "L", "R", "T2", "bleed", "oedema", "Lumen", "x40", "IVC", "12",
          "mass", "A", "b", "Valvulae", "gas", "Rim", "Fracture", "Free gas", "line", "Effusion", "Caecal pole",
          "Normal", "Air", "Callus", "barely visible", "Apex", "Lesion", "Cyst", "Pneumothorax", "ET tube"]


def _tail_label(img: np.ndarray, m: dict, rng) -> None:
    """A bold text label (one or two lines, often with a dark drop shadow) at the tail of an arrow,
    on its axis a few pixels beyond the glyph: the commonest teaching-image style ("Fracture" ->
    the finding), drawn in place. Nothing is drawn where the label would leave the image."""
    from PIL import Image, ImageDraw

    from ..layout.glyphs import _fonts

    b = m["bbox"]
    cx, cy = (b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0
    d = np.array([m["tip"][0] - cx, m["tip"][1] - cy])
    n = float(np.hypot(*d))
    if n < 1:
        return
    d /= n
    length = max(b[2] - b[0], b[3] - b[1])
    fonts = _fonts()
    font = fonts[-1 if len(fonts) > 1 and rng.random() < 0.7 else int(rng.integers(len(fonts)))](
        max(9, int(length * float(rng.uniform(0.16, 0.45)))))
    words = str(rng.choice(_WORDS)).split(" ")
    text = "\n".join(words) if len(words) > 1 and rng.random() < 0.5 else " ".join(words)
    pil = Image.fromarray(img)
    draw = ImageDraw.Draw(pil)
    l, t, r, btm = draw.multiline_textbbox((0, 0), text, font=font, align="center")
    tw, th = r - l, btm - t
    # the tail: the glyph's far end from the tip along the axis (its box's extent there)
    half = abs(d[0]) * (b[2] - b[0]) / 2 + abs(d[1]) * (b[3] - b[1]) / 2
    gap = float(rng.uniform(1, 7))
    reach = half + gap + abs(d[0]) * tw / 2 + abs(d[1]) * th / 2
    tx, ty = cx - d[0] * reach - tw / 2 - l, cy - d[1] * reach - th / 2 - t
    H, W = img.shape[:2]
    if tx + l < 2 or ty + t < 2 or tx + r > W - 2 or ty + btm > H - 2:
        return
    from .synthetic import COLOURS

    colour = COLOURS[str(rng.choice(["white", "white", "white", "yellow", "black"]))]
    if colour != COLOURS["black"] and rng.random() < 0.5:
        off = int(rng.integers(1, 3))
        draw.multiline_text((tx + off, ty + off), text, font=font, fill=(20, 20, 20), align="center")
    draw.multiline_text((tx, ty), text, font=font, fill=colour, align="center")
    img[:] = np.asarray(pil)


def _add_real_styles(img: np.ndarray, markers: list, rng) -> np.ndarray:
    """Real teaching / figure styles the drawing code lacks: a text label at the tail of some
    arrows (:func:`_tail_label`) or right beside some markers (in the marker's colour or
    another), drawn after them."""
    from .synthetic import COLOURS, draw_text

    H, W = img.shape[:2]
    words = _WORDS
    for m in markers:
        if m["type"] in ("arrow", "other") and m.get("tip") and rng.random() < 0.45:
            _tail_label(img, m, rng)
            continue
        if rng.random() > 0.45:
            continue
        b = m["bbox"]
        size = max(b[2] - b[0], b[3] - b[1])
        scale = float(rng.uniform(0.25, 0.7)) * max(12.0, size) / 22.0
        text = str(rng.choice(words))
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
        side = int(rng.integers(4))
        gap = float(rng.uniform(2, 10))
        if side == 0:
            org = (b[2] + gap, (b[1] + b[3]) / 2 + th / 2)
        elif side == 1:
            org = (b[0] - gap - tw, (b[1] + b[3]) / 2 + th / 2)
        elif side == 2:
            org = ((b[0] + b[2]) / 2 - tw / 2, b[1] - gap)
        else:
            org = ((b[0] + b[2]) / 2 - tw / 2, b[3] + gap + th)
        if org[0] < 2 or org[1] - th < 2 or org[0] + tw > W - 2 or org[1] > H - 2:
            continue
        colour = COLOURS[str(rng.choice(["white", "white", "yellow", "black"]))]
        draw_text(img, org, text, scale, colour, thickness=int(rng.integers(1, 3)))
    return img


def _distractors(img: np.ndarray, rng) -> None:
    """Annotation that is not a marker, drawn in place (teaching images and figures carry it
    beside markers): outlines (ellipses, circles, rectangles), dashed and zig-zag lines, thin
    connecting lines, translucent shading."""
    from .synthetic import COLOURS

    H, W = img.shape[:2]
    short = min(H, W)
    names = list(COLOURS)
    for _ in range(int(rng.integers(0, 4))):
        col = COLOURS[str(rng.choice(names))]
        t = int(rng.integers(1, 4))
        kind = int(rng.choice(6, p=[0.15, 0.15, 0.3, 0.1, 0.15, 0.15]))  # dashed lines are the commonest look-alike
        cx, cy = float(rng.uniform(0.1, 0.9) * W), float(rng.uniform(0.1, 0.9) * H)
        r = float(rng.uniform(0.04, 0.3) * short)
        if kind == 0:
            cv2.ellipse(img, (int(cx), int(cy)), (int(r), int(r * rng.uniform(0.4, 1.0))), float(rng.uniform(0, 180)),
                        0, 360, col, t, cv2.LINE_AA)
        elif kind == 1:
            cv2.rectangle(img, (int(cx - r), int(cy - r * 0.7)), (int(cx + r), int(cy + r * 0.7)), col, t)
        elif kind == 2:  # dashed line
            ang = float(rng.uniform(0, math.pi))
            d = np.array([math.cos(ang), math.sin(ang)])
            dash, gap = float(rng.uniform(4, 14)), float(rng.uniform(3, 10))
            s = -r * 1.5
            while s < r * 1.5:
                a = np.array([cx, cy]) + d * s
                b = np.array([cx, cy]) + d * min(s + dash, r * 1.5)
                cv2.line(img, tuple(int(v) for v in a), tuple(int(v) for v in b), col, t, cv2.LINE_AA)
                s += dash + gap
        elif kind == 3:  # zig-zag
            pts = [(cx + k * r / 4, cy + (r / 6 if k % 2 else -r / 6)) for k in range(-3, 4)]
            cv2.polylines(img, [np.int32(pts)], False, col, t, cv2.LINE_AA)
        elif kind == 4:  # a connecting line
            x2, y2 = float(rng.uniform(0, W)), float(rng.uniform(0, H))
            cv2.line(img, (int(cx), int(cy)), (int(x2), int(y2)), col, t, cv2.LINE_AA)
        else:  # translucent shading blob
            mask = np.zeros((H, W), np.uint8)
            cv2.ellipse(mask, (int(cx), int(cy)), (int(r), int(r * rng.uniform(0.5, 1.0))), float(rng.uniform(0, 180)),
                        0, 360, 255, -1)
            a = (mask.astype(np.float32) / 255.0 * float(rng.uniform(0.2, 0.5)))[..., None]
            img[:] = (img * (1 - a) + np.array(col, np.float32) * a).astype(np.uint8)


def _shadowed(a: np.ndarray, rng, types) -> tuple[np.ndarray, list]:
    """Markers (and text) with a soft dark drop shadow, as on radiology teaching images: the
    drawn pixels are found by difference, and the panel under their shifted copy is darkened."""
    from .synthetic import overlay

    drawn, markers = overlay(a, rng, n=(1, 4), types=types, varied=True)
    glyph = (np.abs(drawn.astype(np.int16) - a.astype(np.int16)).max(axis=2) > 10).astype(np.float32)
    off = int(rng.integers(1, 4))
    sh = np.roll(np.roll(glyph, off, 0), off, 1)
    sh = cv2.GaussianBlur(sh, (0, 0), float(rng.uniform(0.6, 1.8)))
    out = drawn.astype(np.float32) * (1 - float(rng.uniform(0.5, 0.85)) * sh * (1 - glyph))[..., None]
    return out.clip(0, 255).astype(np.uint8), markers


def _assign(cands: list[dict], markers: list[dict]):
    """(class index, tip or None, keep) per candidate, from drawn/labelled markers."""
    from ..evaluate.boxes import iou

    out = []
    for c in cands:
        best, bj = 0.0, -1
        for j, m in enumerate(markers):
            v = iou(c["bbox"], m["bbox"])
            if v > best:
                best, bj = v, j
        if best >= 0.5:
            m = markers[bj]
            out.append((CLASSES.index(m["type"]), m.get("tip"), True))
        elif best > 0.1:
            out.append((0, None, False))
        else:
            out.append((0, None, True))
    return out


def _samples(rgb: np.ndarray, markers: list[dict], p: dict, rng, neg_keep: float):
    """Windows, numbers, classes, tips (window units; NaN when none) for one panel."""
    cands, planes = candidates(rgb, p)
    lab = _assign(cands, markers)
    keep = [k for k, (cl, _, ok) in enumerate(lab) if ok and (cl > 0 or rng.random() < neg_keep)]
    cands = [cands[k] for k in keep]
    lab = [lab[k] for k in keep]
    X, V = features(rgb, cands, planes)
    y = np.array([cl for cl, _, _ in lab], np.int64)
    T = np.full((len(cands), 2), np.nan, np.float32)
    for k, (c, (cl, tip, _)) in enumerate(zip(cands, lab)):
        if tip is not None and cl in (1, 2, 4):
            x0, y0, side = _window(c["bbox"])
            T[k] = [(tip[0] - x0) / side, (tip[1] - y0) / side]
    return X, V, y, T


def build_bank(src: dict, seed: int = 0) -> list:
    """Image panels that markers are drawn on (:func:`.learned.build_bank`): VQA-RAD radiographs
    of the evaluation set's ``tune`` articles only (CC0; :func:`panel2patch.evaluate.split.split_of`
    of the file stem) and procedural micrographs and blots; no EXSCLAIM (it is evaluation data)."""
    from ..evaluate.split import split_of
    from .learned import build_bank as bank

    return bank({"vqa_rad": src.get("vqa_rad"), "max_side": int(src.get("max_side", 640)), "limit": src.get("limit"),
                 "textures": int(src.get("textures", 60))}, seed, keep=lambda name: split_of(Path(name).stem) == "tune")


def build_dataset(n_panels: int, seed: int, sources: dict, real: list | None = None, neg_keep: float = 0.35,
                  progress: bool = True, verify_open: int = 0, verify_hyst: int = 0,
                  scale_jitter: tuple[float, float] | None = None):
    """Synthetic (and real tune) training samples as numpy arrays; ``verify_open`` /
    ``verify_hyst``: candidates of the opened masks / of the white mask grown by hysteresis, as at
    inference (:func:`candidates`; the shipped weights were trained with both 0).
    ``scale_jitter`` (lo, hi): every panel is resized by a factor drawn from that range before its
    candidates are taken (markers and their strokes at other resolutions)."""
    from .detect import DEFAULTS
    from .learned import CLASSES as DET_CLASSES, MarkerPanels
    from .synthetic import overlay

    p = dict(DEFAULTS, verify_open=int(verify_open), verify_hyst=int(verify_hyst))
    bank = build_bank(sources, seed)
    ds = MarkerPanels(bank, n_panels, seed=seed, image_size=int(sources.get("image_size", 420)), max_markers=6)
    parts = []
    t0 = time.time()
    for i in range(n_panels):
        rng = np.random.default_rng([seed, 7, i])
        img, markers = ds.panel(i)
        r = rng.random()
        if r < 0.3:  # drop-shadowed white/coloured markers
            img, markers = _shadowed(img, rng, DET_CLASSES[1:])
        elif r < 0.4 and not markers:
            img, markers = overlay(img, rng, n=(1, 4), types=DET_CLASSES[1:], varied=True)
        img = np.array(img, dtype=np.uint8, copy=True)
        if rng.random() < 0.7:  # under the markers: drawn before them would hide them, so keep it away
            boxes = [m["bbox"] for m in markers]
            keep = img.copy()
            _distractors(img, rng)
            for b in boxes:  # the markers stay as drawn
                x1, y1, x2, y2 = (int(v) for v in b)
                img[max(0, y1 - 1):y2 + 1, max(0, x1 - 1):x2 + 1] = keep[max(0, y1 - 1):y2 + 1, max(0, x1 - 1):x2 + 1]
        img = _add_real_styles(img, markers, rng)
        if scale_jitter:
            img, markers = _rescaled(img, markers, float(rng.uniform(*scale_jitter)))
        parts.append(_samples(img, markers, p, rng, neg_keep))
        if progress and (i + 1) % 200 == 0:
            log.info("verifier data: %d/%d panels, %.0f s", i + 1, n_panels, time.time() - t0)
    for img, markers, reps in real or []:
        rng = np.random.default_rng([seed, 11, len(parts)])
        for _ in range(reps):
            im, ms = _rescaled(img, markers, float(rng.uniform(*scale_jitter))) if scale_jitter else (img, markers)
            parts.append(_samples(im, ms, p, rng, neg_keep))
    X = np.concatenate([q[0] for q in parts])
    V = np.concatenate([q[1] for q in parts])
    y = np.concatenate([q[2] for q in parts])
    T = np.concatenate([q[3] for q in parts])
    return X, V, y, T


def _rescaled(img: np.ndarray, markers: list[dict], f: float) -> tuple[np.ndarray, list[dict]]:
    """A panel and its markers (boxes, tips) resized by ``f``."""
    H, W = img.shape[:2]
    out = cv2.resize(img, (max(1, round(W * f)), max(1, round(H * f))),
                     interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)
    fx, fy = out.shape[1] / W, out.shape[0] / H
    ms = [{**m, "bbox": [m["bbox"][0] * fx, m["bbox"][1] * fy, m["bbox"][2] * fx, m["bbox"][3] * fy],
           **({"tip": [m["tip"][0] * fx, m["tip"][1] * fy]} if m.get("tip") is not None else {})} for m in markers]
    return out, ms


def real_tune_panels(records: list[dict], reps: int = 4) -> list:
    """(image panel RGB, markers in panel pixels, repeats) of labelled tune figures: each labelled
    image panel of a record (``panels`` boxes; the whole image where none) with the markers inside it."""
    from PIL import Image

    from ..ingest.images import to_rgb

    out = []
    for r in records:
        img = np.asarray(to_rgb(Image.open(r["path"])))
        boxes = [p["bbox"] for p in r.get("panels") or []] or [[0, 0, img.shape[1], img.shape[0]]]
        for b in boxes:
            x1, y1, x2, y2 = (int(v) for v in b)
            inside = [m for m in r.get("markers") or [] if m["bbox"][0] >= x1 - 2 and m["bbox"][1] >= y1 - 2
                      and m["bbox"][2] <= x2 + 2 and m["bbox"][3] <= y2 + 2]
            if x2 - x1 < 32 or y2 - y1 < 32:
                continue
            ms = [{"type": m["type"], "bbox": [m["bbox"][0] - x1, m["bbox"][1] - y1, m["bbox"][2] - x1, m["bbox"][3] - y1],
                   "tip": [m["tip"][0] - x1, m["tip"][1] - y1] if m.get("tip") else None} for m in inside]
            panel = np.ascontiguousarray(img[y1:y2, x1:x2])
            s = min(1.0, 900 / max(panel.shape[:2]))
            if s < 1:
                panel = cv2.resize(panel, (round(panel.shape[1] * s), round(panel.shape[0] * s)), interpolation=cv2.INTER_AREA)
                ms = [{**m, "bbox": [v * s for v in m["bbox"]], "tip": [v * s for v in m["tip"]] if m["tip"] else None} for m in ms]
            out.append((panel, ms, reps if ms else 1))
    return out


def train_verifier(out_path: str | Path, n_panels: int = 3000, epochs: int = 8, seed: int = 0,
                   sources: dict | None = None, real: list | None = None, batch: int = 256, lr: float = 2e-3,
                   progress: bool = True, real_source: str | None = None, arch: str = "double",
                   verify_open: int = 0, verify_hyst: int = 0, scale_jitter: tuple[float, float] | None = None) -> dict:
    """Build the data, train, and write ``out_path`` (.pt: state dict + format + meta) and a
    ``.json`` sidecar (sha256, data, losses, seconds)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    t0 = time.time()
    X, V, y, T = build_dataset(n_panels, seed, sources or {}, real, progress=progress, verify_open=verify_open,
                               verify_hyst=verify_hyst, scale_jitter=scale_jitter)
    t_data = time.time() - t0
    counts = np.bincount(y, minlength=len(CLASSES)).tolist()
    log.info("verifier data: %d samples %s in %.0f s", len(y), dict(zip(CLASSES, counts)), t_data)
    Xt, Vt, yt, Tt = (torch.from_numpy(a) for a in (X, V, y, T))
    net = VerifierNet(arch)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * math.ceil(len(y) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    g = torch.Generator().manual_seed(seed)
    losses = []
    net.train()
    for ep in range(epochs):
        perm = torch.randperm(len(y), generator=g)
        tot = n = 0.0
        for k in range(0, len(y), batch):
            idx = perm[k:k + batch]
            xb = Xt[idx]
            if torch.rand(1, generator=g).item() < 0.5:  # flips and transposes keep classes; tips follow
                xb = xb.flip(3)
                tb = Tt[idx].clone()
                tb[:, 0] = 1 - tb[:, 0]
            else:
                tb = Tt[idx]
            logits, tip = net(xb, Vt[idx])
            loss = F.cross_entropy(logits, yt[idx])
            has = ~torch.isnan(tb[:, 0])
            if has.any():
                loss = loss + 4.0 * F.smooth_l1_loss(tip[has], tb[has], beta=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(idx)
            n += len(idx)
        losses.append(round(tot / n, 4))
        log.info("verifier epoch %d/%d loss %.4f", ep + 1, epochs, losses[-1])
    net.eval()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "arch": arch, "classes": list(CLASSES), "crop": CROP, "window": WINDOW, "samples": int(len(y)),
            "class_counts": dict(zip(CLASSES, counts)), "n_panels": n_panels, "epochs": epochs, "seed": seed,
            **({"verify_open": int(verify_open)} if verify_open else {}),
            **({"verify_hyst": int(verify_hyst)} if verify_hyst else {}),
            **({"scale_jitter": [float(v) for v in scale_jitter]} if scale_jitter else {}),
            "sources": {k: str(v) for k, v in (sources or {}).items()}, "real_panels": len(real or []), "real_source": real_source,
            "losses": losses, "seconds_data": round(t_data, 1), "seconds": round(time.time() - t0, 1)}
    save_weights(out_path, net.state_dict(), meta)
    meta["sha256"] = sha256_file(out_path)
    out_path.with_suffix(".json").write_text(json.dumps(meta, indent=1) + "\n")
    return meta


def save_weights(path: str | Path, state_dict: dict, meta: dict) -> None:
    """Write the weights file atomically. Only what the training run determines goes in (no
    timings), so a rebuild with the same config writes the same bytes (the same sha256); the
    sidecar ``.json`` has the rest."""
    import torch

    path = Path(path)
    stable = {k: v for k, v in meta.items() if not k.startswith("seconds")}
    tmp = path.with_suffix(".tmp")
    torch.save({"format": FORMAT, "state_dict": state_dict, "meta": stable}, tmp)
    tmp.replace(path)


def hand_labelled_records(folder: str | Path) -> list[dict]:
    """Records of a hand-labelled set (``annotations.json`` + ``images/``, the schema of
    ``panels-gt/hand-labelled-dev``, all of which is ``tune``: earlier work tuned on it) as
    ``{"path", "panels", "markers"}``."""
    folder = Path(folder)
    recs = json.loads((folder / "annotations.json").read_text())
    return [{"path": str(folder / "images" / r["image"]), "panels": r.get("panels") or [],
             "markers": r.get("markers") or []} for r in recs]


def train_from_config(cfg: dict, out_path: str | Path, threads: int = 1, progress: bool = True) -> dict:
    """Rule ``train_marker_verifier``: ``cfg`` = the config's ``markers.verifier`` section."""
    import torch

    torch.set_num_threads(max(1, int(threads)))
    src = dict(cfg.get("sources") or {})
    real = real_tune_panels(hand_labelled_records(src["hand_labelled"])) if src.get("hand_labelled") else None
    return train_verifier(out_path, n_panels=int(cfg.get("n_panels", 200)), epochs=int(cfg.get("epochs", 2)),
                          seed=int(cfg.get("seed", 0)),
                          sources={"vqa_rad": src.get("vqa_rad"), "textures": int(src.get("textures", 60)),
                                   "max_side": int(src.get("max_side", 640))},
                          real=real, progress=progress, real_source=src.get("hand_labelled"),
                          arch=str(cfg.get("arch", "double")), verify_open=int(cfg.get("open", 0)),
                          verify_hyst=int(cfg.get("hyst", 0)),
                          scale_jitter=tuple(cfg["scale_jitter"]) if cfg.get("scale_jitter") else None)
