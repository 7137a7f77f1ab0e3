"""Benchmark the learned panel detector on real and held-back synthetic figures.

    PYTHONPATH=src python benchmarks/detector_eval.py --weights results/models/panel_detector.pt
    PYTHONPATH=src python benchmarks/detector_eval.py --preset demo --out /tmp/det.pt   # train, then evaluate
    PYTHONPATH=src python benchmarks/detector_eval.py --preset large --set image_size=448 --out /tmp/det.pt

Data: ``$P2P_SHARED_DATA`` or ``<repo>/../shared/data``. Training sources (when training here)
are VQA-RAD and the EXSCLAIM panels from that folder plus rendered panels; nothing from
``panels-gt/hand-labelled-dev/``, which is the evaluation set.

Scores (everything on one CPU thread, ``torch.set_num_threads(1)``):

* **dev**: the hand-labelled dev figures. A predicted panel is a true positive when it matches an
  unmatched ground-truth box with IoU >= 0.5 (greedy, best score first); precision, recall and F1
  are micro-averaged over all figures, for several score thresholds. Ground truth ``panel`` is the
  labelled-panel box (``bbox``: the unit a printed letter refers to, letter excluded when outside);
  ``leaf`` uses ``subpanels`` where a panel has them (several images under one letter), else
  ``bbox``. ``count_exact`` is the share of figures whose number of predicted panels equals the
  ground truth's. Letters (when the model has the class): the same against ``label_bbox``.
* **synthetic**: a held-back synthetic set (other seeds than training, same source bank): the same
  scores, which separates detector quality from the domain gap.
* **speed**: wall time of ``detect()`` per dev figure (original size in, boxes out), after one
  warm-up call.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from panel2patch.evaluate.boxes import iou  # noqa: E402
from panel2patch.layout import detector as D  # noqa: E402
from panel2patch.layout import synthetic as S  # noqa: E402

THRESHOLDS = (0.3, 0.5, 0.7, 0.9)
IOU = 0.5


def default_data_dir() -> Path:
    env = os.environ.get("P2P_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def match(preds: list[dict], gts: list[list[float]], thr: float = IOU) -> int:
    """True positives: greedy matching, best score first, IoU >= thr."""
    used = set()
    tp = 0
    for p in sorted(preds, key=lambda d: -d["score"]):
        best, bj = thr, None
        for j, g in enumerate(gts):
            if j not in used and (v := iou(p["bbox"], g)) >= best:
                best, bj = v, j
        if bj is not None:
            used.add(bj)
            tp += 1
    return tp


def prf(tp: int, npred: int, ngt: int) -> dict:
    p = tp / npred if npred else 0.0
    r = tp / ngt if ngt else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0,
            "tp": tp, "pred": npred, "gt": ngt}


def score(records: list[dict], thresholds=THRESHOLDS) -> dict:
    """records: {"pred": detect(..., 0.0), "gt": {"panel": [...], "leaf": [...], "label": [...]}}."""
    out = {}
    for t in thresholds:
        row = {}
        for key, pred_key in (("panel", "panels"), ("leaf", "panels"), ("label", "labels")):
            tp = npred = ngt = exact = 0
            for r in records:
                if key not in r["gt"]:
                    continue
                preds = [p for p in r["pred"][pred_key] if p["score"] >= t]
                tp += match(preds, r["gt"][key])
                npred += len(preds)
                ngt += len(r["gt"][key])
                exact += len(preds) == len(r["gt"][key])
            if ngt or npred:
                row[key] = {**prf(tp, npred, ngt), "count_exact": round(exact / max(1, len(records)), 4)}
        out[str(t)] = row
    return out


def dev_records(model, data: Path) -> tuple[list[dict], list[float]]:
    ann = json.loads((data / "panels-gt" / "hand-labelled-dev" / "annotations.json").read_text())
    records, ms = [], []
    for i, rec in enumerate(ann):
        with Image.open(data / "panels-gt" / "hand-labelled-dev" / "images" / rec["image"]) as im:
            im = im.convert("RGB")
        if i == 0:
            D.detect(model, im, 0.0)  # warm-up
        t = time.perf_counter()
        pred = D.detect(model, im, 0.0)
        ms.append((time.perf_counter() - t) * 1000)
        leaf = [b for p in rec["panels"] for b in (p.get("subpanels") or [p["bbox"]])]
        records.append({"id": rec["id"], "pred": pred, "gt": {"panel": [p["bbox"] for p in rec["panels"]], "leaf": leaf,
                                                               "label": [p["label_bbox"] for p in rec["panels"] if p.get("label_bbox")]}})
    return records, ms


def synthetic_records(model, sources, n: int, seed: int) -> list[dict]:
    ds = S.SyntheticFigures(sources, n, seed)
    out = []
    for i in range(n):
        img, tgt = ds.figure(i)
        pred = D.detect(model, img, 0.0)
        out.append({"id": f"synthetic-{i}", "pred": pred,
                    "gt": {"panel": [p["bbox"] for p in tgt["panels"]],
                           "leaf": [b for p in tgt["panels"] for b in (p["subpanels"] or [p["bbox"]])],
                           "label": [lb["bbox"] for lb in tgt["labels"]]}})
    return out


def print_table(name: str, scores: dict) -> None:
    print(f"\n{name}  (IoU >= {IOU})")
    print(f"{'thr':>5} {'gt':>6} {'P':>6} {'R':>6} {'F1':>6} {'pred':>5} {'gt#':>5} {'count=':>7}")
    for t, row in scores.items():
        for key, v in row.items():
            print(f"{t:>5} {key:>6} {v['precision']:6.3f} {v['recall']:6.3f} {v['f1']:6.3f} {v['pred']:5d} {v['gt']:5d} {v['count_exact']:7.3f}")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", help="evaluate this checkpoint (else train one with --preset)")
    ap.add_argument("--preset", choices=sorted(D.PRESETS), default="demo")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="config override, e.g. n_images=400")
    ap.add_argument("--out", default="/tmp/panel2patch-detector/panel_detector.pt", help="where a trained model goes")
    ap.add_argument("--results", default="/tmp/panel2patch-detector/results", help="MLflow store of the training run")
    ap.add_argument("--data", type=Path, default=default_data_dir())
    ap.add_argument("--synthetic", type=int, default=100, help="held-back synthetic figures")
    ap.add_argument("--json", type=Path, help="write all numbers here")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    data = a.data
    src_cfg = {"vqa_rad": str(data / "vqa-rad"), "exsclaim": str(data / "panels-gt" / "exsclaim-naturecomms")}
    if a.weights:
        weights = Path(a.weights)
    else:
        over = {}
        for kv in a.set:
            k, v = kv.split("=", 1)
            over[k] = json.loads(v)
        cfg = D.resolve_config({**over, "sources": {**src_cfg, **over.get("sources", {})}}, a.preset)
        weights = Path(a.out)
        D.train_detector(cfg, weights, progress=True, results_dir=a.results)
    model = D.load_detector(weights)
    meta = model.p2p_meta
    cfg = D.resolve_config(meta.get("config")) if meta.get("config") else D.resolve_config({"sources": src_cfg})
    result = {"weights": str(weights), "sha256": meta.get("sha256"), "config": meta.get("config"),
              "train_seconds": meta.get("train_seconds"), "steps": meta.get("steps"), "loss_first": meta.get("loss_first"),
              "loss_last": meta.get("loss_last"), "threads": torch.get_num_threads()}
    recs, ms = dev_records(model, data)
    result["dev"] = score(recs)
    result["dev_per_figure"] = {r["id"]: {"gt": len(r["gt"]["panel"]), "pred@0.5": sum(p["score"] >= 0.5 for p in r["pred"]["panels"]),
                                          "tp@0.5": match([p for p in r["pred"]["panels"] if p["score"] >= 0.5], r["gt"]["panel"])}
                                for r in recs}
    result["speed_ms_per_figure"] = {"mean": round(float(np.mean(ms)), 1), "median": round(float(np.median(ms)), 1),
                                     "max": round(float(np.max(ms)), 1), "figures": len(ms)}
    if a.synthetic:
        sources = S.build_sources(cfg["sources"], cfg["seed"])
        result["synthetic"] = score(synthetic_records(model, sources, a.synthetic, cfg["seed"] + 1_000_003))
        result["synthetic_n"] = a.synthetic
    print(f"weights {weights}  steps {result['steps']}  train {result['train_seconds']} s  loss {result['loss_first']} -> {result['loss_last']}")
    print_table("dev (hand-labelled-dev)", result["dev"])
    if "synthetic" in result:
        print_table(f"held-back synthetic (n={a.synthetic})", result["synthetic"])
    print(f"\ninference ms/figure (1 thread): {result['speed_ms_per_figure']}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
