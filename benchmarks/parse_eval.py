"""Score the parse as a user runs it (``panel2patch panels`` + ``panel2patch markers``, default
options) on the real evaluation set of ``benchmarks/evalset.py``, per source and per split.

    .venv/bin/python benchmarks/parse_eval.py [--split check|tune|all] [--source S ...] [--scale F] [--json OUT] [-v]

Only ``check`` numbers are results: ``tune`` figures were looked at while developing.

``--scale F`` resizes every image by F (Lanczos, saved as PNG) before the commands run and maps
their boxes, letters' boxes, tips and patches back to the labelled image's pixels: how much the
numbers depend on the resolution a figure happens to come at (unseen figures come at any).

Scores (micro averages over the figures of a group):

* panels: one-to-one greedy matching at IoU >= 0.5 against the labelled panel boxes; P, R, F1.
* letters: over matched panels whose reference has a printed letter, the predicted letter equals
  it (case-insensitive).
* markers: one-to-one greedy matching at IoU >= 0.3 (type-agnostic), recall over labelled markers,
  precision over predictions; a prediction on a ``markers_non_image`` box counts neither way; a
  record whose ``markers_non_image`` is null (chart arrows present but not annotated) is scored
  for recall only.
* tip: over matched markers with a labelled tip (arrows and arrowheads), the share whose predicted
  tip lies within half the marker's size (long side of its labelled box) of the labelled tip
  (a second head, ``tip2``, counts too), and the median error in marker sizes.
* patch: over the same matched markers, the share for which a patch made from that marker
  contains the labelled tip (the point the marker indicates).
* end to end (records with a caption and per-letter ``subcaptions``): the caption is split
  (``panel2patch split-caption``'s code) and aligned with the predicted panels (the align
  stage's code); a labelled panel with its own subcaption gets its text when a predicted panel
  matches it (IoU >= 0.5) and that panel's aligned text holds >= 80 % of the words of its own
  subcaption, and >= 80 % of the aligned text's words are the panel's own or shared words.
  ``lost b/l/t`` counts where a failed panel lost its text (no matching box / wrong letter / the
  text stage), ``txt`` is the text stage alone: the caption aligned with the labelled panels.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

import evalset  # noqa: E402
from panel2patch.evaluate.boxes import iou, match_boxes  # noqa: E402


def _words(text: str) -> list[str]:
    import re

    return re.findall(r"[a-z0-9]+", (text or "").lower())


class Score:
    def __init__(self):
        self.c = defaultdict(int)
        self.tip_err = []

    def panels(self, pred: list, gold: list):
        pairs = match_boxes([p["bbox"] for p in pred], [g["bbox"] for g in gold], 0.5)
        self.c["figs_p"] += 1
        self.c["p_tp"] += len(pairs)
        self.c["p_pred"] += len(pred)
        self.c["p_gold"] += len(gold)
        bad = len(pairs) != len(pred) or len(pairs) != len(gold)
        for i, j, _ in pairs:
            if gold[j].get("label"):
                self.c["l_n"] += 1
                ok = (pred[i].get("label") or "").lower() == gold[j]["label"].lower()
                self.c["l_ok"] += ok
                bad |= not ok
        self.c["figs_p_ok"] += not bad
        return not bad

    def markers(self, pred: list, patches: list, rec: dict):
        gold = rec.get("markers") or []
        ignore = rec.get("markers_non_image")
        pairs = match_boxes([m["bbox"] for m in pred], [g["bbox"] for g in gold], 0.3)
        self.c["figs_m"] += 1
        self.c["m_tp"] += len(pairs)
        self.c["m_gold"] += len(gold)
        if ignore is not None:
            matched = {i for i, _, _ in pairs}
            for i, m in enumerate(pred):
                if i in matched:
                    self.c["m_pred_tp"] += 1
                elif any(iou(m["bbox"], b["bbox"]) >= 0.3 for b in ignore):
                    continue
                self.c["m_pred"] += 1
        for i, j, _ in pairs:
            g, m = gold[j], pred[i]
            if not g.get("tip") or g["type"] == "asterisk":
                continue
            size = max(g["bbox"][2] - g["bbox"][0], g["bbox"][3] - g["bbox"][1], 1)
            tips = [t for t in (g["tip"], g.get("tip2")) if t]
            self.c["t_n"] += 1
            if m.get("tip"):
                e = min(float(np.hypot(m["tip"][0] - t[0], m["tip"][1] - t[1])) for t in tips) / size
            else:
                e = float("inf")
            self.tip_err.append(e)
            self.c["t_ok"] += e <= 0.5
            inside = any(i in p["marker_indices"] and any(p["bbox"][0] <= t[0] <= p["bbox"][2] and
                                                        p["bbox"][1] <= t[1] <= p["bbox"][3] for t in tips)
                         for p in patches)
            self.c["patch_ok"] += inside
        return len(pairs) == len(gold) == len(pred)

    def end_to_end(self, pred: list, rec: dict):
        from panel2patch.align.panels import align_panels
        from panel2patch.text.split import split_caption

        subs = {k.lower(): v for k, v in (rec.get("subcaptions") or {}).items() if k != "_shared" and v}
        if not subs or not rec.get("caption"):
            return None
        shared = set(_words(rec["subcaptions"].get("_shared") or ""))
        split = split_caption(rec["caption"])

        def aligned(panels: list) -> dict:
            al = align_panels([{"index": i, "label": p.get("label")} for i, p in enumerate(panels)], split)
            return {a["panel_index"]: a.get("text") or "" for a in al if a.get("panel_index") is not None}

        def own_text(text: str, own: str) -> bool:
            """The text holds >= 80 % of the panel's own words, and >= 80 % of its words are own or shared."""
            got, own_w = _words(text), _words(own)
            allowed = set(own_w) | shared
            return (bool(got) and sum(w in set(got) for w in own_w) / max(1, len(own_w)) >= 0.8
                    and sum(w in allowed for w in got) / max(1, len(got)) >= 0.8)

        text = aligned(pred)
        gtext = aligned(rec["panels"])  # the text stage alone: the labelled panels and letters
        pairs = {j: i for i, j, _ in match_boxes([p["bbox"] for p in pred], [g["bbox"] for g in rec["panels"]], 0.5)}
        ok_all = True
        for j, g in enumerate(rec["panels"]):
            own = subs.get((g.get("label") or "").lower())
            if own is None:
                continue
            self.c["e2e_n"] += 1
            ok = j in pairs and own_text(text.get(pairs[j], ""), own)
            self.c["e2e_ok"] += ok
            if not ok:  # where the panel's text was lost: its box, its letter, or the text stage
                lost = ("box" if j not in pairs else "letter"
                        if (pred[pairs[j]].get("label") or "").lower() != g["label"].lower() else "text")
                self.c[f"e2e_lost_{lost}"] += 1
            self.c["e2e_text_ok"] += own_text(gtext.get(j, ""), own)
            ok_all &= ok
        return ok_all

    def report(self) -> dict:
        c = self.c

        def r(a, b):
            return round(a / b, 3) if b else None

        out = {}
        if c["figs_p"]:
            p, rr = r(c["p_tp"], c["p_pred"]), r(c["p_tp"], c["p_gold"])
            out["panels"] = {"figures": c["figs_p"], "gold": c["p_gold"], "pred": c["p_pred"], "P": p, "R": rr,
                             "F1": round(2 * p * rr / (p + rr), 3) if p and rr else 0.0,
                             "letters": r(c["l_ok"], c["l_n"]), "letters_n": c["l_n"],
                             "figures_all_right": c["figs_p_ok"]}
        if c["figs_m"]:
            out["markers"] = {"figures": c["figs_m"], "gold": c["m_gold"], "R": r(c["m_tp"], c["m_gold"]),
                              "pred": c["m_pred"], "P": r(c["m_pred_tp"], c["m_pred"]),
                              "tips_n": c["t_n"], "tip_within_half": r(c["t_ok"], c["t_n"]),
                              "tip_err_median": round(float(np.median(self.tip_err)), 3) if self.tip_err else None,
                              "patch_contains_tip": r(c["patch_ok"], c["t_n"])}
        if c["e2e_n"]:
            out["end_to_end"] = {"panels": c["e2e_n"], "own_text": r(c["e2e_ok"], c["e2e_n"]),
                                 "lost_at": {k: c[f"e2e_lost_{k}"] for k in ("box", "letter", "text")},
                                 "own_text_given_labelled_panels": r(c["e2e_text_ok"], c["e2e_n"])}
        return out


def _rescaled(path: str, scale: float, out: Path) -> str:
    """``path`` resized by ``scale`` (Lanczos), written as the PNG ``out``."""
    from PIL import Image

    from panel2patch.ingest.images import to_rgb

    img = to_rgb(Image.open(path))
    img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))), Image.LANCZOS).save(out)
    return str(out)


def _unscale(items: list, scale: float, keys=("bbox", "label_bbox", "tip")) -> list:
    """Copies of predicted panels / markers / patches with their coordinates divided by ``scale``."""
    if scale == 1.0:
        return items
    return [{**it, **{k: [v / scale for v in it[k]] for k in keys if it.get(k)}} for it in items]


def run(recs: list[dict], verbose: bool = False, marker_params: dict | None = None, scale: float = 1.0) -> dict:
    import tempfile

    from panel2patch.layout.cli import process_image as panels_of
    from panel2patch.markers.cli import process_image as markers_of

    groups: dict[str, Score] = defaultdict(Score)
    per_fig = []
    t_layout = t_markers = 0.0
    with tempfile.TemporaryDirectory(prefix="parse_eval_") as tmp:  # the resized copies (--scale)
        for rec in recs:
            path = str(evalset.image_path(rec))
            if scale != 1.0:
                path = _rescaled(path, scale, Path(tmp) / f"{len(per_fig)}.png")
            keys = [f"{rec['split']}/{rec['source']}", f"{rec['split']}/ALL"]
            row = {"id": rec["id"], "split": rec["split"], "source": rec["source"]}
            if "panels" in rec.get("scope", []) and rec.get("panels"):
                t = time.perf_counter()
                pr = panels_of(path)
                t_layout += time.perf_counter() - t
                pr["panels"] = _unscale(pr["panels"], scale)
                for k in keys:
                    ok = groups[k].panels(pr["panels"], rec["panels"])
                    e2e = groups[k].end_to_end(pr["panels"], rec)
                row["panels"] = {"gold": len(rec["panels"]), "pred": len(pr["panels"]), "ok": ok,
                                 "labels": [p["label"] for p in pr["panels"]], "end_to_end_ok": e2e}
            if "markers" in rec.get("scope", []):
                t = time.perf_counter()
                mr = markers_of(path, params=marker_params)
                t_markers += time.perf_counter() - t
                mr["markers"], mr["patches"] = _unscale(mr["markers"], scale), _unscale(mr["patches"], scale)
                for k in keys:
                    ok = groups[k].markers(mr["markers"], mr["patches"], rec)
                row["markers"] = {"gold": len(rec.get("markers") or []), "pred": len(mr["markers"]), "ok": ok}
            per_fig.append(row)
            if verbose:
                print(json.dumps(row), file=sys.stderr)
    return {"groups": {k: g.report() for k, g in sorted(groups.items())}, "per_figure": per_fig, "scale": scale,
            "seconds": {"panels": round(t_layout, 1), "markers": round(t_markers, 1)}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--split", default="check", choices=["check", "tune", "all"])
    ap.add_argument("--source", action="append", default=None)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--markers-method", default=None, help="markers.detect.method (default: the CLI's)")
    ap.add_argument("--verifier", default=None, help="marker verifier weights (default: the shipped ones)")
    ap.add_argument("--verify-score", type=float, default=None,
                    help="markers.detect.verify_score (default: the CLI's); pick it on --split tune only")
    ap.add_argument("--scale", type=float, default=1.0,
                    help="resize every image by this factor first; boxes are mapped back (default 1: as labelled)")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    recs = [r for r in evalset.load() if args.split in ("all", r["split"])
            and (not args.source or r["source"] in args.source)]
    recs = [r for r in recs if r.get("checked")]
    mp = {k: v for k, v in (("method", args.markers_method), ("verifier", args.verifier),
                            ("verify_score", args.verify_score)) if v is not None}
    if args.scale <= 0:
        ap.error("--scale must be > 0")
    out = run(recs, args.verbose, mp or None, scale=args.scale)
    print(f"{'group':28s} {'figs':>4s} {'P':>6s} {'R':>6s} {'F1':>6s} {'letters':>8s} | {'mk figs':>7s} {'gold':>5s} "
          f"{'R':>6s} {'P':>6s} {'tip':>6s} {'patch':>6s} | {'e2e n':>5s} {'own':>6s} {'txt':>6s} {'lost b/l/t':>10s}")
    for k, g in out["groups"].items():
        p, m, e = g.get("panels", {}), g.get("markers", {}), g.get("end_to_end", {})
        f = lambda v: f"{v:6.3f}" if isinstance(v, float) else f"{'-':>6s}"  # noqa: E731
        print(f"{k:28s} {p.get('figures', 0):4d} {f(p.get('P'))} {f(p.get('R'))} {f(p.get('F1'))} "
              f"{f(p.get('letters')):>8s} | {m.get('figures', 0):7d} {m.get('gold', 0):5d} {f(m.get('R'))} "
              f"{f(m.get('P'))} {f(m.get('tip_within_half'))} {f(m.get('patch_contains_tip'))} | "
              f"{e.get('panels', 0):5d} {f(e.get('own_text'))} {f(e.get('own_text_given_labelled_panels'))} "
              f"{'/'.join(str(v) for v in e.get('lost_at', {}).values()) or '-':>10s}")
    print(f"seconds: {out['seconds']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
