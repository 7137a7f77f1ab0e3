"""Speed of the layout stage next to plain image decoding, on one core.

    PYTHONPATH=src python benchmarks/layout_speed.py [--data DIR] [--images GLOB ...]
                                                      [--reader glyph|tesseract] [--reps 5]
                                                      [--clock wall|cpu]

Images: the hand-labelled development figures and the EXSCLAIM figures under
``$P2P_SHARED_DATA`` / ``<repo>/../shared/data`` (or ``--images``). The process pins itself to one
CPU (``os.sched_setaffinity``, like ``taskset -c 0``) and sets ``OMP_THREAD_LIMIT`` /
``OMP_NUM_THREADS`` / OpenCV threads to 1 (tesseract inherits them).

Per image: ``decode`` = ``Image.open(p)``, ``load()``, ``convert("RGB")``;
``layout`` = ``parse_figure(p)`` from the path (decoding included);
``markers`` = ``figure_markers`` on the decoded image with that layout, per image panel. The
glyph templates are built once before timing (about 1 s per process, not per figure). Timing
runs in ``--reps`` rounds over all images, each step timed once per image and round, and keeps
each image's best round per step (so decode and layout sample the same stretches of time). Printed:
both medians over images, the ratio of the medians, and the median of per-image ratios.
``--clock cpu`` times with this process's CPU time (``time.process_time``) instead of wall time:
steadier on a shared, loaded machine, where wall times mostly measure the other processes
(both sides of the ratio are single-threaded, so on an idle core the two clocks agree).
"""

from __future__ import annotations

import os

for _v in ("OMP_THREAD_LIMIT", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse  # noqa: E402
import glob  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "src") not in sys.path:
    sys.path.insert(0, str(REPO / "src"))

import cv2  # noqa: E402
from PIL import Image  # noqa: E402

from panel2patch.layout.glyphs import templates  # noqa: E402
from panel2patch.layout.parse import parse_figure  # noqa: E402
from panel2patch.markers.detect import figure_markers  # noqa: E402


def default_images(data: Path) -> list[str]:
    root = data / "panels-gt"
    return sorted(glob.glob(str(root / "hand-labelled-dev" / "images" / "*.png"))) + \
        sorted(glob.glob(str(root / "exsclaim-naturecomms" / "images" / "*.jpg")))


def once(fn, clock=time.perf_counter) -> float:
    t = clock()
    fn()
    return clock() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    env = os.environ.get("P2P_SHARED_DATA")
    ap.add_argument("--data", type=Path, default=Path(env) if env else REPO.parent / "shared" / "data")
    ap.add_argument("--images", nargs="*", help="image files or globs (default: the shared dev + EXSCLAIM figures)")
    ap.add_argument("--reader", default="glyph", choices=["glyph", "tesseract"])
    ap.add_argument("--reps", type=int, default=5, help="rounds over all images (best round kept)")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall time (default) or this process's CPU time (steadier on a busy machine)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    cv2.setNumThreads(1)
    paths = [p for g in args.images for p in sorted(glob.glob(g))] if args.images else default_images(args.data)
    if not paths:
        print("no images found", file=sys.stderr)
        return 1
    t = time.perf_counter()
    templates()
    build = time.perf_counter() - t
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    # Rounds over all images, each image's decode, layout and markers timed once per round, and
    # the best round kept per image and step: both sides of a ratio sample the same stretches of
    # time, so a busy moment of the machine does not land on one side only.
    work = []
    for p in paths:
        with Image.open(p) as im:
            size = im.size
            rgb = im.convert("RGB")
        layout = parse_figure(rgb, reader=args.reader)  # markers run on the decoded image with its layout
        work.append((p, size, rgb, layout))
    times = [{"decode": [], "layout": [], "markers": []} for _ in paths]
    for _ in range(args.reps):
        for (p, size, rgb, layout), t in zip(work, times):
            t["decode"].append(once(lambda: Image.open(p).convert("RGB"), clock))
            t["layout"].append(once(lambda: parse_figure(p, reader=args.reader), clock))
            t["markers"].append(once(lambda: figure_markers(rgb, layout=layout), clock))
    rows = []
    for (p, size, rgb, layout), t in zip(work, times):
        dec, lay, mk = (min(t[k]) * 1000.0 for k in ("decode", "layout", "markers"))
        n_image = sum(q["kind"] == "image" for q in layout["panels"])
        rows.append({"image": os.path.basename(p), "size": size, "decode_ms": round(dec, 2),
                     "layout_ms": round(lay, 2), "ratio": round(lay / dec, 2), "image_panels": n_image,
                     "markers_ms": round(mk, 2), "parse_ratio": round((lay + mk) / dec, 2),
                     "markers_ms_per_image_panel": round(mk / n_image, 2) if n_image else None})
        per = f"{mk / n_image:6.1f} ms/image panel ({n_image})" if n_image else "no image panel"
        print(f"{rows[-1]['image'][:36]:36s} {size[0]:5d}x{size[1]:<5d} decode {dec:7.1f} ms  "
              f"layout {lay:7.1f} ms  x{lay / dec:5.1f}   markers {per}")
    md = statistics.median(r["decode_ms"] for r in rows)
    ml = statistics.median(r["layout_ms"] for r in rows)
    mr = statistics.median(r["ratio"] for r in rows)
    per_panel = [r["markers_ms_per_image_panel"] for r in rows if r["markers_ms_per_image_panel"] is not None]
    mm = statistics.median(per_panel) if per_panel else float("nan")
    mk_med = statistics.median(r["markers_ms"] for r in rows)
    both = statistics.median(r["layout_ms"] + r["markers_ms"] for r in rows)
    mpr = statistics.median(r["parse_ratio"] for r in rows)
    print(f"\n{len(rows)} images, reader={args.reader}, one core, {args.clock} clock; "
          f"glyph templates built once in {build:.2f} s")
    print(f"median decode {md:.1f} ms, median layout {ml:.1f} ms, ratio of medians {ml / md:.1f}x, "
          f"median per-image ratio {mr:.1f}x (target <= 5x)")
    print(f"markers: median {mm:.1f} ms per image panel over {len(per_panel)} figures with image panels, "
          f"median {mk_med:.1f} ms per figure")
    print(f"layout + markers: median {both:.1f} ms, ratio of medians {both / md:.1f}x, "
          f"median per-image ratio {mpr:.1f}x (target <= 10x)")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "median_decode_ms": md, "median_layout_ms": ml,
                                         "ratio_of_medians": ml / md, "median_ratio": mr,
                                         "median_markers_ms_per_image_panel": mm, "median_markers_ms": mk_med,
                                         "median_layout_markers_ms": both, "layout_markers_ratio_of_medians": both / md,
                                         "median_layout_markers_ratio": mpr}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
