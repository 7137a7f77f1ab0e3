"""The ``panel2patch`` command line: each stage on files by hand, same code as the workflow.

    panel2patch ingest PATH... --out DIR        JATS files/folders, PMC .tar.gz packages, PDFs
    panel2patch split-caption --in CAPTIONS.jsonl --out FILE.jsonl
    panel2patch panels IMAGE... --out FILE.jsonl
    panel2patch markers IMAGE... --out FILE.jsonl
    panel2patch corpus build RESULTS | check CORPUS_DIR | report RESULTS
    panel2patch evaluate MODEL... --out DIR     benchmarks, each model next to its untrained baseline
    panel2patch ablation --arm NAME=EVAL.json... --baseline NAME --out DIR   paired bootstrap table
    panel2patch audit RESULTS                   lineage, reproduction and claims of a workflow run
    panel2patch recover [SNAKEMAKE ARGS...]     after a crash: unlock, then rerun incomplete jobs

Each subcommand lives next to its stage (``panel2patch.<stage>.cli``) and is imported only when
it runs, so ``panel2patch --help`` stays fast. Conventions shared by every subcommand (exit
status, ``-q``/``-v``, progress bars, one-line errors) live here; see ``EPILOG``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys

from . import __version__

# subcommand -> (module with add_arguments(parser) and main(args), one-line help)
COMMANDS = {
    "ingest": ("panel2patch.ingest.cli", "extract figures, captions, licences and citing sentences"),
    "split-caption": ("panel2patch.text.cli", "split captions into per-panel subcaptions"),
    "panels": ("panel2patch.layout.cli", "find panels, panel letters and panel kinds in figure images"),
    "markers": ("panel2patch.markers.cli", "find arrows, arrowheads and asterisks on image panels, and their patches"),
    "corpus": ("panel2patch.corpus.cli", "build, audit or report the figure/panel/patch WebDataset corpus"),
    "evaluate": ("panel2patch.evaluate.cli", "benchmark open_clip models (retrieval, zero-shot, probe, VQA, grounding, perturbed texts) next to their untrained baseline"),
    "ablation": ("panel2patch.evaluate.ablation_cli", "compare evaluated runs with a baseline run: difference and paired bootstrap interval per metric"),
    "audit": ("panel2patch.audit.cli", "check a run's lineage through MLflow, reproduce data stages, compare the papers' claims"),
    "recover": ("panel2patch.recover", "after a crash: check nothing still runs, unlock, continue the workflow with --rerun-incomplete"),
}

EXIT_OK = 0          # every input processed
EXIT_FAILED = 1      # one or more inputs failed; the outputs of the others are written
EXIT_USAGE = 2       # bad arguments, or a file or folder the command needs cannot be read or written
EXIT_INTERNAL = 3    # an unexpected error (a bug): one line, -v for the traceback
EXIT_INTERRUPTED = 130

EPILOG = """\
exit status:
  0    every input was processed
  1    one or more inputs failed (an "error" record, a skipped article, a corpus problem);
       the outputs for the other inputs are written
  2    usage error: a bad option, or a file or folder the command needs cannot be read or written
  3    internal error (a bug; rerun with -v for the traceback)
  130  interrupted (Ctrl-C)

Progress bars go to stderr when it is a terminal (never with -q); summaries go to stderr, data
to the --out file or stdout.
"""


class UsageError(Exception):
    """A command that cannot run as asked: printed as ``panel2patch <command>: error: <message>``,
    exit status 2 (``EXIT_USAGE``)."""


# -q / -v of this invocation (set by main; stage modules read them through the helpers below)
_OPTIONS = {"quiet": False, "verbose": 0}


def quiet() -> bool:
    return bool(_OPTIONS["quiet"])


def show_progress() -> bool:
    """Progress bars only on an interactive stderr and never with -q."""
    return not quiet() and sys.stderr.isatty()


def progress(iterable, total: int | None = None, desc: str = "", unit: str = "it"):
    """``iterable`` wrapped in a tqdm bar on stderr when ``show_progress()``, else unchanged."""
    if not show_progress():
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, leave=False)


def summary(message: str) -> None:
    """A run summary on stderr (not with -q)."""
    if not quiet():
        print(message, file=sys.stderr)


def write_jsonl(records, out_path: str, summary_label: str, items_key: str | None = None,
                total: int | None = None) -> tuple[int, int]:
    """Write each record as one JSON line to ``out_path`` ("-" = stdout), flushed as it comes, then
    print ``<summary>: N <unit>, [M <items_key>,] E errors`` to stderr (records with "error" count).
    Returns (records, errors). A progress bar over ``total`` records shows on a terminal."""
    fout = sys.stdout if out_path == "-" else open(out_path, "w", encoding="utf-8")
    n = errors = items = 0
    unit, _, label = summary_label.partition(":")
    try:
        for rec in progress(records, total=total, desc=unit, unit=(label.split() or ["record"])[-1].rstrip("s")):
            n += 1
            errors += "error" in rec
            items += len(rec.get(items_key) or []) if items_key else 0
            fout.write(json.dumps(rec, ensure_ascii=False) + "\n")
            fout.flush()
    finally:
        if fout is not sys.stdout:
            fout.close()
    counts = f"{n} {label.strip() or 'records'}" + (f", {items} {items_key}" if items_key else "")
    summary(f"{unit}: {counts}, {errors} errors")
    return n, errors


def _add_verbosity(p: argparse.ArgumentParser, default) -> None:
    g = p.add_argument_group("output")
    g.add_argument("-q", "--quiet", action="store_true", default=default,
                   help="only errors on stderr: no progress bars, summaries or warnings")
    g.add_argument("-v", "--verbose", action="count", default=default,
                   help="more log messages on stderr (-v info, -vv debug; tracebacks of internal errors)")


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="panel2patch", description=__doc__.split("\n\n")[0] + "\n\n"
                                     + __doc__.split("\n\n")[1], epilog=EPILOG, formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"panel2patch {__version__}",
                        help="print the package version and exit")
    _add_verbosity(parser, default=None)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:  # a stage not installed in this build
            if not exc.name or not module.startswith(exc.name):
                raise
            p = sub.add_parser(name, help=help_, description=help_)
            p.set_defaults(_module=module, _missing=str(exc))
            continue
        p = sub.add_parser(name, help=help_, description=(mod.__doc__ or help_).strip(), epilog=EPILOG,
                           formatter_class=fmt)
        p.set_defaults(_module=module)
        # -q/-v also after the subcommand; SUPPRESS keeps a value given before it
        _add_verbosity(p, default=argparse.SUPPRESS)
        mod.add_arguments(p)
    return parser


def _setup_logging(quiet_: bool, verbose: int) -> None:
    level = logging.ERROR if quiet_ else {0: logging.WARNING, 1: logging.INFO}.get(verbose, logging.DEBUG)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if quiet_:
        import warnings

        warnings.simplefilter("ignore")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)  # exits 2 on a usage error, 0 for --help/--version
    if extra and not getattr(args, "_passthrough", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra  # handed on as they are (panel2patch recover -> snakemake)
    _OPTIONS.update(quiet=bool(args.quiet), verbose=int(args.verbose or 0))
    _setup_logging(quiet(), _OPTIONS["verbose"])
    prog = " ".join(["panel2patch", args.command, *([args.action] if getattr(args, "action", None) else [])])
    if getattr(args, "_missing", None):
        print(f"{prog}: not available in this build ({args._missing})", file=sys.stderr)
        return EXIT_USAGE
    try:
        return int(importlib.import_module(args._module).main(args) or 0)
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # an input or output that cannot be opened, a full disk
        if _OPTIONS["verbose"] > 1:
            logging.exception("%s", prog)
        print(f"{prog}: error: {_describe(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a bug: one line, the traceback with -v
        if _OPTIONS["verbose"]:
            logging.exception("%s", prog)
        print(f"{prog}: internal error: {type(exc).__name__}: {_describe(exc)}"
              + ("" if _OPTIONS["verbose"] else " (rerun with -v for the traceback)"), file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":  # python -m panel2patch.cli: run the imported module, whose state
    from panel2patch.cli import main as _main  # (-q/-v, UsageError) the stage modules share

    sys.exit(_main())
