"""How many panel texts stay distinct after a text encoder's right truncation, with the shared
caption text first (the order before issue #16) or the panel's own subcaption first (now).

    .venv/bin/python benchmarks/text_truncation.py [RESULTS_DIR] [--context 77 32]

Reads every ``<RESULTS_DIR>/shard-*/text/subcaptions.parquet`` (the demo run's, by default
``results/``) and tokenizes with the model's tokenizer (the bert-base-uncased WordPiece vocab
shipped offline; open_clip's HFTokenizer pads/truncates on the right). Printed per context
length: distinct panel texts, and distinct token sequences for each order.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def main(argv=None) -> int:
    import pandas as pd

    from panel2patch.model.clip import Tokenizer

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="?", type=Path, default=REPO / "results")
    ap.add_argument("--context", type=int, nargs="+", default=[77, 32])
    args = ap.parse_args(argv)
    files = sorted(args.results.glob("shard-*/text/subcaptions.parquet"))
    if not files:
        print(f"no shard-*/text/subcaptions.parquet under {args.results}: run the demo first", file=sys.stderr)
        return 2
    subs = pd.concat([pd.read_parquet(f) for f in files])
    shared = subs[subs.key == "_shared"].set_index("figure_id").text.to_dict()
    own = subs[(subs.key != "_shared") & (subs.text.str.len() > 0)]
    before = [f"{shared.get(f, '')} {t}".strip() for f, t in zip(own.figure_id, own.text)]
    after = [f"{t} {shared.get(f, '')}".strip() for f, t in zip(own.figure_id, own.text)]
    print(f"{len(files)} shards, {len(own)} panel subcaptions, {len(set(before))} distinct panel texts")
    print(f"{'context':>7s} {'shared first':>13s} {'own first':>10s}")
    for n in args.context:
        tok = Tokenizer(None, n)
        distinct = [len({tuple(r) for r in tok(texts).tolist()}) for texts in (before, after)]
        print(f"{n:7d} {distinct[0]:13d} {distinct[1]:10d}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
