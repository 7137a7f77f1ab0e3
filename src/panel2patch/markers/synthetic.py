"""Draw markers (arrows, arrowheads, asterisks/stars) on images with known boxes and tips.

Used by the tests, by ``benchmarks/markers_eval.py`` (a synthetic set that separates method
quality from domain gap) and, later, as training data for a learned marker detector.

``overlay(rgb, rng, n=(1, 3), types=..., negatives=True)`` -> (new image, markers) where each
marker is ``{"type", "bbox": [x1, y1, x2, y2] (x2/y2 exclusive), "tip": [x, y] | None,
"colour": name}``. Negatives (text, scale bars) are drawn too but not listed.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

__all__ = ["COLOURS", "draw_arrow", "draw_arrowhead", "draw_asterisk", "draw_text", "draw_scale_bar", "overlay"]

COLOURS = {"red": (230, 30, 30), "yellow": (250, 230, 40), "green": (40, 200, 60), "blue": (60, 110, 240),
           "light-blue": (110, 160, 230), "cyan": (40, 220, 230), "magenta": (220, 40, 220),
           "orange": (250, 140, 20), "white": (255, 255, 255), "black": (0, 0, 0)}
# what colour_name() should call each drawing colour
COLOUR_NAMES = {"light-blue": "blue"}


def _rot(v, ang):
    c, s = math.cos(ang), math.sin(ang)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _paint(img, mask, colour, outline=None):
    """Fill ``mask`` (uint8 0/255, anti-aliased) with ``colour``; optional dark/light outline."""
    if outline is not None:
        ring = cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=outline[1])
        a = (ring.astype(np.float32) / 255.0)[..., None]
        img[:] = (img * (1 - a) + np.array(outline[0], np.float32) * a).astype(np.uint8)
    a = (mask.astype(np.float32) / 255.0)[..., None]
    img[:] = (img * (1 - a) + np.array(colour, np.float32) * a).astype(np.uint8)
    full = mask if outline is None else cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=outline[1])
    ys, xs = np.nonzero(full > 60)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def draw_arrow(img, tip, angle, length, shaft_w, head_w, head_len, colour, outline=None):
    """A filled arrow whose tip is at ``tip`` pointing along ``angle`` (radians, image axes)."""
    d = np.array([math.cos(angle), math.sin(angle)])
    n = np.array([-d[1], d[0]])
    tip = np.asarray(tip, float)
    base = tip - d * head_len
    tail = tip - d * length
    poly = np.array([tip, base + n * head_w / 2, base + n * shaft_w / 2, tail + n * shaft_w / 2,
                     tail - n * shaft_w / 2, base - n * shaft_w / 2, base - n * head_w / 2])
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(poly * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return _paint(img, mask, colour, outline)


def draw_arrowhead(img, tip, angle, length, width, colour, outline=None):
    d = np.array([math.cos(angle), math.sin(angle)])
    n = np.array([-d[1], d[0]])
    tip = np.asarray(tip, float)
    base = tip - d * length
    poly = np.array([tip, base + n * width / 2, base - n * width / 2])
    mask = np.zeros(img.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(poly * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    return _paint(img, mask, colour, outline)


def draw_asterisk(img, centre, radius, spokes, thickness, angle, colour, star=False, outline=None):
    """``spokes`` line segments through the centre (an asterisk), or a filled ``spokes``-point
    star when ``star``."""
    c = np.asarray(centre, float)
    mask = np.zeros(img.shape[:2], np.uint8)
    if star:
        pts = []
        for k in range(2 * spokes):
            r = radius if k % 2 == 0 else radius * 0.42
            a = angle + k * math.pi / spokes
            pts.append(c + r * np.array([math.cos(a), math.sin(a)]))
        cv2.fillPoly(mask, [np.round(np.array(pts) * 16).astype(np.int32)], 255, cv2.LINE_AA, shift=4)
    else:
        for k in range(spokes):
            a = angle + k * 2 * math.pi / spokes
            e = c + radius * np.array([math.cos(a), math.sin(a)])
            cv2.line(mask, tuple(np.round(c).astype(int)), tuple(np.round(e).astype(int)), 255,
                     int(thickness), cv2.LINE_AA)
    return _paint(img, mask, colour, outline)


def draw_text(img, org, text, scale, colour, thickness=1):
    cv2.putText(img, text, (int(org[0]), int(org[1])), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness,
                cv2.LINE_AA)


def draw_scale_bar(img, x, y, length, thick, colour):
    cv2.rectangle(img, (int(x), int(y)), (int(x + length), int(y + thick)), colour, -1)


def _free(boxes, b, pad=4):
    return all(b[2] + pad <= o[0] or o[2] + pad <= b[0] or b[3] + pad <= o[1] or o[3] + pad <= b[1] for o in boxes)


def overlay(rgb: np.ndarray, rng: np.random.Generator, n=(1, 3), types=("arrow", "arrowhead", "asterisk"),
            negatives: bool = True):
    """Draw ``n`` random markers (varied style, width, colour, rotation, size) on a copy of ``rgb``."""
    img = np.ascontiguousarray(rgb[..., :3]).copy()
    H, W = img.shape[:2]
    short = min(H, W)
    out, boxes = [], []
    k = int(rng.integers(n[0], n[1] + 1))
    tries = 0
    while len(out) < k and tries < 40:
        tries += 1
        typ = str(rng.choice(types))
        cname = str(rng.choice(list(COLOURS)))
        colour = COLOURS[cname]
        outline = None
        if cname in ("white", "yellow") and rng.random() < 0.25:
            outline = ((0, 0, 0), 1)
        size = float(rng.uniform(0.06, 0.16)) * short
        ang = float(rng.uniform(0, 2 * math.pi))
        cx, cy = rng.uniform(0.15, 0.85) * W, rng.uniform(0.15, 0.85) * H
        r = size / 2 + 4
        if not _free(boxes, [cx - r, cy - r, cx + r, cy + r], pad=6):
            continue
        # authors pick a colour that shows: skip a black marker on black, white on white
        y0, y1, x0, x1 = int(max(0, cy - r)), int(min(H, cy + r)), int(max(0, cx - r)), int(min(W, cx + r))
        under = float(img[y0:y1, x0:x1].mean())
        lum = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
        if cname in ("white", "black") and abs(lum - under) < 70:
            continue
        trial = img.copy()
        d = np.array([math.cos(ang), math.sin(ang)])
        if typ == "arrow":
            shaft_w = max(2.0, size * rng.uniform(0.07, 0.16))
            head_w = shaft_w * rng.uniform(2.2, 3.6)
            head_len = min(size * 0.5, head_w * rng.uniform(0.8, 1.3))
            tip = np.array([cx, cy]) + d * size / 2
            box = draw_arrow(trial, tip, ang, size, shaft_w, head_w, head_len, colour, outline)
            tip_out = [float(tip[0]), float(tip[1])]
        elif typ == "arrowhead":
            length = size * rng.uniform(0.5, 0.8)
            width = length * rng.uniform(0.6, 1.0)
            tip = np.array([cx, cy]) + d * length / 2
            box = draw_arrowhead(trial, tip, ang, length, width, colour, outline)
            tip_out = [float(tip[0]), float(tip[1])]
        else:
            star = rng.random() < 0.3
            spokes = int(rng.choice([5, 6, 8])) if not star else int(rng.choice([5, 6]))
            rad = size * rng.uniform(0.3, 0.45)
            thick = max(2, int(round(rad * rng.uniform(0.2, 0.35))))
            box = draw_asterisk(trial, (cx, cy), rad, spokes, thick, ang, colour, star=star, outline=outline)
            tip_out = None
        if box[0] <= 1 or box[1] <= 1 or box[2] >= W - 1 or box[3] >= H - 1 or not _free(boxes, box):
            continue
        img = trial
        boxes.append(box)
        out.append({"type": typ, "bbox": box, "tip": tip_out, "colour": COLOUR_NAMES.get(cname, cname)})
    if negatives:
        # a panel letter / text label and a scale bar, away from the markers
        for _ in range(int(rng.integers(1, 3))):
            scale = float(rng.uniform(0.4, 1.0)) * short / 300
            text = str(rng.choice(["A", "B", "c", "d", "R", "L", "10 um", "T2", "x40"]))
            (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
            x, y = rng.uniform(2, max(3, W - tw - 2)), rng.uniform(th + 2, max(th + 3, H - 2))
            b = [x - 2, y - th - 2, x + tw + 2, y + 4]
            if _free(boxes, b):
                draw_text(img, (x, y), text, scale, COLOURS[str(rng.choice(["white", "yellow", "black"]))],
                          thickness=int(rng.integers(1, 3)))
                boxes.append(b)
        ln = short * rng.uniform(0.1, 0.25)
        th = max(2, int(short * 0.012))
        x, y = W - ln - 0.05 * W, H - 0.06 * H
        b = [x, y, x + ln, y + th]
        if _free(boxes, b):
            draw_scale_bar(img, x, y, ln, th, COLOURS[str(rng.choice(["white", "black"]))])
    return img, out
