"""Benchmark caption understanding: subcaption splitting and marker phrases.

    PYTHONPATH=src python benchmarks/caption_split.py [--data DIR] [--json OUT] [--show-worst N]

Data: ``$P2P_SHARED_DATA`` or ``<repo>/../shared/data`` (``caption-splits/`` and
``panels-gt/hand-labelled-dev/``); the marker-phrase labels live in ``tests/data/``.

Subcaption split, scored per panel and averaged over panels:

* ``dev-human-splits.json`` (80 captions): the human text of a panel includes the shared text
  (title, common methods), so the prediction for panel L is ``_shared + " " + out[L]``
  (``_shared`` alone when L was not found).  Score = token F1 between the two texts, tokens are
  lower-cased ``\\w+`` runs counted as a bag (punctuation and spacing ignored).
* A figure is "all right" when every one of its panels has token F1 >= 0.9.
* ``baseline_whole_caption_f1``: the same score when every panel simply gets the whole caption.
* ``hand-labelled-dev/annotations.json``: the same on records whose ``subcaptions`` name panels
  (reference ``_shared + " " + subcaptions[L]``), plus a stricter "segment" F1 that compares
  ``out[L]`` with ``subcaptions[L]`` without the shared text; records with only ``_shared`` count
  as right when no panel key is predicted.
* Speed: ``split_caption`` (and ``find_marker_phrases``) over the 1,046 unsplit captions in one
  process (one core), best of 3 passes.

Marker phrases: precision / recall of ``find_marker_phrases`` against
``tests/data/marker_phrases.json``; a prediction matches a gold item when the type is equal and
the phrases overlap (token F1 >= 0.5, or one contains the other); colour and labels of matched
pairs are reported as accuracies.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

from panel2patch.text.markers import find_marker_phrases  # noqa: E402
from panel2patch.text.split import split_caption  # noqa: E402

RIGHT_F1 = 0.9
_TOK = re.compile(r"\w+")


def default_data_dir() -> Path:
    env = os.environ.get("P2P_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def tokens(s: str) -> Counter:
    return Counter(_TOK.findall((s or "").lower()))


def token_f1(pred: str, gold: str) -> float:
    p, g = tokens(pred), tokens(gold)
    if not p and not g:
        return 1.0
    common = sum((p & g).values())
    if not common:
        return 0.0
    prec, rec = common / sum(p.values()), common / sum(g.values())
    return 2 * prec * rec / (prec + rec)


def panel_key(label: str) -> str:
    label = label.strip().strip("()")
    if len(label) > 1 and label.lower() in {"ii", "iii", "iv", "vi", "vii", "viii", "ix", "xi", "xii"}:
        return label.lower()
    return label.upper()


def with_shared(out: dict, key: str) -> str:
    return (out.get("_shared", "") + " " + out.get(key, "")).strip()


def score_dev_human(path: Path) -> dict:
    data = json.loads(path.read_text())
    per_panel, figures = [], []
    for fid, rec in data.items():
        out = split_caption(rec["caption"])
        f1s = []
        for sub in rec["gt_subfigures"]:
            key = panel_key(sub["label"]["text"])
            f1 = token_f1(with_shared(out, key), sub["caption"])
            f1s.append(f1)
            per_panel.append((fid, key, f1))
        figures.append((fid, min(f1s) if f1s else 1.0, sum(f1s) / max(1, len(f1s))))
    # reference point: every panel gets the whole caption (what a figure-level pair would give)
    base = [token_f1(rec["caption"], sub["caption"]) for rec in data.values() for sub in rec["gt_subfigures"]]
    return {
        "figures": len(figures),
        "panels": len(per_panel),
        "mean_token_f1": sum(f for *_, f in per_panel) / len(per_panel),
        "baseline_whole_caption_f1": sum(base) / len(base),
        "figure_all_right": sum(1 for _, mn, _ in figures if mn >= RIGHT_F1) / len(figures),
        "panel_right": sum(1 for *_, f in per_panel if f >= RIGHT_F1) / len(per_panel),
        "_per_panel": per_panel,
        "_figures": figures,
    }


def score_hand_labelled(path: Path) -> dict:
    data = json.loads(path.read_text())
    per_panel, seg_panel, figures, unsplit_right, unsplit_n = [], [], [], 0, 0
    for rec in data:
        cap, subs = rec.get("caption"), rec.get("subcaptions")
        if not cap or not subs:
            continue
        out = split_caption(cap)
        keys = [k for k in subs if k != "_shared"]
        if not keys:
            unsplit_n += 1
            unsplit_right += int(len(out) == 1)
            continue
        f1s = []
        for k in keys:
            key = panel_key(k)
            gold = (subs.get("_shared", "") + " " + subs[k]).strip()
            f1 = token_f1(with_shared(out, key), gold)
            f1s.append(f1)
            per_panel.append((rec["id"], key, f1))
            seg_panel.append((rec["id"], key, token_f1(out.get(key, ""), subs[k])))
        figures.append((rec["id"], min(f1s)))
    return {
        "figures_split": len(figures),
        "panels": len(per_panel),
        "mean_token_f1": sum(f for *_, f in per_panel) / max(1, len(per_panel)),
        "mean_segment_f1": sum(f for *_, f in seg_panel) / max(1, len(seg_panel)),
        "figure_all_right": sum(1 for _, mn in figures if mn >= RIGHT_F1) / max(1, len(figures)),
        "unsplit_captions": unsplit_n,
        "unsplit_right": unsplit_right,
        "_per_panel": per_panel,
    }


def measure_speed(path: Path, repeats: int = 3) -> dict:
    caps = [v["caption"] for v in json.loads(path.read_text()).values()]
    best_split = best_all = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for c in caps:
            split_caption(c)
        best_split = min(best_split, time.perf_counter() - t0)
        t0 = time.perf_counter()
        for c in caps:
            find_marker_phrases(c)
        best_all = min(best_all, time.perf_counter() - t0)
    n_split = sum(1 for c in caps if len(split_caption(c)) > 1)
    return {
        "captions": len(caps),
        "split_captions_per_s": len(caps) / best_split,
        "markers_captions_per_s": len(caps) / best_all,
        "captions_with_panels": n_split,
    }


def _phrase_match(a: str, b: str) -> bool:
    a_l, b_l = a.lower().strip(), b.lower().strip()
    if a_l and b_l and (a_l in b_l or b_l in a_l):
        return True
    return token_f1(a, b) >= 0.5


def load_marker_gold(path: Path, data_dir: Path) -> list:
    """The labelled items with their captions read from the shared data (not stored in the repo)."""
    cache: dict = {}
    out = []
    for rec in json.loads(path.read_text())["captions"]:
        src = rec["source"]
        if src not in cache:
            raw = json.loads((data_dir / src).read_text())
            cache[src] = {r["id"]: r for r in raw} if isinstance(raw, list) else raw
        caption = cache[src][rec["id"]]["caption"]
        markers = [{**{k: v for k, v in m.items() if k != "phrase_span"},
                    "phrase": caption[m["phrase_span"][0]:m["phrase_span"][1]]} for m in rec["markers"]]
        out.append({**rec, "markers": markers, "caption": caption})
    return out


def score_markers(path: Path, data_dir: Path, subset: str = "all") -> dict:
    """``subset``: "all", "tuned" (captions used while writing the rules) or "heldout"."""
    items = load_marker_gold(path, data_dir)
    if subset != "all":
        items = [it for it in items if bool(it.get("heldout")) == (subset == "heldout")]
    tp = n_pred = n_gold = 0
    colour_ok = labels_ok = strict = 0
    phrase_f1s: list = []
    misses, extras, label_errors = [], [], []
    for it in items:
        pred = find_marker_phrases(it["caption"])
        gold = it["markers"]
        n_pred += len(pred)
        n_gold += len(gold)
        used = set()
        for g in gold:
            best = None
            for j, p in enumerate(pred):
                if j in used or p["type"] != g["type"]:
                    continue
                if _phrase_match(p["phrase"], g["phrase"]):
                    best = j
                    break
            if best is None:
                misses.append((it["id"], g))
                continue
            used.add(best)
            tp += 1
            p = pred[best]
            colour_ok += int(p["colour"] == g["colour"])
            labels_ok += int(sorted(p["labels"]) == sorted(g["labels"]))
            phrase_f1s.append(token_f1(p["phrase"], g["phrase"]))
            strict += int(phrase_f1s[-1] >= 0.5)
            if sorted(p["labels"]) != sorted(g["labels"]):
                label_errors.append((it["id"], g["phrase"], g["labels"], p["labels"]))
        for j, p in enumerate(pred):
            if j not in used:
                extras.append((it["id"], p))
    prec = tp / n_pred if n_pred else 1.0
    rec = tp / n_gold if n_gold else 1.0
    return {
        "captions": len(items),
        "gold": n_gold,
        "predicted": n_pred,
        "matched": tp,
        "precision": prec,
        "recall": rec,
        "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0,
        "strict_recall": strict / n_gold if n_gold else 1.0,
        "matched_phrase_token_f1": sum(phrase_f1s) / len(phrase_f1s) if phrase_f1s else 0.0,
        "colour_accuracy": colour_ok / tp if tp else 0.0,
        "labels_accuracy": labels_ok / tp if tp else 0.0,
        "_misses": misses,
        "_extras": extras,
        "_label_errors": label_errors,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=default_data_dir())
    ap.add_argument("--markers", type=Path, default=REPO / "tests" / "data" / "marker_phrases.json")
    ap.add_argument("--json", type=Path, help="write the numbers here")
    ap.add_argument("--show-worst", type=int, default=0, help="print the N worst dev panels")
    ap.add_argument("--no-speed", action="store_true")
    args = ap.parse_args(argv)

    res: dict = {}
    dev = args.data / "caption-splits" / "dev-human-splits.json"
    hl = args.data / "panels-gt" / "hand-labelled-dev" / "annotations.json"
    more = args.data / "caption-splits" / "more-captions-unsplit.json"
    if dev.exists():
        res["dev_human"] = score_dev_human(dev)
    if hl.exists():
        res["hand_labelled"] = score_hand_labelled(hl)
    if more.exists() and not args.no_speed:
        res["speed"] = measure_speed(more)
    if args.markers.exists() and dev.exists():
        res["markers"] = score_markers(args.markers, args.data)
        res["markers_tuned"] = score_markers(args.markers, args.data, "tuned")
        res["markers_heldout"] = score_markers(args.markers, args.data, "heldout")

    def public(d):
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items() if not k.startswith("_")}

    for name, d in res.items():
        print(f"== {name}")
        for k, v in public(d).items():
            print(f"  {k}: {v}")
    if args.show_worst and "dev_human" in res:
        print("== worst dev panels")
        for fid, key, f1 in sorted(res["dev_human"]["_per_panel"], key=lambda r: r[2])[: args.show_worst]:
            print(f"  {f1:.3f} {fid} {key}")
    if args.show_worst and "markers" in res:
        print("== marker misses (all)")
        for fid, g in res["markers"]["_misses"]:
            print("  MISS", fid, g)
        for fid, p in res["markers"]["_extras"]:
            print("  EXTRA", fid, p)
        for row in res["markers"]["_label_errors"]:
            print("  LABELS", *row)
    if args.json:
        args.json.write_text(json.dumps({k: public(v) for k, v in res.items()}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
