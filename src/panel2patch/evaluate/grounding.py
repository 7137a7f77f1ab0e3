"""Region grounding on patch pairs (pointing game): for each patch phrase, is the best-scoring crop
among its panel's candidate regions the true patch?

For a patch pair whose panel pair is in the same set (ids ``panel_id``; boxes ``bbox`` in figure
pixels, as the corpus writes them) the candidates are cut from the panel's image, all the same
way: the true patch box, the panel's other patch boxes, then windows of the true box's size on a
3 x 3 grid over the panel, each kept when its IoU with every box already taken is below
``MAX_IOU``, up to ``candidates`` in all.  A crop's score is the cosine of its image embedding with
the phrase's text embedding.  Accuracy = share of phrases whose top crop is the true one;
``chance`` = the mean of 1 / candidates.  Patches with fewer than two candidates are left out.
"""

from __future__ import annotations

from panel2patch.evaluate.boxes import iou
from panel2patch.evaluate.common import Outcome, tie_credit
from panel2patch.evaluate.datasets import PairSet

MAX_IOU = 0.3  # a distractor overlapping the true patch more than this would count as pointing at it
CANDIDATES = 8


def _in_panel(box, panel_box, panel_size):
    """A figure-pixel box -> pixels of the panel's image (which may be resized)."""
    sx = panel_size[0] / max(1e-9, panel_box[2] - panel_box[0])
    sy = panel_size[1] / max(1e-9, panel_box[3] - panel_box[1])
    x1, y1 = (box[0] - panel_box[0]) * sx, (box[1] - panel_box[1]) * sy
    x2, y2 = (box[2] - panel_box[0]) * sx, (box[3] - panel_box[1]) * sy
    w, h = panel_size
    return [max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2)]


def candidates(true_box, other_boxes, size, n: int = CANDIDATES) -> list[list[float]]:
    """True box first, then the distractors (see the module docstring)."""
    W, H = size
    bw, bh = true_box[2] - true_box[0], true_box[3] - true_box[1]
    out = [true_box]
    grid = [[x, y, x + bw, y + bh] for y in (0, (H - bh) / 2, H - bh) for x in (0, (W - bw) / 2, W - bw)]
    for box in [*other_boxes, *grid]:
        if len(out) >= n:
            break
        if box[2] - box[0] >= 2 and box[3] - box[1] >= 2 and all(iou(box, b) < MAX_IOU for b in out):
            out.append(box)
    return out


def tasks(ps: PairSet, n: int = CANDIDATES) -> list[tuple]:
    """(phrase, [crops], panel id) per usable patch pair, the true crop first."""
    panels = {p.meta.get("panel_id"): p for p in ps.pairs if p.meta.get("level") == "panel"}
    patches = [p for p in ps.pairs if p.meta.get("level") == "patch"]
    by_panel: dict = {}
    for p in patches:
        by_panel.setdefault(p.meta.get("panel_id"), []).append(p)
    out = []
    for p in patches:
        panel = panels.get(p.meta.get("panel_id"))
        if panel is None or not p.meta.get("bbox") or not panel.meta.get("bbox"):
            continue
        size = panel.image.size
        true = _in_panel(p.meta["bbox"], panel.meta["bbox"], size)
        others = [_in_panel(q.meta["bbox"], panel.meta["bbox"], size) for q in by_panel[p.meta.get("panel_id")]
                  if q is not p and q.meta.get("bbox")]
        boxes = candidates(true, others, size, n)
        if len(boxes) < 2:
            continue
        crops = [panel.image.crop(tuple(round(v) for v in b)) for b in boxes]
        out.append((p.text, crops, p.meta.get("panel_id")))
    return out


def run(models, pairsets: list[PairSet], n: int = CANDIDATES, batch_size: int = 64) -> Outcome:
    out = Outcome()
    for ps in pairsets:
        out.uses(ps.name, ps.sha256, ps.source, len(ps.pairs))
        ts = tasks(ps, n)
        n_patch = sum(p.meta.get("level") == "patch" for p in ps.pairs)
        if not ts:
            out.skip("grounding", ps.name, f"{n_patch} patch pairs, none with its panel pair and boxes in the set")
            continue
        values, per_item = {}, {}
        for m in models:
            hits = []
            for phrase, crops, _ in ts:
                scores = m.encode_images(crops, batch_size) @ m.encode_texts([phrase])[0]
                hits.append(float(tie_credit(scores.unsqueeze(0))[0]))
            values[m.label], per_item[m.label] = sum(hits) / len(ts), hits
        values["chance"] = sum(1 / len(c) for _, c, _ in ts) / len(ts)
        out.row("grounding", ps.name, "pointing acc", len(ts), values, items=per_item)
    return out
