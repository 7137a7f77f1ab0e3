"""``panel2patch split-caption --in CAPTIONS.jsonl --out FILE.jsonl``

Input: one JSON object per line, ``{"id": ..., "caption": "..."}`` (other keys are ignored;
blank lines are skipped).  Output: one line per input record, in input order::

    {"id": ..., "subcaptions": {"_shared": "...", "A": "..."},
     "markers": [{"type": "arrow", "colour": "red" | null, "count": 1 | null,
                  "labels": ["B"], "phrase": "..."}]}

A line that is not valid JSON, not an object, or has no string ``caption`` gives
``{"id": <id or null>, "line": <line number>, "error": "..."}`` instead, and the run goes on.
``-`` reads stdin / writes stdout.  A summary goes to stderr; the exit status is 0 unless a
file cannot be opened.
"""

from __future__ import annotations

import argparse
import json
import sys

from .markers import find_marker_phrases
from .split import split_caption

_MARKER_KEYS = ("type", "colour", "count", "labels", "phrase")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--in", dest="in_path", required=True, metavar="CAPTIONS.jsonl",
                        help='JSON lines {"id": ..., "caption": "..."} ("-" for stdin)')
    parser.add_argument("--out", dest="out_path", required=True, metavar="FILE.jsonl",
                        help='output JSON lines ("-" for stdout)')
    parser.add_argument("--no-markers", action="store_true", help="skip marker-phrase extraction")


def process_line(line: str, lineno: int, markers: bool = True) -> dict:
    """One input line -> one output record (never raises for bad input)."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError as exc:
        return {"id": None, "line": lineno, "error": f"invalid JSON: {exc.msg} (column {exc.colno})"}
    if not isinstance(rec, dict):
        return {"id": None, "line": lineno, "error": f"expected a JSON object, got {type(rec).__name__}"}
    rid = rec.get("id")
    cap = rec.get("caption")
    if cap is None:
        return {"id": rid, "line": lineno, "error": "missing 'caption'"}
    if not isinstance(cap, str):
        return {"id": rid, "line": lineno, "error": f"'caption' must be a string, got {type(cap).__name__}"}
    try:
        out = {"id": rid, "subcaptions": split_caption(cap)}
        if markers:
            out["markers"] = [{k: m[k] for k in _MARKER_KEYS} for m in find_marker_phrases(cap)]
        return out
    except Exception as exc:  # a bug on one caption must not stop a corpus run
        return {"id": rid, "line": lineno, "error": f"internal error: {type(exc).__name__}: {exc}"}


def main(args: argparse.Namespace) -> int:
    from ..cli import write_jsonl

    markers = not getattr(args, "no_markers", False)
    fin = sys.stdin if args.in_path == "-" else open(args.in_path, encoding="utf-8")
    try:
        records = (process_line(line, lineno, markers=markers) for lineno, line in enumerate(fin, 1) if line.strip())
        write_jsonl(records, args.out_path, "split-caption: records")
    finally:
        if fin is not sys.stdin:
            fin.close()
    return 0
