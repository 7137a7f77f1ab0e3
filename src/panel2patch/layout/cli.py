"""``panel2patch panels IMAGE [IMAGE ...] --out FILE.jsonl``

One JSON object per input image, in input order::

    {"image": "<path as given>", "width": W, "height": H,
     "panels": [{"bbox": [x1, y1, x2, y2], "label": "A" | null, "label_bbox": [x1, y1, x2, y2] | null,
                 "kind": "image" | "chart" | "diagram" | "other", "score": 0.97,
                 "kind_score": 0.8, "method": "xy-cut"}],
     "method": "letters" | "gutters"}

Pixel coordinates of the input image, x2/y2 exclusive; panels in letter order when every panel
has a letter, else in reading order. An image that cannot be read gives
``{"image": ..., "width": null, "height": null, "panels": [], "error": "..."}`` and the run goes
on. ``--out -`` writes to stdout. A summary goes to stderr, and a progress bar when stderr is a
terminal. Exit status: 0 when every image was read, 1 when one or more gave an error record
(the others are written), 2 when the output cannot be opened or ``--method detector|combined``
is given without usable ``--detector-weights``.

``--method``: ``splitter`` (default; image analysis only), ``detector`` (the learned detector's
panel boxes, letters read and attached as usual) or ``combined`` (detector boxes as cut hints
where the image analysis finds no gutter), as ``layout.method`` in the workflow config. Panels
found with the detector's help have ``"method": "proposals"``.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="figure images (PNG, JPEG, TIFF, ...)")
    parser.add_argument("--out", dest="out_path", required=True, metavar="FILE.jsonl",
                        help='output JSON lines ("-" for stdout)')
    parser.add_argument("--reader", default="glyph", choices=["glyph", "tesseract"],
                        help="how panel letters are read (default: the built-in glyph classifier)")
    parser.add_argument("--max-side", type=int, default=1000,
                        help="analyse a copy whose long side is at most this many pixels (default 1000)")
    parser.add_argument("--no-kind", action="store_true", help="skip the panel-kind classifier")
    parser.add_argument("--method", default="splitter", choices=["splitter", "detector", "combined"],
                        help="panel boxes from image analysis (default), the learned detector, or both")
    parser.add_argument("--detector-weights", metavar="FILE.pt",
                        help="trained detector (snakemake train_detector: results/models/panel_detector.pt); "
                             "needed by --method detector|combined")


def process_image(path: str, reader: str = "glyph", max_side: int = 1000, kinds: bool = True,
                  method: str = "splitter", detector=None) -> dict:
    """One image -> one output record (never raises for a bad image)."""
    from .parse import parse_figure

    try:
        res = parse_figure(path, reader=reader, max_side=max_side, kinds=kinds, method=method, detector=detector)
    except Exception as exc:  # unreadable, truncated, not an image, or a bug on one figure
        return {"image": path, "width": None, "height": None, "panels": [],
                "error": f"{type(exc).__name__}: {exc}"}
    return {"image": path, "width": res["width"], "height": res["height"], "panels": res["panels"],
            "method": res["method"]}


def main(args: argparse.Namespace) -> int:
    import sys

    from ..cli import EXIT_FAILED, EXIT_OK, EXIT_USAGE, write_jsonl
    from .parse import load_method

    try:
        detector = load_method(args.method, args.detector_weights)
    except (ValueError, OSError, RuntimeError) as exc:  # no weights, a changed file, not a detector
        print(f"panel2patch panels: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    records = (process_image(path, reader=args.reader, max_side=args.max_side, kinds=not args.no_kind,
                             method=args.method, detector=detector)
               for path in args.images)
    _, errors = write_jsonl(records, args.out_path, "panels: images", items_key="panels", total=len(args.images))
    return EXIT_FAILED if errors else EXIT_OK
