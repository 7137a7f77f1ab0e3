"""Benchmark ``panel2patch.ingest.pdf.extract_pdf_figures`` against eLife JATS captions.

    python benchmarks/pdf_figures.py [--method heuristic|layout|both] [--data DIR] [-v]

Ground truth: the ``<fig>`` elements (label + caption) of each article's JATS XML, for the eLife
PDFs in ``<data>/pdfs/elife/*/`` (JATS given as ``.xml.jinja``: the ``{{ article['id'] }}``
placeholders are filled with the number from the folder name, ``{{ x|default('y') }}`` with
``y``) and the eLife packages in ``<data>/articles/elife-bot-packages/*/``.  ``<data>`` is
``$P2P_SHARED_DATA`` or ``../shared/data`` next to the repository.

What counts, per PDF file:
* the article PDF must show the main figures; figure supplements are expected in the article's
  ``-figures.pdf`` when there is one (eLife prints them only there), else in the article PDF;
* a ``-figures.pdf`` holds every figure and supplement, so all JATS figures are expected there;
* ``-suppN.pdf`` files are supplementary files, not covered by JATS ``<fig>``: not run;
* a PDF whose DOI (``pdf_metadata``) is not the JATS article's DOI is reported as
  ``gt-mismatch`` and left out of the totals (its JATS describes another article);
* a PDF whose JATS lists no figure is reported (figures found) but not scored.
A PDF figure matches a JATS figure with the same normalised label ("Fig. 3" = "Figure 3.",
dashes unified); unlabelled figures match unlabelled ones by caption similarity (>= 0.5).
JATS caption paragraphs holding only the figure's own DOI (eLife) are dropped: the PDF prints
it as a "DOI: ..." trailer line after the caption, which ``extract_pdf_figures`` leaves out.
Similarity: ``rapidfuzz.fuzz.ratio / 100`` of the lower-cased, whitespace-normalised text
"label caption" (JATS) vs the PDF caption (which starts with its printed label).  "extra" are
PDF figures that match no expected JATS figure.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lxml import etree
from rapidfuzz import fuzz

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from panel2patch.ingest.pdf import extract_pdf_figures, pdf_metadata  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    env = os.environ.get("P2P_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def norm_text(s: str) -> str:
    return " ".join(s.split()).lower()


def norm_label(label: str | None) -> str | None:
    if not label:
        return None
    s = label.lower()
    s = re.sub(r"\bfig\b\.?", "figure", s)
    s = re.sub(r"[\u2014\u2013\u2012\u2010\u2011-]", "-", s)
    s = re.sub(r"[\s.:|]", "", s)
    return s


@dataclass
class JatsFig:
    label: str | None
    caption: str
    supplement: bool

    @property
    def text(self) -> str:
        return norm_text(f"{self.label or ''} {self.caption}")


def jats_caption(cap) -> str:
    """Caption text: title and paragraphs joined by spaces, without DOI-only paragraphs."""
    if cap is None:
        return ""
    parts = []
    for child in cap:
        if not isinstance(child.tag, str):
            continue
        text = " ".join("".join(child.itertext()).split())
        if re.fullmatch(r"(?i)doi:?\s*(https?://(dx\.)?doi\.org/)?10\.\S+", text):
            continue  # eLife's asset DOI, printed as a separate trailer line in the PDF
        parts.append(text)
    return " ".join(p for p in parts if p)


def read_jats(path: Path) -> tuple[str | None, list[JatsFig]]:
    """(DOI, figures) of a JATS file; ``.jinja`` placeholders are filled first."""
    raw = path.read_text(encoding="utf-8")
    if path.name.endswith(".jinja"):
        number = re.search(r"elife-(\d+)", path.parent.name).group(1)
        raw = re.sub(r"\{\{\s*article\['id'\]\s*\}\}", number, raw)
        raw = re.sub(r"\{\{[^{}]*\|\s*default\(\s*'([^']*)'\s*\)\s*\}\}", r"\1", raw)
        if "{{" in raw or "{%" in raw:
            raise ValueError(f"{path}: unfilled template placeholder")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    root = etree.fromstring(raw.encode("utf-8"), parser)
    doi = root.findtext(".//article-meta/article-id[@pub-id-type='doi']")
    figs = []
    for fig in root.iter("fig"):
        label = " ".join("".join(fig.find("label").itertext()).split()) if fig.find("label") is not None else None
        caption = jats_caption(fig.find("caption"))
        supp = fig.get("specific-use") == "child-fig" or bool(label and "supplement" in label.lower())
        figs.append(JatsFig(label, caption, supp))
    return doi, figs


def discover(root: Path, group: str = "elife") -> list[tuple[str, Path, list[Path]]]:
    """(article key, JATS path, PDFs) for every article folder that has a PDF.

    ``group="elife"``: the eLife folders (the benchmark proper); ``"other"``: other publishers'
    JATS + PDF pairs (SciELO), reported separately as a check that nothing is eLife-specific.
    """
    out = []
    if group == "elife":
        folders = sorted(root.glob("pdfs/elife/*/")) + sorted(root.glob("articles/elife-bot-packages/*/"))
    else:
        folders = sorted(root.glob("articles/scielo-*/"))
    for folder in folders:
        xml = sorted(folder.glob("*.xml.jinja")) + sorted(folder.glob("*.xml"))
        pdfs = [p for p in sorted(folder.glob("*.pdf")) if not re.search(r"-supp\d+\.pdf$", p.name)]
        if xml and pdfs:
            out.append((folder.name, xml[0], pdfs))
    return out


def expected_for(pdf: Path, pdfs: list[Path], figs: list[JatsFig]) -> list[JatsFig]:
    if pdf.name.endswith("-figures.pdf"):
        return figs
    has_figures_pdf = any(p.name.endswith("-figures.pdf") for p in pdfs)
    return [f for f in figs if not (f.supplement and has_figures_pdf)]


def score(expected: list[JatsFig], found) -> tuple[int, list[float], list[str], list[str]]:
    """(matched count, similarities, missed JATS labels, extra PDF labels)."""
    by_label = {}
    for f in found:
        key = norm_label(f.label)
        if key and key not in by_label:
            by_label[key] = f
    used, sims, missed = set(), [], []
    unlabelled_pdf = [f for f in found if not f.label]
    for j in expected:
        key = norm_label(j.label)
        if key:
            f = by_label.get(key)
        else:  # unlabelled: best caption match among unlabelled PDF figures
            cands = [(fuzz.ratio(j.text, norm_text(f.caption)) / 100, i) for i, f in enumerate(unlabelled_pdf) if id(f) not in used]
            best = max(cands, default=(0, None))
            f = unlabelled_pdf[best[1]] if best[0] >= 0.5 else None
        if f is None:
            missed.append(j.label or "(unlabelled)")
            continue
        used.add(id(f))
        sims.append(fuzz.ratio(j.text, norm_text(f.caption)) / 100)
    extra = [f.label or "(unlabelled)" for f in found if id(f) not in used]
    return len(sims), sims, missed, extra


def run(method: str, articles, verbose: bool) -> dict:
    print(f"\n== method: {method}")
    head = f"{'pdf':34s} {'status':11s} {'jats':>4s} {'pdf':>4s} {'match':>5s} {'recall':>6s} {'sim':>5s} {'extra':>5s} {'s/pdf':>6s} {'cpu s':>6s}"
    print(head)
    print("-" * len(head))
    tot = {"pdfs": 0, "jats": 0, "found": 0, "matched": 0, "sims": [], "extra": 0, "secs": 0.0, "cpu": 0.0, "unscored_found": 0}
    for key, xml, pdfs in articles:
        doi, figs = read_jats(xml)
        for pdf in pdfs:
            t0, c0 = time.perf_counter(), time.process_time()
            found, skips = extract_pdf_figures(pdf, method=method)
            secs, cpu = time.perf_counter() - t0, time.process_time() - c0
            tot["pdfs"] += 1
            tot["secs"] += secs
            tot["cpu"] += cpu
            pdf_doi = pdf_metadata(pdf)["doi"]
            expected = expected_for(pdf, pdfs, figs)
            matched, sims, missed, extra = score(expected, found)
            if doi and pdf_doi and pdf_doi.lower() != doi.lower():
                status = "gt-mismatch"
            elif not figs:
                status = "no-jats-fig"
            else:
                status = "scored"
            recall = f"{matched / len(expected):.2f}" if expected else "n/a"
            sim = f"{sum(sims) / len(sims):.3f}" if sims else "n/a"
            print(f"{pdf.name[:34]:34s} {status:11s} {len(expected):4d} {len(found):4d} {matched:5d} {recall:>6s} {sim:>5s} {len(extra):5d} {secs:6.2f} {cpu:6.2f}")
            if verbose or status == "scored" and (missed or extra):
                if missed:
                    print(f"    missed: {missed}")
                if extra:
                    print(f"    extra:  {extra}")
                if skips and verbose:
                    print(f"    skips:  {skips}")
            if verbose:
                for s, j in zip(sims, [j for j in expected if (j.label or '(unlabelled)') not in missed]):
                    if s < 0.95:
                        print(f"    sim {s:.2f} {j.label}")
            if status == "scored":
                tot["jats"] += len(expected)
                tot["found"] += len(found)
                tot["matched"] += matched
                tot["sims"] += sims
                tot["extra"] += len(extra)
            else:
                tot["unscored_found"] += len(found)
    return tot


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", choices=["heuristic", "layout", "both"], default="both")
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    root = args.data or data_dir()
    groups = {g: discover(root, g) for g in ("elife", "other")}
    if not groups["elife"]:
        print(f"no eLife PDFs found under {root}", file=sys.stderr)
        return 1
    methods = ["heuristic", "layout"] if args.method == "both" else [args.method]
    totals = {}
    for m in methods:
        for g, articles in groups.items():
            if articles:
                print(f"\n## {g}", end="")
                totals[(m, g)] = run(m, articles, args.verbose)

    print("\n== summary (scored PDFs only; totals over PDF files)")
    head = f"{'method':10s} {'set':6s} {'pdfs':>4s} {'jats':>4s} {'found':>5s} {'match':>5s} {'recall':>6s} {'sim':>6s} {'extra':>5s} {'unscored':>8s} {'s/pdf':>6s} {'cpu/pdf':>7s} {'total s':>7s}"
    print(head)
    print("-" * len(head))
    for (m, g), t in totals.items():
        recall = t["matched"] / t["jats"] if t["jats"] else 0.0
        sim = sum(t["sims"]) / len(t["sims"]) if t["sims"] else 0.0
        print(f"{m:10s} {g:6s} {t['pdfs']:4d} {t['jats']:4d} {t['found']:5d} {t['matched']:5d} {recall:6.3f} {sim:6.3f} {t['extra']:5d} {t['unscored_found']:8d} {t['secs'] / t['pdfs']:6.2f} {t['cpu'] / t['pdfs']:7.2f} {t['secs']:7.1f}")
    print("found/match/extra: scored PDFs; unscored: figures found in gt-mismatch / no-jats-fig PDFs; "
          "s/pdf (wall) and cpu/pdf (process CPU, all threads): mean over all PDFs run, rendering at 150 dpi included")
    return 0


if __name__ == "__main__":
    sys.exit(main())
