"""``panel2patch split-caption --in CAPTIONS.jsonl --out FILE.jsonl``

Input: one JSON object per line, ``{"id": ..., "caption": "..."}`` (other keys are ignored;
blank lines are skipped).  Output: one line per input record, in input order::

    {"id": ..., "subcaptions": {"_shared": "...", "A": "..."},
     "markers": [{"type": "arrow", "colour": "red" | null, "count": 1 | null,
                  "labels": ["B"], "phrase": "..."}]}

A line that is not UTF-8, not valid JSON (or nested too deeply), not an object, has no string
``caption``, a caption over ``MAX_CAPTION_CHARS`` (100,000) characters, or holds text that cannot be written (a lone surrogate such as ``"\\ud800"``) gives
``{"id": <id or null>, "line": <line number>, "error": "..."}`` instead, and the run goes on.
A UTF-8 byte-order mark before line 1 is ignored.  ``-`` reads stdin / writes stdout.  A
summary goes to stderr.  Exit status: 0 when every line was split, 1 when one or more lines gave
an error record (the others are written), 2 when a file cannot be opened.
"""

from __future__ import annotations

import argparse
import json
import sys

from .markers import find_marker_phrases
from .split import MAX_CAPTION_CHARS, split_caption

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
    if len(cap) > MAX_CAPTION_CHARS:
        return {"id": rid, "line": lineno, "error": f"caption of {len(cap)} characters > {MAX_CAPTION_CHARS}: not split"}
    try:
        out = {"id": rid, "subcaptions": split_caption(cap)}
        if markers:
            out["markers"] = [{k: m[k] for k in _MARKER_KEYS} for m in find_marker_phrases(cap)]
        return out
    except Exception as exc:  # a bug on one caption must not stop a corpus run
        return {"id": rid, "line": lineno, "error": f"internal error: {type(exc).__name__}: {exc}"}


def read_records(fin, markers: bool = True):
    """Output records of the lines of a binary stream, one per non-blank line (never raises for bad
    input). Lines are decoded one at a time, so a bad byte costs only its own line."""
    for lineno, raw in enumerate(fin, 1):
        try:
            line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            yield {"id": None, "line": lineno, "error": f"not UTF-8: byte {raw[exc.start]:#04x} at byte {exc.start + 1}"}
            continue
        if not line.strip():
            continue
        try:
            rec = process_line(line, lineno, markers=markers)
        except RecursionError:
            rec = {"id": None, "line": lineno, "error": "invalid JSON: nested too deeply"}
        try:
            json.dumps(rec, ensure_ascii=False).encode("utf-8")
        except (UnicodeEncodeError, RecursionError) as exc:
            why = "nested too deeply" if isinstance(exc, RecursionError) else "a lone surrogate (\\ud800-\\udfff), not UTF-8 text"
            rec = {"id": None, "line": lineno, "error": f"cannot be written: {why}"}
        yield rec


def main(args: argparse.Namespace) -> int:
    from ..cli import EXIT_FAILED, EXIT_OK, write_jsonl

    markers = not getattr(args, "no_markers", False)
    fin = sys.stdin.buffer if args.in_path == "-" else open(args.in_path, "rb")
    try:
        _, errors = write_jsonl(read_records(fin, markers=markers), args.out_path, "split-caption: records")
    finally:
        if fin is not sys.stdin.buffer:
            fin.close()
    return EXIT_FAILED if errors else EXIT_OK
