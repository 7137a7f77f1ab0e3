"""The ``panel2patch`` command line: each stage on files by hand, same code as the workflow.

    panel2patch ingest PATH... --out DIR        JATS files/folders, PMC .tar.gz packages, PDFs
    panel2patch split-caption --in CAPTIONS.jsonl --out FILE.jsonl
    panel2patch panels IMAGE... --out FILE.jsonl
    panel2patch markers IMAGE... --out FILE.jsonl
    panel2patch corpus build RESULTS | check CORPUS_DIR | report RESULTS
    panel2patch recover [SNAKEMAKE ARGS...]     after a crash: unlock, then rerun incomplete jobs

Each subcommand lives next to its stage (``panel2patch.<stage>.cli``) and is imported only when
it runs, so ``panel2patch --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

# subcommand -> (module with add_arguments(parser) and main(args), one-line help)
COMMANDS = {
    "ingest": ("panel2patch.ingest.cli", "extract figures, captions, licences and citing sentences"),
    "split-caption": ("panel2patch.text.cli", "split captions into per-panel subcaptions"),
    "panels": ("panel2patch.layout.cli", "find panels, panel letters and panel kinds in figure images"),
    "markers": ("panel2patch.markers.cli", "find arrows, arrowheads and asterisks on image panels, and their patches"),
    "corpus": ("panel2patch.corpus.cli", "build, audit or report the figure/panel/patch WebDataset corpus"),
    "recover": ("panel2patch.recover", "after a crash: check nothing still runs, unlock, continue the workflow with --rerun-incomplete"),
}


def write_jsonl(records, out_path: str, summary: str, items_key: str | None = None) -> None:
    """Write each record as one JSON line to ``out_path`` ("-" = stdout), flushed as it comes, then
    print ``<summary>: N <unit>, [M <items_key>,] E errors`` to stderr (records with "error" count)."""
    fout = sys.stdout if out_path == "-" else open(out_path, "w", encoding="utf-8")
    n = errors = items = 0
    try:
        for rec in records:
            n += 1
            errors += "error" in rec
            items += len(rec.get(items_key) or []) if items_key else 0
            fout.write(json.dumps(rec, ensure_ascii=False) + "\n")
            fout.flush()
    finally:
        if fout is not sys.stdout:
            fout.close()
    unit, _, label = summary.partition(":")
    counts = f"{n} {label.strip() or 'records'}" + (f", {items} {items_key}" if items_key else "")
    print(f"{unit}: {counts}, {errors} errors", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="panel2patch", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_)
        p.set_defaults(_module=module)
        try:
            importlib.import_module(module).add_arguments(p)
        except ModuleNotFoundError as exc:  # a stage not installed in this build
            if not exc.name or not module.startswith(exc.name):
                raise
            p.set_defaults(_missing=str(exc))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "_passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra  # handed on as they are (panel2patch recover -> snakemake)
    if getattr(args, "_missing", None):
        print(f"panel2patch {args.command}: not available in this build ({args._missing})", file=sys.stderr)
        return 2
    return int(importlib.import_module(args._module).main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
