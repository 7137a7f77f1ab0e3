"""Marker detection: recall / precision at IoU >= 0.3, per type and overall, and ms per panel,
for each detection method (heuristic = image-analysis cues, learned = the torchvision detector,
both = their union; see panel2patch.markers.detect).

    .venv/bin/python benchmarks/markers_eval.py [--weights results/models/marker_detector.pt]
        [--methods heuristic,learned,both] [--gt DIR] [--vqa DIR] [--n-synth 150] [--json OUT]

1. Real figures: the hand-labelled dev set (``markers`` on image panels). Panels come from the
   layout parser (as in ``panel2patch markers``). A prediction matching a ``markers_non_image``
   box is neither a true nor a false positive (reported separately). Precision counts every
   prediction on every figure of the set (the figures without markers are negatives), recall
   counts the figures that carry marker boxes.
2. Synthetic: drawn arrows / arrowheads / asterisks (varied style, width, colour incl. white and
   black, rotation, size; plus text and scale-bar distractors) on VQA-RAD radiology images (CC0).
   Two disjoint image splits by file-name hash (``synthetic.split_of``): ``tune`` (looked at while
   developing; the learned detector trains on it) and ``held-back`` (only reported). The whole
   image is one image panel here (the detector alone). ``held-back-varied`` draws the learned
   detector's wider training styles (``overlay(varied=True)``: line/open/notched/call-out
   arrows, chevrons = ``other``, outlines, grey levels, occlusion) on the held-back images.

Matching is greedy by IoU, type-agnostic (a wrong type still localises the marker); per-type
recall counts ground truth of that type found, per-type precision counts predictions of that type
that match anything; ``type_acc`` is the share of matches with the right type. ms per panel is
the detector alone (layout parsing excluded), one CPU thread.
"""

from __future__ import annotations

import argparse
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
from panel2patch.markers.synthetic import overlay, split_of  # noqa: E402

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


def eval_dev(gt_dir: Path, methods: dict[str, dict | None]) -> dict:
    """``methods``: name -> ``detect`` params. Each figure is parsed once; every method sees the
    same panels."""
    recs = json.loads((gt_dir / "annotations.json").read_text())
    acc = {m: {"all": Tally(), "marked": Tally(), "ms": 0.0, "per_fig": {}} for m in methods}
    n_panels = 0
    for r in recs:
        img = Image.open(gt_dir / "images" / r["image"]).convert("RGB")
        lay = parse_figure(img)
        n_panels += sum(p["kind"] == "image" for p in lay["panels"])
        gts = [{"type": m["type"], "bbox": m["bbox"], "tip": None} for m in r.get("markers") or []]
        ignore = [m["bbox"] for m in r.get("markers_non_image") or []]
        for name, params in methods.items():
            a = acc[name]
            t = time.perf_counter()
            res = figure_markers(np.asarray(img), params=params, layout=lay)
            a["ms"] += 1000 * (time.perf_counter() - t)
            a["all"].add(res["markers"], gts, ignore)
            if gts:
                a["marked"].add(res["markers"], gts, ignore)
            a["per_fig"][r["id"]] = {"gt": len(gts), "pred": len(res["markers"])}
    return {name: {"all_figures": a["all"].report(), "figures_with_markers": a["marked"].report(),
                   "ms_per_image_panel": round(a["ms"] / max(1, n_panels), 1), "image_panels": n_panels,
                   "figures": len(recs), "per_figure": a["per_fig"]} for name, a in acc.items()}


def synth_images(vqa_dir: Path, split: str) -> list[Path]:
    files = sorted(p for p in vqa_dir.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    return [p for p in files if split_of(p.name) == split]


def eval_synth(vqa_dir: Path, split: str, n: int, seed: int, methods: dict[str, dict | None],
               varied: bool = False) -> dict:
    files = synth_images(vqa_dir, split)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(files), size=min(n, len(files)), replace=False)
    acc = {m: {"tally": Tally(), "colours": {}, "ms": []} for m in methods}
    for k in pick:
        img = Image.open(files[k]).convert("RGB")
        side = int(rng.integers(256, 640))
        s = side / max(img.size)
        img = img.resize((max(32, round(img.width * s)), max(32, round(img.height * s))), Image.BILINEAR)
        if varied:
            arr, gts = overlay(np.asarray(img), rng, n=(1, 4), types=TYPES, varied=True)
        else:
            arr, gts = overlay(np.asarray(img), rng)
        for name, params in methods.items():
            a = acc[name]
            t = time.perf_counter()
            preds = detect_markers(arr, params)
            a["ms"].append(1000 * (time.perf_counter() - t))
            a["tally"].add(preds, gts)
            colours = a["colours"]
            for i, j in match(preds, gts):
                c = colours.setdefault(gts[j]["colour"], [0, 0])
                c[0] += 1
                c[1] += preds[i].get("colour") == gts[j]["colour"]
            for g in gts:
                colours.setdefault(g["colour"], [0, 0])
    return {name: {"split": split + ("-varied" if varied else ""), "images": len(pick), **a["tally"].report(),
                   "ms_per_panel": round(float(np.mean(a["ms"])), 1),
                   "colour_name_acc": {c: (round(v[1] / v[0], 2) if v[0] else None) for c, v in sorted(a["colours"].items())}}
            for name, a in acc.items()}


def summary_lines(out: dict) -> list[str]:
    """One line per (set, method): overall and per-type recall / precision, ms per panel."""
    lines = []
    for set_name, by_method in out.items():
        for method, rep in by_method.items():
            rep = rep.get("all_figures", rep)
            ms = by_method[method].get("ms_per_image_panel", by_method[method].get("ms_per_panel"))
            o = rep["overall"]
            types = " ".join(f"{t}:R{rep[t]['recall']}/P{rep[t]['precision']}" for t in TYPES if t in rep)
            lines.append(f"{set_name:26s} {method:9s} R {o['recall']} P {o['precision']} (gt {o['gt']}, pred {o['pred']}) "
                         f"{ms} ms/panel | {types}")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gt", type=Path, default=REPO.parent / "shared" / "data" / "panels-gt" / "hand-labelled-dev")
    ap.add_argument("--vqa", type=Path, default=REPO.parent / "shared" / "data" / "vqa-rad")
    ap.add_argument("--n-synth", type=int, default=150)
    ap.add_argument("--splits", default="tune,held-back,held-back-varied")
    ap.add_argument("--weights", type=Path, default=None, help="learned marker detector (.pt); without it: heuristic only")
    ap.add_argument("--methods", default=None, help="comma-separated: heuristic,learned,both (default: all that can run)")
    ap.add_argument("--learned-score", type=float, default=None, help="detect.learned_score (default: DEFAULTS)")
    ap.add_argument("--sweep", default=None, metavar="S1,S2,...",
                    help="only: learned/both at these learned_score values on the synthetic tune split (choose the threshold there, never on dev)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass
    import cv2
    cv2.setNumThreads(1)
    names = args.methods.split(",") if args.methods else (["heuristic", "learned", "both"] if args.weights else ["heuristic"])
    extra = {"weights": str(args.weights)} if args.weights else {}
    if args.learned_score is not None:
        extra["learned_score"] = args.learned_score
    methods = {m: ({"method": m, **extra} if m != "heuristic" else None) for m in names}
    out = {}
    if args.sweep:
        for sc in (float(v) for v in args.sweep.split(",")):
            ms = {f"{m}@{sc}": {**p, "learned_score": sc} for m, p in methods.items() if p}
            out[f"synthetic_tune@{sc}"] = eval_synth(args.vqa, "tune", args.n_synth, seed=100, methods=ms)
        print(json.dumps(out, indent=1))
        print("\n".join(summary_lines(out)), file=sys.stderr)
        if args.json:
            args.json.write_text(json.dumps(out, indent=1))
        return 0
    if args.gt.is_dir():
        out["dev"] = eval_dev(args.gt, methods)
    for i, split in enumerate(s for s in args.splits.split(",") if s):
        if args.vqa.is_dir():
            varied = split.endswith("-varied")
            out[f"synthetic_{split}"] = eval_synth(args.vqa, split.removesuffix("-varied"), args.n_synth,
                                                   seed=100 + i, methods=methods, varied=varied)
    text = json.dumps(out, indent=1)
    print(text)
    print("\n".join(summary_lines(out)), file=sys.stderr)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
