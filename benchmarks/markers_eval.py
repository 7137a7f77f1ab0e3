"""Marker detection: recall / precision at IoU >= 0.3, per type and overall, and ms per panel.

    .venv/bin/python benchmarks/markers_eval.py [--gt DIR] [--vqa DIR] [--n-synth 150] [--json OUT]

1. Real figures: the hand-labelled dev set (``markers`` on image panels). Panels come from the
   layout parser (as in ``panel2patch markers``). A prediction matching a ``markers_non_image``
   box is neither a true nor a false positive (reported separately). Precision counts every
   prediction on every figure of the set (the figures without markers are negatives), recall
   counts the figures that carry marker boxes.
2. Synthetic: drawn arrows / arrowheads / asterisks (varied style, width, colour incl. white and
   black, rotation, size; plus text and scale-bar distractors) on VQA-RAD radiology images (CC0).
   Two disjoint image splits by file-name hash: ``tune`` (looked at while developing) and
   ``held-back`` (only reported). The whole image is one image panel here (the detector alone).

Matching is greedy by IoU, type-agnostic (a wrong type still localises the marker); per-type
recall counts ground truth of that type found, per-type precision counts predictions of that type
that match anything; ``type_acc`` is the share of matches with the right type.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from panel2patch.layout.parse import parse_figure  # noqa: E402
from panel2patch.evaluate.boxes import iou, match_boxes  # noqa: E402,F401
from panel2patch.markers.detect import detect_markers, figure_markers  # noqa: E402
from panel2patch.markers.synthetic import overlay  # noqa: E402

TYPES = ("arrow", "arrowhead", "asterisk", "other")


def match(preds: list, gts: list, thr: float = 0.3):
    """Greedy IoU matching -> list of (pred index, gt index)."""
    return [(i, j) for i, j, _ in match_boxes([p["bbox"] for p in preds], [g["bbox"] for g in gts], thr)]


class Tally:
    def __init__(self):
        self.gt = {t: 0 for t in TYPES}
        self.gt_hit = {t: 0 for t in TYPES}
        self.pred = {t: 0 for t in TYPES}
        self.pred_hit = {t: 0 for t in TYPES}
        self.type_ok = 0
        self.matches = 0
        self.ignored = 0
        self.tip_err = []

    def add(self, preds, gts, ignore=()):
        pairs = match(preds, gts)
        mp = {i for i, _ in pairs}
        for g in gts:
            self.gt[g["type"]] += 1
        for i, j in pairs:
            self.gt_hit[gts[j]["type"]] += 1
            self.type_ok += preds[i]["type"] == gts[j]["type"]
            self.matches += 1
            if preds[i].get("tip") is not None and gts[j].get("tip") is not None:
                t, g = preds[i]["tip"], gts[j]["tip"]
                size = max(gts[j]["bbox"][2] - gts[j]["bbox"][0], gts[j]["bbox"][3] - gts[j]["bbox"][1])
                self.tip_err.append(float(np.hypot(t[0] - g[0], t[1] - g[1])) / max(1, size))
        for i, p in enumerate(preds):
            if i not in mp and any(iou(p["bbox"], b) >= 0.3 for b in ignore):
                self.ignored += 1
                continue
            self.pred[p["type"]] += 1
            self.pred_hit[p["type"]] += i in mp

    def report(self) -> dict:
        def r(a, b):
            return round(a / b, 3) if b else None
        out = {}
        for t in TYPES:
            if self.gt[t] or self.pred[t]:
                out[t] = {"gt": self.gt[t], "recall": r(self.gt_hit[t], self.gt[t]), "pred": self.pred[t],
                          "precision": r(self.pred_hit[t], self.pred[t])}
        G, P = sum(self.gt.values()), sum(self.pred.values())
        out["overall"] = {"gt": G, "recall": r(sum(self.gt_hit.values()), G), "pred": P,
                          "precision": r(sum(self.pred_hit.values()), P), "type_acc": r(self.type_ok, self.matches),
                          "ignored_non_image": self.ignored,
                          "tip_err_median_rel": round(float(np.median(self.tip_err)), 3) if self.tip_err else None}
        return out


def eval_dev(gt_dir: Path) -> dict:
    recs = json.loads((gt_dir / "annotations.json").read_text())
    tally, tally_marked = Tally(), Tally()
    panel_ms, n_panels = 0.0, 0
    per_fig = {}
    for r in recs:
        img = Image.open(gt_dir / "images" / r["image"]).convert("RGB")
        lay = parse_figure(img)
        t = time.perf_counter()
        res = figure_markers(np.asarray(img), layout=lay)
        panel_ms += 1000 * (time.perf_counter() - t)
        n_panels += sum(p["kind"] == "image" for p in lay["panels"])
        gts = [{"type": m["type"], "bbox": m["bbox"], "tip": None} for m in r.get("markers") or []]
        ignore = [m["bbox"] for m in r.get("markers_non_image") or []]
        tally.add(res["markers"], gts, ignore)
        if gts:
            tally_marked.add(res["markers"], gts, ignore)
        per_fig[r["id"]] = {"gt": len(gts), "pred": len(res["markers"])}
    return {"all_figures": tally.report(), "figures_with_markers": tally_marked.report(),
            "ms_per_image_panel": round(panel_ms / max(1, n_panels), 1), "image_panels": n_panels,
            "figures": len(recs), "per_figure": per_fig}


def synth_images(vqa_dir: Path, split: str) -> list[Path]:
    files = sorted(p for p in vqa_dir.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    want = 0 if split == "held-back" else 1

    def h(p):
        return int(hashlib.sha1(p.name.encode()).hexdigest(), 16) % 2
    return [p for p in files if h(p) == want]


def eval_synth(vqa_dir: Path, split: str, n: int, seed: int) -> dict:
    files = synth_images(vqa_dir, split)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(files), size=min(n, len(files)), replace=False)
    tally = Tally()
    colours = {}
    ms = []
    for k in pick:
        img = Image.open(files[k]).convert("RGB")
        side = int(rng.integers(256, 640))
        s = side / max(img.size)
        img = img.resize((max(32, round(img.width * s)), max(32, round(img.height * s))), Image.BILINEAR)
        arr, gts = overlay(np.asarray(img), rng)
        t = time.perf_counter()
        preds = detect_markers(arr)
        ms.append(1000 * (time.perf_counter() - t))
        tally.add(preds, gts)
        for i, j in match(preds, gts):
            c = colours.setdefault(gts[j]["colour"], [0, 0])
            c[0] += 1
            c[1] += preds[i].get("colour") == gts[j]["colour"]
        for j, g in enumerate(gts):
            colours.setdefault(g["colour"], [0, 0])
    rep = tally.report()
    return {"split": split, "images": len(pick), **rep, "ms_per_panel": round(float(np.mean(ms)), 1),
            "colour_name_acc": {c: (round(v[1] / v[0], 2) if v[0] else None) for c, v in sorted(colours.items())}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gt", type=Path, default=REPO.parent / "shared" / "data" / "panels-gt" / "hand-labelled-dev")
    ap.add_argument("--vqa", type=Path, default=REPO.parent / "shared" / "data" / "vqa-rad")
    ap.add_argument("--n-synth", type=int, default=150)
    ap.add_argument("--splits", default="tune,held-back")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass
    import cv2
    cv2.setNumThreads(1)
    out = {}
    if args.gt.is_dir():
        out["dev"] = eval_dev(args.gt)
    for i, split in enumerate(s for s in args.splits.split(",") if s):
        if args.vqa.is_dir():
            out[f"synthetic_{split}"] = eval_synth(args.vqa, split, args.n_synth, seed=100 + i)
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
