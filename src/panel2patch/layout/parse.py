"""``parse_figure``: one figure image -> panels with boxes, letters and kinds.

The returned object has the shape of one line of ``panel2patch panels`` (see :mod:`.cli`)::

    {"width": W, "height": H,
     "panels": [{"bbox": [x1, y1, x2, y2], "label": "A" | None, "label_bbox": [...] | None,
                 "kind": "image" | "chart" | "diagram" | "other", "score": 0.9,
                 "kind_score": 0.8, "method": "xy-cut" | "components" | "whole" | "proposals"}],
     "method": "letters" | "gutters", "reader": "glyph" | "tesseract"}

Boxes are in pixels of the input image, x2/y2 exclusive. Panels come in letter order when every
panel has a letter, else in reading order (rows top to bottom, left to right within a row).

How it works: :func:`.split.prepare` (working copy, paper colour, foreground), :func:`.letters.find_labels`
(candidates, reading, the figure's letter run), then :func:`.split.split_labelled` when at least
two letters were found (one panel per letter, the unit a letter refers to) or
:func:`.split.split_unlabelled` otherwise (leaf panels; a single-panel figure gives one panel),
then :func:`.kind.panel_kind` on each crop.

Methods (:data:`METHODS`, ``layout.method``): ``splitter`` is the above. ``detector``: the learned
detector's panel boxes (score >= 0.5, on the working copy) replace the gutter cuts as the panels
that letters group (a figure where it finds none is one panel). ``combined``: the above, with the
detector's boxes as cut hints where no clean or soft gutter separates the letters of a region
(panels that touch), before falling back to component assignment; ``"method": "proposals"``
marks panels cut that way. Measured (``benchmarks/layout_eval.py``): on the dev and EXSCLAIM
figures the image analysis always finds a gutter, so ``combined`` equals ``splitter`` there.

``score`` is a heuristic confidence, not a calibrated probability: for lettered panels the
letter's reading certainty times a factor for how the box was found (clean gutter cut 1.0,
component assignment 0.8); for unlettered panels 0.9 for a gutter cut, 0.7 for a whole-image
panel.
"""

from __future__ import annotations

import numpy as np

from .kind import panel_kind
from .letters import candidate_runs, find_candidates, read_glyph, read_tesseract, reading_order
from .split import Anchor, Canvas, prepare, split_labelled, split_unlabelled

METHOD_FACTOR = {"xy-cut": 1.0, "components": 0.8, "proposals": 0.9, "whole": 0.7}


def _region_ok(canvas: Canvas, region) -> bool:
    """A letter's panel must hold content of a reasonable size, with the letter at its top-left
    corner: outside it, or inside within a few letter heights of the corner (printed labels are;
    on the development figures at most 2.2 letter heights right of and 1.2 below the corner)."""
    if region.box is None:
        return False
    H, W = canvas.shape
    th = max(canvas.text_h, 4.0)
    x1, y1, x2, y2 = region.box
    w, h = x2 - x1, y2 - y1
    if w < max(3 * th, 0.04 * W) or h < max(3 * th, 0.04 * H):
        return False
    lx1, ly1, lx2, ly2 = region.anchors[0].box
    lh = ly2 - ly1
    return lx1 - x1 <= 3.0 * lh and ly1 - y1 <= 2.5 * lh


def _split_with_letters(canvas: Canvas, cands, rounds: int = 6, proposals=None, n_runs: int = 4,
                        max_tries: int = 4, detections=None):
    """Choose the letter run and split by it.

    Each round splits by the best few candidate runs and keeps the one whose panels are all
    plausible (else the one with fewest implausible panels, then the best reading). When a
    letter's panel is implausible (a stray glyph read as a letter, or a letter whose panel a stray
    glyph took), one of those glyphs is excluded, or the run is ended before it: whichever change
    leaves the fewest implausible panels (then the most letters); the next round selects again. Returns (labels, regions), or None when no plausible run of two letters remains."""
    exclude: set[int] = set()
    cap = 26
    for _ in range(rounds):
        runs = candidate_runs(cands, exclude=exclude, max_letters=cap, top=n_runs)
        if not runs:
            return None
        best = None
        for rank, labels in enumerate(runs):
            anchors = [Anchor(lab.box, k) for k, lab in enumerate(labels)]
            regions = split_labelled(canvas, anchors, proposals=proposals, detections=detections)
            bad = [r.anchors[0].key for r in regions if not _region_ok(canvas, r)]
            if best is None or (len(bad), rank) < (len(best[2]), best[3]):
                best = (labels, regions, bad, rank)
            if not bad:
                break
        labels, regions, bad, _ = best
        if not bad:
            return labels, regions
        # Which implausible letter is the stray glyph? Try excluding each (least certain first),
        # or ending the run before it, and keep the change after which the best run has the
        # fewest implausible panels (then the most letters).
        options = []
        for k in sorted(bad, key=lambda k: labels[k].score)[:max_tries]:
            changes = [(exclude | {labels[k].cand}, labels[k].index if k == len(labels) - 1 else cap)]
            if k > 1:
                changes.append((exclude, labels[k].index))
            for ex, c in changes:
                runs2 = candidate_runs(cands, exclude=ex, max_letters=c, top=1)
                n_bad, n_lab = 99, 0
                if runs2:
                    anchors = [Anchor(lab.box, j) for j, lab in enumerate(runs2[0])]
                    regs2 = split_labelled(canvas, anchors, proposals=proposals, detections=detections)
                    n_bad = sum(not _region_ok(canvas, r) for r in regs2)
                    n_lab = len(runs2[0])
                options.append((n_bad, -n_lab, labels[k].score, ex, c))
        _, _, _, exclude, cap = min(options, key=lambda o: o[:3])
    return None


def parse_canvas(canvas: Canvas, reader: str = "glyph", proposals=None, kinds: bool = True,
                 detections=None) -> dict:
    cands = find_candidates(canvas)
    if reader == "tesseract":
        read_tesseract(cands)
    else:
        read_glyph(cands)
    panels = []
    method = "gutters"
    found = _split_with_letters(canvas, cands, proposals=proposals, detections=detections)
    if found:
        labels, regions = found
        if True:
            method = "letters"
            for r in regions:
                if r.box is None:
                    continue
                lab = labels[r.anchors[0].key]
                panels.append({"box": r.box, "label": lab.text, "label_box": lab.box,
                               "score": lab.score * METHOD_FACTOR.get(r.method, 0.8), "method": r.method,
                               "order": lab.index})
    if method == "gutters":
        regions = split_unlabelled(canvas, proposals=proposals)
        for r in regions:
            panels.append({"box": r.box, "label": None, "label_box": None,
                           "score": 0.9 if r.method == "xy-cut" else METHOD_FACTOR.get(r.method, 0.7),
                           "method": r.method})
    if method == "letters":
        panels.sort(key=lambda p: p["order"])
    else:
        order = reading_order([p["box"] for p in panels])
        panels = [panels[i] for i in order]
    out = []
    for p in panels:
        x1, y1, x2, y2 = p["box"]
        kind, kscore = panel_kind(canvas.rgb[y1:y2, x1:x2], canvas.bg, canvas.fg[y1:y2, x1:x2]) if kinds \
            else ("other", 0.0)
        out.append({
            "bbox": canvas.to_original(p["box"]),
            "label": p["label"],
            "label_bbox": canvas.to_original(p["label_box"]) if p["label_box"] is not None else None,
            "kind": kind,
            "score": round(float(min(1.0, max(0.0, p["score"]))), 4),
            "kind_score": round(float(kscore), 4),
            "method": p["method"],
        })
    return {"width": canvas.width, "height": canvas.height, "panels": out, "method": method, "reader": reader}


def parse_figure(image, *, reader: str = "glyph", max_side: int = 1000, proposals=None, kinds: bool = True,
                 detector=None, method: str = "splitter") -> dict:
    """Parse one figure (PIL image or path). Raises on an unreadable image (the CLI and the
    stage catch that and record it).

    ``reader``: ``"glyph"`` (rendered-glyph classifier, fast) or ``"tesseract"`` (one tesseract
    call per figure). ``proposals``: optional panel boxes from another source in input-image
    pixels; letters then group those boxes instead of the gutter cuts.

    ``method`` (see :data:`METHODS`): ``"splitter"`` (image analysis only), ``"detector"`` (the
    learned ``detector``'s panel boxes are the proposals) or ``"combined"`` (the detector's boxes
    are cut hints where the image analysis finds no gutter; see :mod:`.split`). ``detector`` is a
    model from :func:`.detector.load_detector`, needed for the last two."""
    if method not in METHODS:
        raise ValueError(f"unknown layout method {method!r} (one of {', '.join(METHODS)})")
    canvas = prepare(image, max_side=max_side)
    if proposals:
        sx, sy = canvas.scales
        proposals = [(int(b[0] * sx), int(b[1] * sy), int(np.ceil(b[2] * sx)), int(np.ceil(b[3] * sy))) for b in proposals]
    detections = None
    if method != "splitter":
        if detector is None:
            raise ValueError(f"layout method {method!r} needs a detector (layout.detector_weights)")
        detections = detected_panels(detector, canvas)
        if method == "detector":  # the detector's boxes are the panels; none found: one panel
            proposals, detections = detections or [canvas.area], None
    return parse_canvas(canvas, reader=reader, proposals=proposals, kinds=kinds, detections=detections)


METHODS = ("splitter", "detector", "combined")
DETECTOR_SCORE = 0.5  # the detector's operating point (layout.detector docstring: F1 at score >= 0.5)


def detected_panels(detector, canvas: Canvas, score_threshold: float = DETECTOR_SCORE) -> list[tuple]:
    """The detector's panel boxes on the working copy, in working coordinates (integers), best first.
    The detector resizes its input to its own ``image_size``, so the working copy (long side
    ``max_side``) loses nothing it would see, and the figure is decoded only once."""
    from .detector import detect_panels

    H, W = canvas.shape
    out = []
    for p in detect_panels(detector, canvas.rgb, score_threshold):
        x1, y1, x2, y2 = p["bbox"]
        box = (max(0, int(x1)), max(0, int(y1)), min(W, int(np.ceil(x2))), min(H, int(np.ceil(y2))))
        if box[2] > box[0] and box[3] > box[1]:
            out.append(box)
    return out


def load_method(method: str = "splitter", detector_weights=None, threads: int = 1):
    """The detector a layout ``method`` needs (None for ``"splitter"``), loaded once per process
    with ``threads`` torch threads; raises when ``detector_weights`` is missing."""
    if method not in METHODS:
        raise ValueError(f"unknown layout method {method!r} (one of {', '.join(METHODS)})")
    if method == "splitter":
        return None
    if not detector_weights:
        raise ValueError(f"layout method {method!r} needs detector weights (layout.detector_weights / --detector-weights)")
    import torch

    from .detector import load_detector

    torch.set_num_threads(int(threads))
    return load_detector(detector_weights)
