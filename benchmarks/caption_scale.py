"""Seconds of caption work (the text stage's ``caption_rows``: split + marker phrases) against
caption length, on hostile repetitive captions up to 1 MB, one core (``split`` is also timed past
the cap, to show it stays linear).

    .venv/bin/python benchmarks/caption_scale.py [--max-kb 1024]

Caption work must grow linearly: one long caption may not stall its shard. Captions longer than
``text.split.MAX_CAPTION_CHARS`` are kept whole without splitting (the last rows show that cost).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from panel2patch.text.markers import find_marker_phrases  # noqa: E402
from panel2patch.text.split import split_caption  # noqa: E402
from panel2patch.text.stage import MAX_CAPTION_CHARS, caption_rows  # noqa: E402

UNITS = {
    "panels+markers": "(A) arrows indicate cells; (B) asterisk marks nuclei. ",
    "letter list": "A, B, C, ",
    "bare letters": "a b c d e f g h ",
    "brackets": "((((a) b; c. D",
    "cited letters": "Arrows (red) in (A), (B) and (C) mark cells. ",
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max-kb", type=int, default=1024)
    args = ap.parse_args(argv)
    sizes = [kb for kb in (2, 8, 32, 96, 128, 512, 1024) if kb <= args.max_kb]
    print(f"MAX_CAPTION_CHARS = {MAX_CAPTION_CHARS}")
    print(f"{'caption':16s} {'KB':>5s} {'split s':>8s} {'markers s':>9s} {'caption_rows s':>14s}  us/char")
    for name, unit in UNITS.items():
        for kb in sizes:
            cap = unit * (kb * 1024 // len(unit))
            t_mark = float("nan")
            t = time.perf_counter()
            subs = split_caption(cap)
            t_split = time.perf_counter() - t
            if len(cap) <= MAX_CAPTION_CHARS:
                t = time.perf_counter()
                find_marker_phrases(cap, subs)
                t_mark = time.perf_counter() - t
            t = time.perf_counter()
            caption_rows("fig", cap, [])
            t_rows = time.perf_counter() - t
            print(f"{name:16s} {kb:5d} {t_split:8.3f} {t_mark:9.3f} {t_rows:14.3f}  {1e6 * t_rows / len(cap):7.1f}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
