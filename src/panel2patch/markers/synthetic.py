"""Draw markers (arrows, arrowheads, asterisks/stars) on images with known boxes and tips.

Used by the tests, by ``benchmarks/markers_eval.py`` (a synthetic set that separates method
quality from domain gap) and as training data for the learned marker detector
(:mod:`panel2patch.markers.learned`).

``overlay(rgb, rng, n=(1, 3), types=..., negatives=True, varied=False)`` -> (new image, markers)
where each marker is ``{"type", "bbox": [x1, y1, x2, y2] (x2/y2 exclusive), "tip": [x, y] | None,
"colour": name}``. Negatives (text, scale bars) are drawn too but not listed.

``varied=False`` draws the original styles with the original random draws (the benchmark's
synthetic sets stay the same). ``varied=True`` (training data) adds: line-shaft arrows with
solid, open (V) or notched heads, long call-out arrows, chevrons (type ``other``), 4-spoke
crosses and stars, outlines in any colour, grey levels, sizes from 3 % to 25 % of the panel's
short side, several markers of one style per panel (as authors draw them), and partial
occlusion (a part of the glyph away from the tip hidden by the image or cut at the panel edge).

``split_of(name)`` is the fixed ``tune`` / ``held-back`` split of real images by file name:
training and tuning use ``tune`` only, the benchmark reports ``held-back``.
"""

from __future__ import annotations

import hashlib
import math

import cv2
import numpy as np

__all__ = ["COLOURS", "draw_arrow", "draw_arrowhead", "draw_asterisk", "draw_text", "draw_scale_bar", "overlay",
           "split_of"]

COLOURS = {"red": (230, 30, 30), "yellow": (250, 230, 40), "green": (40, 200, 60), "blue": (60, 110, 240),
           "light-blue": (110, 160, 230), "cyan": (40, 220, 230), "magenta": (220, 40, 220),
           "orange": (250, 140, 20), "white": (255, 255, 255), "black": (0, 0, 0)}
# what colour_name() should call each drawing colour
COLOUR_NAMES = {"light-blue": "blue"}


def _rot(v, ang):
    c, s = math.cos(ang), math.sin(ang)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def split_of(name: str) -> str:
    """``"held-back"`` or ``"tune"``: a fixed half of real images each, by a hash of the file name."""
    return "held-back" if int(hashlib.sha1(name.encode()).hexdigest(), 16) % 2 == 0 else "tune"


def _paint(img, mask, colour, outline=None):
    """Fill ``mask`` (uint8 0/255, anti-aliased) with ``colour``; optional dark/light outline."""
    if not (mask > 60).any():
        return None
    if outline is not None:
        ring = cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=outline[1])
        a = (ring.astype(np.float32) / 255.0)[..., None]
        img[:] = (img * (1 - a) + np.array(outline[0], np.float32) * a).astype(np.uint8)
    a = (mask.astype(np.float32) / 255.0)[..., None]
    img[:] = (img * (1 - a) + np.array(colour, np.float32) * a).astype(np.uint8)
    full = mask if outline is None else cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=outline[1])
    ys, xs = np.nonzero(full > 60)
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def _poly_mask(shape, polys) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(np.asarray(q) * 16).astype(np.int32) for q in polys], 255, cv2.LINE_AA, shift=4)
    return mask


def _arrow_poly(tip, d, n, length, shaft_w, head_w, head_len, barb_back=0.0):
    """Outline of a filled arrow (``barb_back`` > 0: barbs swept back past the head's base, a notch)."""
    base = tip - d * head_len
    back = base - d * head_len * barb_back
    tail = tip - d * length
    return [tip, back + n * head_w / 2, base + n * shaft_w / 2, tail + n * shaft_w / 2,
            tail - n * shaft_w / 2, base - n * shaft_w / 2, back - n * head_w / 2]


def draw_arrow(img, tip, angle, length, shaft_w, head_w, head_len, colour, outline=None):
    """A filled arrow whose tip is at ``tip`` pointing along ``angle`` (radians, image axes)."""
    d = np.array([math.cos(angle), math.sin(angle)])
    n = np.array([-d[1], d[0]])
    mask = _poly_mask(img.shape[:2], [_arrow_poly(np.asarray(tip, float), d, n, length, shaft_w, head_w, head_len)])
    return _paint(img, mask, colour, outline)


def draw_arrowhead(img, tip, angle, length, width, colour, outline=None):
    d = np.array([math.cos(angle), math.sin(angle)])
    n = np.array([-d[1], d[0]])
    tip = np.asarray(tip, float)
    base = tip - d * length
    return _paint(img, _poly_mask(img.shape[:2], [[tip, base + n * width / 2, base - n * width / 2]]), colour, outline)


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
            negatives: bool = True, varied: bool = False):
    """Draw ``n`` random markers (varied style, width, colour, rotation, size) on a copy of ``rgb``;
    ``varied`` for the wider training styles (see the module docstring)."""
    if varied:
        return _overlay_varied(rgb, rng, n, types, negatives)
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
        _negatives(img, rng, boxes)
    return img, out


def _negatives(img, rng, boxes) -> None:
    """A panel letter / text label and a scale bar, away from ``boxes`` (drawn in place)."""
    H, W = img.shape[:2]
    short = min(H, W)
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


# ----------------------------------------------------------------------------- varied (training) styles

GREYS = {"white": (255, 255, 255), "light-grey": (200, 200, 200), "grey": (128, 128, 128), "black": (0, 0, 0)}
VARIED_TYPES = {"arrow": 0.45, "arrowhead": 0.25, "asterisk": 0.2, "other": 0.1}


def _line_mask(shape, segments, thick) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    t = max(1, int(round(thick)))
    for a, b in segments:
        cv2.line(mask, (int(round(a[0] * 16)), int(round(a[1] * 16))), (int(round(b[0] * 16)), int(round(b[1] * 16))),
                 255, t, cv2.LINE_AA, shift=4)
    return mask


def _style(rng, typ: str, short: float) -> dict:
    """Random drawing parameters of one marker style (shared by several markers of a panel)."""
    size = float(np.exp(rng.uniform(np.log(0.03), np.log(0.25)))) * short
    st = {"type": typ, "size": max(10.0, size)}
    if rng.random() < 0.2:
        name = str(rng.choice(list(GREYS)))
        st["colour"], st["cname"] = GREYS[name], ("grey" if "grey" in name else name)
    elif rng.random() < 0.2:
        hsv = np.uint8([[[rng.integers(0, 180), rng.integers(150, 256), rng.integers(170, 256)]]])
        rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0]
        from .detect import colour_name

        st["colour"], st["cname"] = tuple(int(v) for v in rgb), colour_name(rgb)
    else:
        name = str(rng.choice(list(COLOURS)))
        st["colour"], st["cname"] = COLOURS[name], COLOUR_NAMES.get(name, name)
    st["outline"] = None
    if rng.random() < 0.2:
        lum = 0.299 * st["colour"][0] + 0.587 * st["colour"][1] + 0.114 * st["colour"][2]
        st["outline"] = ((0, 0, 0) if lum > 110 else (255, 255, 255), int(rng.integers(1, 3)))
    if typ == "arrow":
        st["style"] = str(rng.choice(["filled", "line_solid", "line_open", "notched", "callout"],
                                     p=[0.35, 0.2, 0.15, 0.15, 0.15]))
        st["shaft"] = float(rng.uniform(0.05, 0.16))
        st["head_w"] = float(rng.uniform(2.0, 4.0))
        st["head_len"] = float(rng.uniform(0.7, 1.4))
        if st["style"] in ("filled", "notched") and rng.random() < 0.35:
            # block / cursor-like arrows: a wide shaft and a head that is most of the glyph
            st["shaft"] = float(rng.uniform(0.16, 0.3))
            st["head_w"] = float(rng.uniform(2.0, 3.0))
            st["head_cap"] = float(rng.uniform(0.45, 0.7))
    elif typ == "arrowhead":
        st["aspect"] = float(rng.uniform(0.5, 1.1))
        st["notch"] = float(rng.uniform(0.15, 0.4)) if rng.random() < 0.3 else 0.0
    elif typ == "asterisk":
        st["star"] = bool(rng.random() < 0.3)
        st["spokes"] = int(rng.choice([5, 6])) if st["star"] else int(rng.choice([4, 5, 6, 6, 8]))
        st["thick"] = float(rng.uniform(0.15, 0.35))
    else:
        st["opening"] = float(rng.uniform(0.5, 1.1))
        st["thick"] = float(rng.uniform(0.1, 0.2))
    return st


def _glyph(shape, st: dict, c, ang: float):
    """Mask, tip and the tail point (the end away from the tip) of one marker centred at ``c``."""
    size = st["size"] * (2.2 if st.get("style") == "callout" else 1.0)
    d = np.array([math.cos(ang), math.sin(ang)])
    n = np.array([-d[1], d[0]])
    c = np.asarray(c, float)
    typ = st["type"]
    if typ == "arrow":
        shaft_w = max(1.5, st["size"] * st["shaft"] * (0.5 if st["style"] in ("line_solid", "line_open", "callout") else 1))
        head_w = max(shaft_w * st["head_w"], 0.25 * st["size"])
        head_len = min(size * st.get("head_cap", 0.5), head_w * st["head_len"])
        tip, tail = c + d * size / 2, c - d * size / 2
        base = tip - d * head_len
        if st["style"] in ("filled", "notched"):
            mask = _poly_mask(shape, [_arrow_poly(tip, d, n, size, shaft_w, head_w, head_len,
                                                  0.4 if st["style"] == "notched" else 0.0)])
        elif st["style"] == "line_open":
            barb = head_len * 0.9
            mask = _line_mask(shape, [(tail, tip - d * shaft_w * 0.5), (tip, tip - d * barb + n * head_w / 2),
                                      (tip, tip - d * barb - n * head_w / 2)], shaft_w)
        else:  # line_solid, callout: a line shaft and a solid triangular head
            mask = np.maximum(_line_mask(shape, [(tail, base + d * 1.0)], shaft_w),
                              _poly_mask(shape, [[tip, base + n * head_w / 2, base - n * head_w / 2]]))
        return mask, tip, tail
    if typ == "arrowhead":
        length = size * 0.65
        width = length * st["aspect"]
        tip, tail = c + d * length / 2, c - d * length / 2
        poly = [tip, tail + n * width / 2]
        if st["notch"]:
            poly.append(tail + d * length * st["notch"])
        poly.append(tail - n * width / 2)
        return _poly_mask(shape, [poly]), tip, tail
    if typ == "asterisk":
        rad = size * 0.4
        if st["star"]:
            k = st["spokes"]
            pts = [c + (rad if j % 2 == 0 else rad * 0.42) * np.array([math.cos(ang + j * math.pi / k),
                                                                        math.sin(ang + j * math.pi / k)])
                   for j in range(2 * k)]
            return _poly_mask(shape, [pts]), None, None
        segs = [(c, c + rad * np.array([math.cos(ang + j * 2 * math.pi / st["spokes"]),
                                        math.sin(ang + j * 2 * math.pi / st["spokes"])])) for j in range(st["spokes"])]
        return _line_mask(shape, segs, max(2.0, rad * st["thick"])), None, None
    # other: a chevron (open arrowhead), tip at c + d * size/3
    tip = c + d * size / 3
    arm = size * 0.6
    half = st["opening"] / 2
    ends = [tip - arm * np.array([math.cos(ang + s * half), math.sin(ang + s * half)]) for s in (-1, 1)]
    return _line_mask(shape, [(tip, ends[0]), (tip, ends[1])], max(2.0, size * st["thick"])), tip, (ends[0] + ends[1]) / 2


def _occlude(mask: np.ndarray, tail, tip, rng) -> None:
    """Hide a part of the glyph on its tail side (in place): a figure element or the panel edge
    cutting it. The tip stays visible."""
    ys, xs = np.nonzero(mask > 60)
    if len(xs) < 20:
        return
    if tail is None:  # asterisks: hide a random corner
        x0, y0 = rng.uniform(xs.min(), xs.max()), rng.uniform(ys.min(), ys.max())
        sx, sy = rng.choice([-1, 1], size=2)
        hide = ((xs - x0) * sx > 0) & ((ys - y0) * sy > 0)
    else:
        d = np.asarray(tip, float) - np.asarray(tail, float)
        d /= np.linalg.norm(d) + 1e-9
        t = (xs - tail[0]) * d[0] + (ys - tail[1]) * d[1]
        hide = t < float(rng.uniform(0.15, 0.4)) * t.max()
    mask[ys[hide], xs[hide]] = 0


def _overlay_varied(rgb, rng, n, types, negatives):
    img = np.ascontiguousarray(rgb[..., :3]).copy()
    H, W = img.shape[:2]
    short = min(H, W)
    probs = np.array([VARIED_TYPES.get(t, 0.1) for t in types], float)
    probs /= probs.sum()
    house = _style(rng, str(rng.choice(types, p=probs)), short) if rng.random() < 0.6 else None
    out, boxes = [], []
    k = int(rng.integers(n[0], n[1] + 1))
    tries = 0
    while len(out) < k and tries < 60:
        tries += 1
        st = house or _style(rng, str(rng.choice(types, p=probs)), short)
        ang = float(rng.uniform(0, 2 * math.pi))
        cx, cy = rng.uniform(0.08, 0.92) * W, rng.uniform(0.08, 0.92) * H
        r = st["size"] * (1.2 if st.get("style") == "callout" else 0.55) + 4
        if not _free(boxes, [cx - r, cy - r, cx + r, cy + r], pad=4):
            continue
        y0, y1, x0, x1 = int(max(0, cy - r)), int(min(H, cy + r)), int(max(0, cx - r)), int(min(W, cx + r))
        under = float(img[y0:y1, x0:x1].mean())
        col = st["colour"]
        lum = 0.299 * col[0] + 0.587 * col[1] + 0.114 * col[2]
        chroma = max(col) - min(col)
        if chroma < 60 and st["outline"] is None and abs(lum - under) < 60:
            continue  # authors pick a colour that shows
        mask, tip, tail = _glyph(img.shape[:2], st, (cx, cy), ang)
        if rng.random() < 0.15:
            _occlude(mask, tail, tip, rng)
        trial = img.copy()
        box = _paint(trial, mask, col, st["outline"])
        if box is None or box[2] - box[0] < 4 or box[3] - box[1] < 4:
            continue
        if box[0] < 0 or box[1] < 0 or box[2] > W or box[3] > H or not _free(boxes, box, pad=2):
            continue
        img = trial
        boxes.append(box)
        out.append({"type": st["type"], "bbox": box, "tip": None if tip is None else [float(tip[0]), float(tip[1])],
                    "colour": st["cname"]})
    if negatives:
        _negatives(img, rng, boxes)
    return img, out
