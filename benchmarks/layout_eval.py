"""Evaluate the layout stage (panel boxes, panel letters, panel kinds) on real figures.

    PYTHONPATH=src python benchmarks/layout_eval.py [--data DIR] [--reader glyph|tesseract]
                                                    [--set dev|exsclaim|all] [--json OUT] [-v]
                                                    [--detector-weights FILE.pt]
                                                    [--method splitter|detector|combined ...]

Methods (``layout.method``): ``splitter`` (image analysis), ``detector`` (the learned detector's
panel boxes, letters read and attached by the same reader) and ``combined`` (image analysis with
the detector's boxes as cut hints). With ``--detector-weights`` all three are scored (one CPU
thread for torch), else only the splitter; ``--method`` picks some.

Data: ``$P2P_SHARED_DATA`` or ``<repo>/../shared/data``:

* ``panels-gt/hand-labelled-dev/`` (hand-checked ground truth). Following its README, a panel is the
  unit a printed letter refers to: the reference box is ``bbox`` (tight content, the letter
  excluded when it stands outside); figures without letters are annotated at leaf level.
* ``panels-gt/exsclaim-naturecomms/``: ``nature_closed_expected.json`` is **another pipeline's
  output (EXSCLAIM), not certified ground truth**; reported separately. Reference boxes are the
  ``master_images`` geometries, letters their ``subfigure_label`` text. The splitter was not
  developed on these figures (it was on the dev set); a detector trained with
  ``detector.sources.exsclaim`` set has seen panels cut from them (the sidecar's
  ``sources_used``), so its EXSCLAIM scores are not held-out: the report says so.

Scores:

* panels: predictions matched one-to-one to references at IoU >= 0.5, greedily by IoU (highest
  first); precision, recall, F1 over all panels of the set (micro average).
* letters: over matched pairs whose reference has a letter, the predicted letter equals it
  case-insensitively (README convention: ``label`` is the printed text without brackets);
  ``letter_acc_all`` also counts matched unlettered references, right when the prediction has no
  letter either.
* kinds: over matched pairs with a hand label in ``tests/data/panel_kinds.json``
  (``{"<figure id>": ["image", "chart", ...]}`` in the annotation's panel order).
* ``--leaf``: also scores against leaf GT (``subpanels`` where present, else the panel box).

A figure is listed as a failure when any of its panels is unmatched or has a wrong letter.
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

from panel2patch.evaluate.boxes import iou, match_boxes as match  # noqa: E402,F401
from panel2patch.layout.parse import METHODS, load_method, parse_figure  # noqa: E402

KINDS_FILE = REPO / "tests" / "data" / "panel_kinds.json"


def default_data_dir() -> Path:
    env = os.environ.get("P2P_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def load_dev(data: Path) -> list[dict]:
    root = data / "panels-gt" / "hand-labelled-dev"
    kinds = json.loads(KINDS_FILE.read_text()) if KINDS_FILE.exists() else {}
    out = []
    for r in json.loads((root / "annotations.json").read_text()):
        k = kinds.get(r["id"])
        panels = [{"bbox": p["bbox"], "label": p["label"], "kind": (k[i] if k and i < len(k) else None),
                   "leaves": p.get("subpanels") or [p["bbox"]]} for i, p in enumerate(r["panels"])]
        out.append({"id": r["id"], "image": root / "images" / f"{r['id']}.png", "panels": panels,
                    "uncertain": bool(r.get("uncertain"))})
    return out


def load_exsclaim(data: Path) -> list[dict]:
    root = data / "panels-gt" / "exsclaim-naturecomms"
    d = json.loads((root / "nature_closed_expected.json").read_text())
    out = []
    for name, fig in sorted(d.items()):
        panels = []
        for m in fig.get("master_images", []):
            xs = [p["x"] for p in m["geometry"]]
            ys = [p["y"] for p in m["geometry"]]
            lab = (m.get("subfigure_label") or {}).get("text")
            box = [min(xs), min(ys), max(xs) + 1, max(ys) + 1]
            panels.append({"bbox": box, "label": lab, "kind": None, "leaves": [box]})
        out.append({"id": name, "image": root / "images" / name, "panels": panels, "uncertain": False})
    return out


def evaluate(figs: list[dict], reader: str, leaf: bool = False, verbose: bool = False,
             method: str = "splitter", detector=None) -> dict:
    tp = n_pred = n_gold = 0
    let_ok = let_n = let_all_ok = let_all_n = 0
    kind_ok = kind_n = 0
    leaf_tp = leaf_pred = leaf_gold = 0
    failures = []
    per_fig = []
    t0 = time.perf_counter()
    for f in figs:
        try:
            res = parse_figure(f["image"], reader=reader, method=method, detector=detector)
        except Exception as exc:  # an evaluation must report, not stop
            failures.append({"id": f["id"], "error": f"{type(exc).__name__}: {exc}"})
            n_gold += len(f["panels"])
            continue
        pred = res["panels"]
        gold = f["panels"]
        pairs = match([p["bbox"] for p in pred], [g["bbox"] for g in gold])
        tp += len(pairs)
        n_pred += len(pred)
        n_gold += len(gold)
        problems = []
        for i, j, v in pairs:
            gl, pl = gold[j]["label"], pred[i]["label"]
            same = (gl or "").lower() == (pl or "").lower()
            let_all_n += 1
            let_all_ok += same
            if gl:
                let_n += 1
                let_ok += same
                if not same:
                    problems.append(f"letter {gl!r} read as {pl!r}")
            if gold[j]["kind"]:
                kind_n += 1
                kind_ok += gold[j]["kind"] == pred[i]["kind"]
                if gold[j]["kind"] != pred[i]["kind"] and verbose:
                    problems.append(f"kind {gold[j]['label'] or j}: {gold[j]['kind']} -> {pred[i]['kind']}")
        mg = {j for _, j, _ in pairs}
        mp = {i for i, _, _ in pairs}
        for j, g in enumerate(gold):
            if j not in mg:
                best = max((iou(p["bbox"], g["bbox"]) for p in pred), default=0.0)
                problems.append(f"missed {g['label'] or '-'} {g['bbox']} (best IoU {best:.2f})")
        for i, p in enumerate(pred):
            if i not in mp:
                problems.append(f"extra {p['label'] or '-'} {p['bbox']}")
        if leaf:
            lg = [b for g in gold for b in g["leaves"]]
            lp = match([p["bbox"] for p in pred], lg)
            leaf_tp += len(lp)
            leaf_pred += len(pred)
            leaf_gold += len(lg)
        per_fig.append({"id": f["id"], "gold": len(gold), "pred": len(pred), "matched": len(pairs),
                        "method": res["method"], "labels": [p["label"] for p in pred],
                        "from_detector": sum(p["method"] == "proposals" for p in pred)})
        if problems:
            failures.append({"id": f["id"], "method": res["method"], "problems": problems})
    secs = time.perf_counter() - t0
    p = tp / n_pred if n_pred else 0.0
    r = tp / n_gold if n_gold else 0.0
    out = {
        "figures": len(figs), "gold_panels": n_gold, "pred_panels": n_pred, "matched": tp,
        "precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0,
        "letter_acc": round(let_ok / let_n, 4) if let_n else None, "letter_n": let_n,
        "letter_acc_all": round(let_all_ok / let_all_n, 4) if let_all_n else None,
        "kind_acc": round(kind_ok / kind_n, 4) if kind_n else None, "kind_n": kind_n,
        "figures_all_right": len(figs) - len(failures),
        "seconds": round(secs, 2), "reader": reader, "method": method,
        "panels_from_detector": sum(f.get("from_detector", 0) for f in per_fig),
        "failures": failures, "per_figure": per_fig,
    }
    if leaf:
        lp_, lr_ = (leaf_tp / leaf_pred if leaf_pred else 0.0), (leaf_tp / leaf_gold if leaf_gold else 0.0)
        out["leaf"] = {"precision": round(lp_, 4), "recall": round(lr_, 4),
                       "f1": round(2 * lp_ * lr_ / (lp_ + lr_), 4) if lp_ + lr_ else 0.0, "gold": leaf_gold}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=default_data_dir())
    ap.add_argument("--reader", default="glyph", choices=["glyph", "tesseract"])
    ap.add_argument("--set", default="all", choices=["dev", "exsclaim", "all"])
    ap.add_argument("--leaf", action="store_true", help="also score against leaf-level GT")
    ap.add_argument("--detector-weights", type=Path, help="trained panel detector: also score detector and combined")
    ap.add_argument("--method", action="append", choices=METHODS,
                    help="score this method (repeatable; default: all three with --detector-weights, else splitter)")
    ap.add_argument("--json", type=Path, help="write the full report here")
    ap.add_argument("-v", "--verbose", action="store_true", help="list kind errors too")
    args = ap.parse_args(argv)
    methods = args.method or (list(METHODS) if args.detector_weights else ["splitter"])
    detector = load_method("combined", args.detector_weights) if set(methods) - {"splitter"} else None
    seen = {}
    if detector is not None:
        meta = detector.p2p_meta or {}
        seen = meta.get("sources_used") or {}
        print(f"detector {args.detector_weights} sha256 {str(meta.get('sha256'))[:12]} steps {meta.get('steps')} "
              f"sources {seen}")
    report = {}
    sets = ["dev", "exsclaim"] if args.set == "all" else [args.set]
    summary = []
    for name in sets:
        figs = load_dev(args.data) if name == "dev" else load_exsclaim(args.data)
        for method in methods:
            rep = evaluate(figs, args.reader, leaf=args.leaf, verbose=args.verbose, method=method, detector=detector)
            report.setdefault(name, {})[method] = rep
            note = "" if name == "dev" else "  (reference = EXSCLAIM's output, not certified GT)"
            if name == "exsclaim" and method != "splitter" and seen.get("exsclaim"):
                note += f"; the detector trained on {seen['exsclaim']} panels cut from these figures"
            print(f"== {name} / {method}{note}: {rep['figures']} figures, {rep['gold_panels']} panels, reader={args.reader}")
            print(f"   panels  P={rep['precision']:.3f} R={rep['recall']:.3f} F1={rep['f1']:.3f} "
                  f"(matched {rep['matched']}, predicted {rep['pred_panels']}; "
                  f"{rep['panels_from_detector']} from detector boxes)")
            print(f"   letters acc={rep['letter_acc']} over {rep['letter_n']} lettered matches; "
                  f"incl. unlettered {rep['letter_acc_all']}")
            if rep["kind_n"]:
                print(f"   kinds   acc={rep['kind_acc']} over {rep['kind_n']} matched panels with a hand label")
            if "leaf" in rep:
                print(f"   leaf-level  P={rep['leaf']['precision']} R={rep['leaf']['recall']} F1={rep['leaf']['f1']}")
            print(f"   figures fully right {rep['figures_all_right']}/{rep['figures']}; {rep['seconds']} s")
            for f in rep["failures"]:
                print(f"   FAIL {f['id']} [{f.get('method', '')}]: " + "; ".join(f.get("problems", [f.get("error", "")])))
            summary.append((name, method, rep))
    if len(summary) > 1:
        print(f"\n{'set':9s} {'method':9s} {'P':>6s} {'R':>6s} {'F1':>6s} {'letters':>8s} {'kinds':>6s}   (targets F1 >= 0.92, letters >= 0.92)")
        for name, method, rep in summary:
            kind = f"{rep['kind_acc']:.3f}" if rep["kind_acc"] is not None else "-"
            let = f"{rep['letter_acc']:.3f}" if rep["letter_acc"] is not None else "-"
            print(f"{name:9s} {method:9s} {rep['precision']:6.3f} {rep['recall']:6.3f} {rep['f1']:6.3f} {let:>8s} {kind:>6s}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
