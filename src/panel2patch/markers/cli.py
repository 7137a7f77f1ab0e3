"""``panel2patch markers IMAGE [IMAGE ...] --out FILE.jsonl``

One JSON object per input image, in input order::

    {"image": "<path as given>",
     "markers": [{"type": "arrow" | "arrowhead" | "asterisk" | "other", "bbox": [x1, y1, x2, y2],
                  "colour": "red" | null, "tip": [x, y] | null, "score": 0.9}],
     "patches": [{"bbox": [x1, y1, x2, y2], "marker_indices": [0]}]}

Whole-figure pixel coordinates, x2/y2 exclusive. Panels are found with the layout parser and
markers are searched on image panels only (panel letters excluded). An image that cannot be read
gives ``{"image": ..., "markers": [], "patches": [], "error": "..."}`` and the run goes on.
``--out -`` writes to stdout; a summary goes to stderr, and a progress bar when stderr is a
terminal. Exit status: 0 when every image was read, 1 when one or more gave an error record (the
others are written), 2 when the output cannot be opened. Markers are found by the shipped marker
verifier (``--method verified``, the default: glyph-like components judged by a small CNN, see
``markers.verify``); ``--method heuristic`` uses the shape rules, ``--method both --weights
results/models/marker_detector.pt`` adds the learned detector's boxes (see ``markers.detect``).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="figure images (PNG, JPEG, TIFF, ...)")
    parser.add_argument("--out", dest="out_path", required=True, metavar="FILE.jsonl",
                        help='output JSON lines ("-" for stdout)')
    parser.add_argument("--tau", type=float, default=None,
                        help="Panel2Patch tau for merging caption boxes with markers (default: patches.PATCH_DEFAULTS)")
    parser.add_argument("--method", choices=("verified", "heuristic", "learned", "both"), default="verified",
                        help="marker detector: glyph candidates judged by the shipped verifier CNN (default), "
                             "image-analysis shape rules, the learned detector (--weights), or rules + detector")
    parser.add_argument("--verifier", default=None, metavar="FILE.pt",
                        help="marker verifier weights (rule train_marker_verifier; default: the shipped ones)")
    parser.add_argument("--weights", default=None, metavar="FILE.pt",
                        help="learned marker detector (rule train_marker_detector)")


def process_image(path: str, patch_params: dict | None = None, params: dict | None = None) -> dict:
    """One image -> one output record (never raises for a bad image)."""
    from .detect import figure_markers

    try:
        res = figure_markers(path, params=params, patch_params=patch_params)
    except Exception as exc:  # unreadable, truncated, not an image, or a bug on one figure
        return {"image": path, "markers": [], "patches": [], "error": f"{type(exc).__name__}: {exc}"}
    markers = [{"type": m["type"], "bbox": [int(v) for v in m["bbox"]], "colour": m.get("colour"),
                "tip": m.get("tip"), "score": round(float(m["score"]), 4)} for m in res["markers"]]
    patches = [{"bbox": [int(v) for v in p["bbox"]], "marker_indices": [int(i) for i in p["marker_indices"]]}
               for p in res["patches"]]
    return {"image": path, "markers": markers, "patches": patches}


def main(args: argparse.Namespace) -> int:
    from ..cli import EXIT_FAILED, EXIT_OK, write_jsonl

    patch_params = {"tau": args.tau} if getattr(args, "tau", None) is not None else None
    params = {"method": getattr(args, "method", "verified"), "weights": getattr(args, "weights", None),
              "verifier": getattr(args, "verifier", None)}
    _, errors = write_jsonl((process_image(path, patch_params, params) for path in args.images), args.out_path,
                            "markers: images", items_key="markers", total=len(args.images))
    return EXIT_FAILED if errors else EXIT_OK
