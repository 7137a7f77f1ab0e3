"""Panel letters on synthetic compound figures: where letters are lost, by letter placement.

    .venv/bin/python benchmarks/letters_synth.py [--n 150] [--seed 999] [--vqa DIR] [--json OUT]

Figures: :func:`panel2patch.layout.synthetic.make_figure` (grids, rows, guillotine layouts; white,
black, line or no gutters; letters "A", "(a)", "a)", "A." ... inside a panel corner or outside it)
composed from VQA-RAD radiographs of the evaluation set's ``tune`` articles (CC0), rendered
charts, diagrams and procedural micrographs. Ground truth is exact (the generator's boxes).

Printed, overall and per placement (``in-tl`` = inside the panel's top-left corner, on the
picture; ``out-top`` / ``out-left`` = in the margin):

* ``candidates``: share of printed letters that :func:`panel2patch.layout.letters.find_candidates`
  proposes (a candidate box overlapping the letter, IoU > 0.3) - the ceiling for everything after;
* ``read``: share of those candidates whose best glyph reading is the printed letter;
* ``letters``: share of matched panels (IoU >= 0.5) whose parsed letter is right, and panel F1 -
  what ``panel2patch panels`` gives.

The synthetic styles are not the real distribution: use it to see *which stage* loses letters,
and the real evaluation set (``benchmarks/parse_eval.py``) for how many.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from panel2patch.evaluate.boxes import iou, match_boxes  # noqa: E402
from panel2patch.evaluate.split import split_of  # noqa: E402
from panel2patch.layout import synthetic as S  # noqa: E402
from panel2patch.layout.letters import find_candidates, read_glyph  # noqa: E402
from panel2patch.layout.parse import parse_canvas  # noqa: E402
from panel2patch.layout.split import prepare  # noqa: E402


def sources(vqa: Path | None, seed: int = 1) -> S.Sources:
    import matplotlib

    items = []
    if vqa and vqa.is_dir():
        items += S.load_vqa_rad(vqa, 480, None, keep=lambda name: split_of(Path(name).stem) == "tune")
    rng = np.random.default_rng([seed, 7919])
    with matplotlib.rc_context({"font.family": "DejaVu Sans"}):
        items += [S.Source(im := S.render_chart(rng), "chart", "chart", S._is_dark(im)) for _ in range(20)]
        items += [S.Source(im := S.render_diagram(rng), "diagram", "diagram", False) for _ in range(8)]
    for _ in range(30):
        im, kind = S.render_texture(rng)
        items.append(S.Source(im, kind, f"texture-{kind}", S._is_dark(im)))
    return S.Sources(items)


def run(n: int, seed: int, src: S.Sources) -> dict:
    per = defaultdict(Counter)
    for i in range(n):
        img, t = S.make_figure(S.figure_rng(seed, i), src)
        st = t["style"]
        canvas = prepare(img)
        cands = find_candidates(canvas)
        read_glyph(cands)
        res = parse_canvas(canvas)
        gold, pred = t["panels"], res["panels"]
        pairs = match_boxes([p["bbox"] for p in pred], [g["bbox"] for g in gold], 0.5)
        for key in ("ALL", st["letter_place"] if st["lettered"] else "unlettered"):
            c = per[key]
            c["gold"] += len(gold)
            c["pred"] += len(pred)
            c["tp"] += len(pairs)
            for pi, gj, _ in pairs:
                if gold[gj]["label"]:
                    c["l_n"] += 1
                    c["l_ok"] += (pred[pi]["label"] or "").lower() == gold[gj]["label"].lower()
            if not st["lettered"]:
                continue
            s = canvas.scale
            for lab in t["labels"]:
                b = [v * s for v in lab["bbox"]]
                hit = [k for k in cands if iou(k.label_box, b) > 0.3 or iou(k.box, b) > 0.3]
                c["printed"] += 1
                c["cand"] += bool(hit)
                c["read"] += any(chr(97 + int(np.argmax(k.probs))) == lab["char"].lower() for k in hit)
    out = {}
    for key, c in sorted(per.items()):
        p, r = c["tp"] / max(1, c["pred"]), c["tp"] / max(1, c["gold"])
        out[key] = {"panels_f1": round(2 * p * r / (p + r), 3) if p + r else 0.0,
                    "letters": round(c["l_ok"] / c["l_n"], 3) if c["l_n"] else None, "letters_n": c["l_n"],
                    "printed": c["printed"], "candidates": round(c["cand"] / c["printed"], 3) if c["printed"] else None,
                    "read": round(c["read"] / c["cand"], 3) if c["cand"] else None}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=150)
    ap.add_argument("--seed", type=int, default=999)
    ap.add_argument("--vqa", type=Path, default=REPO.parent / "shared" / "data" / "vqa-rad")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    out = run(args.n, args.seed, sources(args.vqa))
    print(f"{'placement':12s} {'printed':>7s} {'candidates':>10s} {'read':>6s} {'letters':>8s} {'panels F1':>9s}")
    for key, v in out.items():
        f = lambda x: f"{x:.3f}" if isinstance(x, float) else "-"  # noqa: E731
        print(f"{key:12s} {v['printed']:7d} {f(v['candidates']):>10s} {f(v['read']):>6s} {f(v['letters']):>8s} "
              f"{v['panels_f1']:9.3f}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
