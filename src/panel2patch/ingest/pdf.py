"""Figures and their captions from born-digital PDFs (the ingest stage's PDF path).

``extract_pdf_figures(path)`` returns one :class:`PdfFigure` per captioned figure: the printed
label ("Figure 3", "Figure 3—figure supplement 1"), the caption as printed (label included,
whitespace normalised, words split by a line-end hyphen joined again), its first sentence, the
page, the figure box in PDF points and an RGB rendering of that box.  It never raises on a bad
PDF: problems come back as ``(reason, detail)`` skips with the reason codes of
``panel2patch.ingest.tables.SKIP_REASONS``.

How a page is read (both methods share everything but the first step):

1. *Graphics and text roles.*
   ``method="heuristic"`` (plain PyMuPDF): raster images (``page.get_image_info``) and clusters
   of vector drawings (``page.cluster_drawings``) are the graphics; running headers/footers,
   logos and icons repeated on many pages, tiny items and shaded text boxes are dropped.  Text
   blocks are "body" when set in the document's body font size (or larger: headings), or when
   they are long paragraphs in a smaller size.
   ``method="layout"``: the page-layout ONNX model shipped with ``pymupdf-layout`` labels boxes
   (picture, caption, text, table, page-header, ...); its pictures, completed with orphan images
   and vector clusters exactly as ``pymupdf4llm`` does, are the graphics and its classes give the
   text roles.
2. *Captions.*  A text block starting with a figure label and a delimiter ("Figure 3.",
   "Fig. 3:", "FIGURE 3 |", "Figure 3—figure supplement 1.", "Appendix 1—Figure 2.") starts a
   caption; following blocks in the same font size directly below it continue it.  It ends at
   the next label, at body text, or at a publisher trailer (a "DOI: ..." line, "The following
   figure supplements are available ..."), which is not part of the caption.  A block "Figure 3
   continued" on a later page appends its text to Figure 3's caption.
3. *Pairing.*  Each caption takes the graphics between it and the nearest body text, caption or
   table above (or below) it that overlap it horizontally; which side comes first is voted per
   document (figures usually sit above their captions).  Table captions ("Table 1.") take their
   ruled tables first so that tables never become figures.  The figure box is the union of
   those graphics plus the small text (panel letters, axis labels) around them.
4. *Fallbacks.*  Manuscripts with all legends in one section and one figure per page after it
   (author manuscripts, eLife "POA" PDFs) are paired in order when the counts agree exactly.
   A large raster image left over with a short small-print block right below it becomes an
   unlabelled figure (``label=None``).

``method="auto"`` is the heuristic: measured on the eLife PDFs in ``shared/data`` with
``benchmarks/pdf_figures.py`` it finds every figure there at caption similarity ~0.99, while the
layout model misses most vector figures and costs ~0.3 s per page (see the benchmark).

Known limits: scanned PDFs (no text layer) give no captions, hence no figures; a figure whose
caption sits beside it rather than above/below is not paired; rotated pages are not handled.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pymupdf
from PIL import Image

log = logging.getLogger(__name__)

METHODS = ("auto", "heuristic", "layout")
AUTO_METHOD = "heuristic"


@dataclass
class PdfFigure:
    label: str | None  # printed label normalised, e.g. "Figure 3"
    caption: str  # full caption incl. the label as printed, whitespace normalised, de-hyphenated
    caption_title: str | None  # first sentence of the caption after the label, if any
    page: int  # 1-based page
    bbox: tuple[float, float, float, float]  # figure region in PDF points (x0, y0, x1, y1)
    image: "Image.Image"  # RGB rendering of bbox at `dpi`
    method: str  # "pdf-layout" or "pdf-heuristic"


# --------------------------------------------------------------------------------------------
# Caption patterns
# --------------------------------------------------------------------------------------------

_DASH = r"[\u2014\u2013\u2012\u2010\u2011-]"
_LABEL = (
    r"(?P<label>"
    r"(?P<prefix>(?:Appendix|APPENDIX|Box|BOX)\s*\d+\s*" + _DASH + r"\s*)?"
    r"(?P<supp>(?:Supplementary|Supplemental|SUPPLEMENTARY|SUPPLEMENTAL)\s+)?"
    r"(?P<kind>Figure|FIGURE|Fig\.|FIG\.|Fig|FIG)\s*"
    r"(?P<num>S?\d{1,3})(?![\d.,]\d)"
    r"(?P<sub>\s*\.?\s*" + _DASH + r"\s*(?:figure|Figure)\s+supplement\s+\d+)?"
    r")"
)
# A caption starts with a label and a clear delimiter: ".", ":", "|", an em dash, or nothing
# more on the line (label on a line of its own).  "Figure 3 shows", "Figure 3A", "Figure 3)"
# and "Figure 3—Source data 1." are not captions.
CAPTION_RE = re.compile(r"^\s*" + _LABEL + r"\s*(?P<delim>[.:|\u2014]|\s*$)")
# "Figure 3 continued" / "Figure 3 (continued)" at the top of a later page
CONTINUED_RE = re.compile(r"^\s*" + _LABEL + r"\s*[.:]?\s*\(?(?:continued|cont\.)\)?", re.I)
TABLE_RE = re.compile(
    r"^\s*(?:(?:Appendix|Box)\s*\d+\s*" + _DASH + r"\s*)?(?:Supplementary\s+)?"
    r"(?:Table|TABLE)\s*S?\d{1,3}\s*(?:[.:|\u2014]|\s*$)"
)
# Things printed after a caption that are not part of it (publisher trailers) and lines that
# list other assets; a caption stops there.
TRAILER_RE = re.compile(
    r"(?:^|\s)(?:DOI:?\s*(?:https?://(?:dx\.)?doi\.org/)?10\.\d{4,9}/\S+"
    r"|The following (?:figure supplements?|source data|source code|videos?|figures?)"
    r"[^.:]{0,80}\b(?:is|are) available\b)",
    re.I,
)
OTHER_ASSET_RE = re.compile(
    r"^\s*(?:Figure supplement \d+|(?:Source data|Source code|Video|Animation|Audio)\s*\d+)"
    r"\s*[.:]",
    re.I,
)
DOI_RE = re.compile(r"\b(10\.\d{4,9}/[^\s\"<>]+)", re.I)
_ABBREV = {"e.g", "i.e", "vs", "cf", "fig", "figs", "al", "approx", "ca", "resp", "no", "nos", "sp", "spp", "ref", "refs", "eq", "eqs", "dr", "mr", "st"}


def normalise_label(match: re.Match) -> str:
    """Printed label with the figure word spelled "Figure" and whitespace normalised."""
    prefix = " ".join((match.group("prefix") or "").split())
    if prefix:  # "Appendix 1 —" -> "Appendix 1—"
        prefix = re.sub(r"\s*" + _DASH + r"\s*$", "\u2014", prefix)
        prefix = prefix[0].upper() + prefix[1:].lower().replace("\u2014", "\u2014")
    supp = (match.group("supp") or "").strip().capitalize()
    label = f"{prefix}{supp + ' ' if supp else ''}Figure {match.group('num')}"
    sub = match.group("sub")
    if sub:
        label += " ".join(sub.split()) if not sub[:1].isspace() else " " + " ".join(sub.split())
    return label


def caption_title(caption: str, label_text: str | None = None) -> str | None:
    """First sentence of ``caption`` after its label ("Figure 1. Title. More." -> "Title.")."""
    text = caption
    if label_text and text.startswith(label_text):
        text = text[len(label_text):]
    else:
        m = CAPTION_RE.match(text)
        if m:
            text = text[m.end("label"):]
    text = re.sub(r"^\s*[.:|\u2014]\s*", "", text).strip()
    if not text:
        return None
    for m in re.finditer(r"[.!?](?=\s+[A-Z(\[]|\s*$)", text):
        word = re.findall(r"(\S+)$", text[: m.start()])
        token = word[0].lower().lstrip("(") if word else ""
        if token in _ABBREV or (len(token) == 1 and token.isalpha()):
            continue  # "e.g.", "Fig.", "C. elegans"
        return text[: m.end()].strip()
    return text


def clean_caption(text: str) -> str:
    """Whitespace-normalise and cut a caption at the first publisher trailer."""
    text = " ".join(text.split())
    m = TRAILER_RE.search(text)
    if m and m.start() > 0:
        text = text[: m.start()]
    return text.strip()


# --------------------------------------------------------------------------------------------
# Page model
# --------------------------------------------------------------------------------------------


@dataclass
class _Block:
    rect: pymupdf.Rect
    lines: list[str]
    size: float  # dominant font size
    bold: bool  # first span bold
    role: str = "other"  # body | small | margin | figtext | table | lcaption | other
    text: str = ""
    layout_class: str | None = None

    def __post_init__(self):
        self.text = _join_lines(self.lines)


@dataclass
class _Page:
    number: int  # 0-based
    rect: pymupdf.Rect
    blocks: list[_Block]
    graphics: list[pymupdf.Rect]  # candidate figure parts (after decoration removal)
    tables: list[pymupdf.Rect] = field(default_factory=list)  # layout tables (blockers)
    images: list[pymupdf.Rect] = field(default_factory=list)  # raster image boxes


def _join_lines(lines: list[str]) -> str:
    """Join text lines, removing hyphens that only split a word at a line end."""
    out = ""
    for line in lines:
        line = line.strip()
        if not line:
            continue
        if not out:
            out = line
        elif out.endswith("\u00ad"):  # soft hyphen
            out = out[:-1] + line
        elif out.endswith("-") and len(out) > 1 and out[-2].isalpha() and line[:1].islower():
            out = out[:-1] + line  # "sepa-" + "rate"
        elif out.endswith(("-", "\u2014", "\u2013", "/")):
            out += line  # "Eco-" + "HAB", "Figure 3—" + "figure supplement 1"
        else:
            out += " " + line
    return " ".join(out.replace("\u00ad", "").split())


def _is_bold(span: dict) -> bool:
    font = span.get("font", "")
    return bool(span.get("flags", 0) & 16) or bool(re.search(r"bold|black|heavy|semibold|,B\b", font, re.I))


def _text_blocks(page: pymupdf.Page, textpage=None) -> list[_Block]:
    """Text blocks with rows of spans joined left to right and margin line numbers dropped."""
    width = page.rect.width
    d = textpage.extractDICT() if textpage is not None else page.get_text("dict")
    blocks = []
    for b in d["blocks"]:
        if b.get("type") != 0:
            continue
        rows: list[list[dict]] = []  # lines sharing a baseline row
        for line in b["lines"]:
            if not "".join(s["text"] for s in line["spans"]).strip():
                continue
            y0, y1 = line["bbox"][1], line["bbox"][3]
            if rows:
                r0 = min(l["bbox"][1] for l in rows[-1])
                r1 = max(l["bbox"][3] for l in rows[-1])
                if min(y1, r1) - max(y0, r0) > 0.5 * min(y1 - y0, r1 - r0) and line["dir"][0] > 0.9:
                    rows[-1].append(line)
                    continue
            rows.append([line])
        lines, sizes, bold, rect = [], Counter(), None, pymupdf.Rect()
        for row in rows:
            row.sort(key=lambda l: l["bbox"][0])
            text, x1 = "", None
            for line in row:
                t = "".join(s["text"] for s in line["spans"])
                if x1 is not None and not text.endswith(" ") and not t.startswith(" ") and line["bbox"][0] - x1 > 1.0:
                    text += " "  # words on one row split into several lines
                text += t
                x1 = line["bbox"][2]
            lb = pymupdf.Rect(row[0]["bbox"])
            for line in row[1:]:
                lb |= line["bbox"]
            # line numbers of manuscripts ("709") in the page margins
            if re.fullmatch(r"\s*\d{1,4}\s*", text) and (lb.x0 > 0.8 * width or lb.x1 < 0.2 * width):
                continue
            lines.append(text)
            rect |= lb
            for line in row:
                for s in line["spans"]:
                    if s["text"].strip():
                        sizes[round(s["size"], 1)] += len(s["text"].strip())
                        if bold is None:
                            bold = _is_bold(s)
        if not lines:
            continue
        blocks.append(_Block(rect, lines, sizes.most_common(1)[0][0], bool(bold)))
    return blocks


def _body_size(pages: list[list[_Block]], heights: list[float]) -> float:
    """Most common font size (by characters) outside the top/bottom 6% of the pages."""
    sizes = Counter()
    for blocks, h in zip(pages, heights):
        for b in blocks:
            if b.rect.y0 > 0.06 * h and b.rect.y1 < 0.94 * h:
                sizes[round(b.size * 2) / 2] += len(b.text)
    return sizes.most_common(1)[0][0] if sizes else 10.0


def _mark_margins(pages: list[_Page]) -> None:
    """Role "margin" for running headers/footers: near the top/bottom edge and repeated."""
    def key(b: _Block) -> str:
        return re.sub(r"\d+", "#", b.text.lower())[:60]

    counts = Counter()
    for p in pages:
        counts.update({key(b) for b in p.blocks})
    need = 2 if len(pages) < 4 else max(3, round(0.3 * len(pages)))
    for p in pages:
        h = p.rect.height
        for b in p.blocks:
            edge = b.rect.y1 < 0.05 * h or b.rect.y0 > 0.95 * h
            near = b.rect.y1 < 0.12 * h or b.rect.y0 > 0.88 * h
            if edge or (near and counts[key(b)] >= need and len(b.text) < 200):
                b.role = "margin"


def _area(r: pymupdf.Rect) -> float:
    return max(0.0, r.width) * max(0.0, r.height)


def _inside_frac(inner: pymupdf.Rect, outer: pymupdf.Rect) -> float:
    a = _area(inner)
    return _area(inner & outer) / a if a > 0 else 0.0


def _xoverlap(a: pymupdf.Rect, b: pymupdf.Rect) -> float:
    return min(a.x1, b.x1) - max(a.x0, b.x0)


def _significant(r: pymupdf.Rect, page_rect: pymupdf.Rect) -> bool:
    """Large enough to be (part of) a figure rather than a logo, icon or rule."""
    return r.width >= 40 and r.height >= 40 and _area(r) >= 0.005 * _area(page_rect)


def _drop_decorations(pages: list[_Page]) -> None:
    """Remove graphics repeated at the same place on many pages (logos, page furniture)."""
    counts = Counter()
    for p in pages:
        counts.update({tuple(round(v / 2) for v in g) for g in p.graphics})
    need = 2 if len(pages) < 4 else max(3, round(0.3 * len(pages)))
    for p in pages:
        p.graphics = [g for g in p.graphics if counts[tuple(round(v / 2) for v in g)] < need]


# ---- heuristic page reading ----------------------------------------------------------------


def _heuristic_page(page: pymupdf.Page) -> _Page:
    prect = page.rect
    blocks = _text_blocks(page)
    graphics = []
    for info in page.get_image_info():
        r = pymupdf.Rect(info["bbox"]) & prect
        if not r.is_empty and r.width > 3 and r.height > 3:
            graphics.append(r)
    try:
        clusters = page.cluster_drawings()
    except Exception:  # noqa: BLE001 - a broken content stream: images only
        clusters = []
    for r in clusters:
        r = pymupdf.Rect(r) & prect
        if r.is_empty or r.width <= 3 or r.height <= 3 or _area(r) > 0.9 * _area(prect):
            continue
        graphics.append(r)
    return _Page(page.number, prect, blocks, graphics)


def _heuristic_roles(pages: list[_Page], body: float) -> None:
    for p in pages:
        sig = [g for g in p.graphics if _significant(g, p.rect)]
        for b in p.blocks:
            if b.role == "margin":
                continue
            if any(_inside_frac(b.rect, g) > 0.6 for g in sig):
                b.role = "figtext"
            elif b.size >= body - 0.6 and (len(b.text) >= 40 or len(b.lines) >= 2 or b.size > body + 0.6):
                b.role = "body"
            elif len(b.lines) >= 3 and len(b.text) >= 150:
                b.role = "small"  # footnotes, sidebars, small-print paragraphs
            else:
                b.role = "other"
        # shaded text boxes: drawings behind body text are not figures
        keep = []
        for g in p.graphics:
            covered = sum(_area(b.rect & g) for b in p.blocks if b.role == "body")
            if covered > 0.3 * _area(g):
                continue
            keep.append(g)
        p.graphics = keep


# ---- layout-model page reading -------------------------------------------------------------

_LAYOUT_FLAGS = (
    pymupdf.TEXT_COLLECT_STYLES
    | pymupdf.TEXT_COLLECT_VECTORS
    | pymupdf.TEXT_PRESERVE_IMAGES
    | pymupdf.TEXT_ACCURATE_BBOXES
    | pymupdf.TEXT_MEDIABOX_CLIP
    | pymupdf.TEXT_IGNORE_ACTUALTEXT
)
_LAYOUT_ROLES = {
    "caption": "lcaption",
    "page-header": "margin",
    "page-footer": "margin",
    "picture": "figtext",
    "table": "table",
    "formula": "figtext",
}


def _layout_page(page: pymupdf.Page) -> _Page:
    import pymupdf.layout  # noqa: F401 - registers the ONNX layout model with PyMuPDF

    prect = page.rect
    textpage = page.get_textpage(flags=_LAYOUT_FLAGS, clip=pymupdf.INFINITE_RECT())
    page.get_layout()
    boxes = [list(b[:5]) for b in (page.layout_information or []) if len(b) >= 5]
    page.layout_information = boxes
    try:  # complete pictures like pymupdf4llm does (orphan images, vector clusters)
        from pymupdf4llm.helpers import utils as u4

        raw = textpage.extractDICT()["blocks"]
        u4.clean_pictures(page, raw)
        u4.add_image_orphans(page, raw)
        boxes = [list(b[:5]) for b in page.layout_information]
    except Exception as exc:  # noqa: BLE001 - older/newer pymupdf4llm: model pictures only
        log.debug("pymupdf4llm picture completion unavailable: %s", exc)
    blocks = _text_blocks(page, textpage)
    for b in blocks:
        best = None
        for x0, y0, x1, y1, cls in boxes:
            box = pymupdf.Rect(x0, y0, x1, y1)
            if _inside_frac(b.rect, box) >= 0.6 and (best is None or _area(box) < _area(best[0])):
                best = (box, cls)
        b.layout_class = best[1] if best else None
        b.role = _LAYOUT_ROLES.get(b.layout_class, "body") if best else "other"
    graphics = [pymupdf.Rect(b[:4]) & prect for b in boxes if b[4] == "picture"]
    tables = [pymupdf.Rect(b[:4]) & prect for b in boxes if b[4] == "table"]
    return _Page(page.number, prect, blocks, [g for g in graphics if not g.is_empty], tables)


# --------------------------------------------------------------------------------------------
# Captions and pairing
# --------------------------------------------------------------------------------------------


@dataclass
class _Caption:
    page: int
    index: int  # block index of the first block
    kind: str  # figure | table | continued | unlabelled
    label: str | None
    text: str = ""
    rect: pymupdf.Rect | None = None
    parts: list[pymupdf.Rect] = field(default_factory=list)  # the chosen graphics
    region: pymupdf.Rect | None = None
    region_page: int | None = None  # page of the region when not the caption's page


def _assemble(p: _Page, start: int, used: set[int]) -> tuple[str, pymupdf.Rect]:
    """Caption text from block ``start`` plus the blocks that continue it directly below."""
    first = p.blocks[start]
    parts, rect, last = [first.text], pymupdf.Rect(first.rect), first
    used.add(start)
    if TRAILER_RE.search(first.text) and TRAILER_RE.search(first.text).start() > 0:
        return " ".join(parts), rect
    while True:
        nxt = None
        for i, b in enumerate(p.blocks):
            if i in used or b.role in ("margin", "figtext", "table"):
                continue
            gap = b.rect.y0 - last.rect.y1
            if -2 <= gap <= max(1.6 * last.size, 6) and abs(b.rect.x0 - rect.x0) <= 12 and abs(b.size - first.size) <= 0.6:
                if nxt is None or b.rect.y0 < p.blocks[nxt].rect.y0:
                    nxt = i
        if nxt is None:
            break
        b = p.blocks[nxt]
        if CAPTION_RE.match(b.text) or TABLE_RE.match(b.text) or OTHER_ASSET_RE.match(b.text) or TRAILER_RE.match(b.text):
            break
        used.add(nxt)
        parts.append(b.text)
        rect |= b.rect
        last = b
        if TRAILER_RE.search(b.text):
            break
    return _join_lines(parts), rect


def _find_captions(pages: list[_Page], method: str) -> list[_Caption]:
    caps = []
    for p in pages:
        used: set[int] = set()
        for i, b in enumerate(p.blocks):
            if i in used or b.role == "margin":
                continue
            if method == "layout" and b.role == "figtext":
                continue
            cont = CONTINUED_RE.match(b.text)
            m = CAPTION_RE.match(b.text)
            if cont and not m:
                text, rect = _assemble(p, i, used)
                text = text[cont.end():]
                caps.append(_Caption(p.number, i, "continued", normalise_label(cont), text, rect))
            elif m:
                text, rect = _assemble(p, i, used)
                caps.append(_Caption(p.number, i, "figure", normalise_label(m), text, rect))
            elif TABLE_RE.match(b.text):
                used.add(i)
                caps.append(_Caption(p.number, i, "table", None, b.text, pymupdf.Rect(b.rect)))
    return caps


def _band(p: _Page, cap: _Caption, up: bool, graphics: list[pymupdf.Rect], blockers: list[pymupdf.Rect]):
    """Graphics between ``cap`` and the nearest blocker above (``up``) or below it."""
    c = cap.rect
    top, bottom = 0.0, p.rect.height
    for r in blockers:
        if _xoverlap(r, c) <= min(10, 0.2 * min(r.width, c.width)):
            continue
        if up and r.y1 <= c.y0 + 1:
            top = max(top, r.y1)
        elif not up and r.y0 >= c.y1 - 1:
            bottom = min(bottom, r.y0)
    if up:
        inside = [g for g in graphics if g.y1 <= c.y0 + 4 and g.y0 >= top - 4]
    else:
        inside = [g for g in graphics if g.y0 >= c.y1 - 4 and g.y1 <= bottom + 4]
    chosen = [g for g in inside if _xoverlap(g, c) > 0]
    if not any(_significant(g, p.rect) for g in chosen):
        return [], float("inf"), (top, bottom)
    span = pymupdf.Rect(chosen[0])
    for g in chosen[1:]:
        span |= g
    grew = True
    while grew:  # parts beside the seeds in the same band (a figure wider than its caption)
        grew = False
        for g in inside:
            if g not in chosen and (_xoverlap(g, span) > 0 or (g + (-8, -8, 8, 8)).intersects(span)):
                chosen.append(g)
                span |= g
                grew = True
    gap = (c.y0 - span.y1) if up else (span.y0 - c.y1)
    return chosen, max(gap, 0.0), (top, bottom)


def _region(p: _Page, parts: list[pymupdf.Rect], limits: tuple[float, float], caption_rect) -> pymupdf.Rect:
    """Union of the parts plus nearby small text (panel letters, axis labels) in the band."""
    region = pymupdf.Rect(parts[0])
    for g in parts[1:]:
        region |= g
    top, bottom = limits
    for _ in range(2):
        grown = region + (-14, -14, 14, 14)
        for b in p.blocks:
            if b.role in ("figtext", "other") and b.rect.y0 >= top - 1 and b.rect.y1 <= bottom + 1:
                if b.rect.intersects(grown) and not b.rect.intersects(caption_rect):
                    region |= b.rect
    return region & p.rect


def _pair(pages: list[_Page], caps: list[_Caption]) -> None:
    """Give each figure/table caption its graphics (see module docstring, step 3)."""
    by_page: dict[int, list[_Caption]] = {}
    for c in caps:
        by_page.setdefault(c.page, []).append(c)

    def blockers(p: _Page, me: _Caption) -> list[pymupdf.Rect]:
        out = [b.rect for b in p.blocks if b.role in ("body", "small", "margin")]
        out += [c.rect for c in by_page.get(p.number, []) if c is not me]
        out += [t for t in p.tables]
        return out

    # which side of its caption a figure (a table) sits on: vote over the document
    pref = {}
    for kind in ("figure", "table"):
        votes = Counter()
        for c in caps:
            if c.kind != kind:
                continue
            p = pages[c.page]
            up = _band(p, c, True, p.graphics, blockers(p, c))[1]
            down = _band(p, c, False, p.graphics, blockers(p, c))[1]
            if up < float("inf") or down < float("inf"):
                votes["up" if up <= down else "down"] += 1
        default = "up" if kind == "figure" else "down"
        pref[kind] = (votes.most_common(1)[0][0] if votes else default) == "up"

    taken: dict[int, set[int]] = {}
    for kind in ("table", "figure"):
        for second_choice in (False, True):
            for c in caps:
                if c.kind != kind or c.parts:
                    continue
                p = pages[c.page]
                free = [g for j, g in enumerate(p.graphics) if j not in taken.get(p.number, set())]
                up = pref[kind] != second_choice
                parts, gap, limits = _band(p, c, up, free, blockers(p, c))
                if parts:
                    c.parts = parts
                    c.region = _region(p, parts, limits, c.rect)
                    ids = taken.setdefault(p.number, set())
                    ids.update(j for j, g in enumerate(p.graphics) if g in parts)


def _legend_section(pages: list[_Page], caps: list[_Caption]) -> None:
    """Legends collected in one section, figures one per page after it: pair them in order."""
    orphans = [c for c in caps if c.kind == "figure" and not c.parts]
    if not orphans:
        return
    cap_pages = {c.page for c in caps if c.kind in ("figure", "table", "continued")}
    taken = {id(g) for c in caps for g in c.parts}
    figure_pages = []
    for p in pages:
        if p.number in cap_pages or p.number <= orphans[-1].page:
            continue
        free = [g for g in p.graphics if id(g) not in taken]
        body = sum(len(b.text) for b in p.blocks if b.role in ("body", "small"))
        if any(_significant(g, p.rect) for g in free) and body < 200:
            figure_pages.append((p, free))
    if len(figure_pages) != len(orphans):
        return
    for c, (p, free) in zip(orphans, figure_pages):
        c.parts = free
        c.region = _region(p, free, (0.0, p.rect.height), pymupdf.Rect(-1, -1, -1, -1))
        c.region_page = p.number


def _unlabelled(pages: list[_Page], caps: list[_Caption], body: float, method: str) -> list[_Caption]:
    """A large leftover image with a short small-print caption right below it."""
    out = []
    taken = {id(g) for c in caps for g in c.parts}
    cap_blocks = {(c.page, c.index) for c in caps}
    for p in pages:
        for g in p.graphics:
            if id(g) in taken or _area(g) < 0.02 * _area(p.rect) or not _significant(g, p.rect):
                continue
            if method == "heuristic" and not any(_inside_frac(g, pymupdf.Rect(i)) > 0.9 for i in p.images):
                continue  # vector clusters without a label are too often tables or ornaments
            for i, b in enumerate(p.blocks):
                if (p.number, i) in cap_blocks or len(b.lines) > 6 or len(b.text) > 500:
                    continue
                ok_role = b.role == "lcaption" if method == "layout" else (b.role in ("other", "small") and b.size < body - 0.4)
                gap = b.rect.y0 - g.y1
                if ok_role and -2 <= gap <= 14 and _xoverlap(b.rect, g) >= 0.5 * b.rect.width:
                    used: set[int] = set()
                    text, rect = _assemble(p, i, used)
                    c = _Caption(p.number, i, "unlabelled", None, text, rect, [g])
                    c.region = _region(p, [g], (g.y0, b.rect.y0), rect)
                    out.append(c)
                    taken.add(id(g))
                    break
    return out


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def _open(path) -> tuple[pymupdf.Document | None, tuple[str, str] | None]:
    try:
        doc = pymupdf.open(str(path)) if not isinstance(path, (bytes, bytearray)) else pymupdf.open(stream=bytes(path), filetype="pdf")
    except Exception as exc:  # noqa: BLE001 - any open failure is an unreadable PDF
        return None, ("unreadable-pdf", f"{path}: {type(exc).__name__}: {exc}")
    try:
        if doc.needs_pass and not doc.authenticate(""):
            doc.close()
            return None, ("unreadable-pdf", f"{path}: encrypted (password required)")
        if not doc.is_pdf:
            doc.close()
            return None, ("unreadable-pdf", f"{path}: not a PDF")
        if doc.page_count == 0:
            doc.close()
            return None, ("unreadable-pdf", f"{path}: no pages")
    except Exception as exc:  # noqa: BLE001
        return None, ("unreadable-pdf", f"{path}: {type(exc).__name__}: {exc}")
    return doc, None


def _read_pages(doc: pymupdf.Document, method: str) -> tuple[list[_Page], list[str]]:
    pages, errors = [], []
    for pno in range(doc.page_count):
        try:
            page = doc[pno]
            p = _layout_page(page) if method == "layout" else _heuristic_page(page)
            p.images = [pymupdf.Rect(i["bbox"]) & page.rect for i in page.get_image_info()]
        except Exception as exc:  # noqa: BLE001 - one broken page must not lose the others
            errors.append(f"page {pno + 1}: {type(exc).__name__}: {exc}")
            p = _Page(pno, pymupdf.Rect(0, 0, 612, 792), [], [])
        pages.append(p)
    return pages, errors


def _render(page: pymupdf.Page, rect: pymupdf.Rect, dpi: int) -> Image.Image:
    pix = page.get_pixmap(clip=rect, dpi=dpi, alpha=False, colorspace=pymupdf.csRGB)
    return Image.frombytes("RGB", (pix.width, pix.height), pix.samples)


def extract_pdf_figures(path, dpi: int = 150, method: str = "auto", max_pixels: int = 100_000_000) -> tuple[list[PdfFigure], list[tuple[str, str]]]:
    """Return (figures, skips); skips are (reason, detail) with reason in
    {"unreadable-pdf", "no-figures", "pdf-render-failed", "decompression-bomb"}.
    Never raises on a bad/corrupt/encrypted/empty PDF: returns a skip instead."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, not {method!r}")
    if method == "auto":
        method = AUTO_METHOD
    doc, skip = _open(path)
    if doc is None:
        return [], [skip]
    skips: list[tuple[str, str]] = []
    try:
        pages, errors = _read_pages(doc, method)
        if errors and len(errors) == doc.page_count:
            return [], [("unreadable-pdf", f"{path}: " + "; ".join(errors[:3]))]
        for e in errors:
            log.warning("%s: %s", path, e)
        if method == "heuristic":
            _drop_decorations(pages)
        _mark_margins(pages)
        body = _body_size([p.blocks for p in pages], [p.rect.height for p in pages])
        if method == "heuristic":
            _heuristic_roles(pages, body)
        caps = _find_captions(pages, method)
        _pair(pages, caps)
        _legend_section(pages, caps)
        caps += _unlabelled(pages, caps, body, method)

        # "Figure 3 continued" text goes to Figure 3's caption
        found: dict[str, _Caption] = {}
        for c in sorted(caps, key=lambda c: (c.page, c.rect.y0)):
            if c.kind == "figure" and c.parts and c.label not in found:
                found[c.label] = c
            elif c.kind == "continued" and c.label in found and c.text.strip():
                found[c.label].text += " " + c.text
        figs = [c for c in caps if c.region is not None and c.kind in ("figure", "unlabelled")]
        figs = [c for c in figs if c.kind == "unlabelled" or found.get(c.label) is c]
        figs.sort(key=lambda c: ((c.page if c.region_page is None else c.region_page), c.region.y0, c.region.x0))

        out = []
        tag = "pdf-layout" if method == "layout" else "pdf-heuristic"
        for c in figs:
            pno = (c.page if c.region_page is None else c.region_page)
            rect = c.region
            name = c.label or "unlabelled figure"
            w, h = rect.width * dpi / 72, rect.height * dpi / 72
            if w * h > max_pixels:
                skips.append(("decompression-bomb", f"{name} on page {pno + 1}: {w:.0f}x{h:.0f} px > {max_pixels}"))
                continue
            try:
                image = _render(doc[pno], rect, dpi)
            except Exception as exc:  # noqa: BLE001
                skips.append(("pdf-render-failed", f"{name} on page {pno + 1}: {type(exc).__name__}: {exc}"))
                continue
            caption = clean_caption(c.text)
            m = CAPTION_RE.match(caption)
            title = caption_title(caption, caption[: m.end("label")] if m else None) if c.label else caption_title("x. " + caption)
            out.append(PdfFigure(c.label, caption, title, pno + 1, tuple(round(v, 2) for v in rect), image, tag))
        if not out and not skips:
            skips.append(("no-figures", f"{path}: no captioned figure found ({method})"))
        return out, skips
    except Exception as exc:  # noqa: BLE001 - never raise on a bad PDF
        log.exception("%s: figure extraction failed", path)
        return [], [("unreadable-pdf", f"{path}: {type(exc).__name__}: {exc}")]
    finally:
        doc.close()


_JUNK_TITLE = re.compile(r"^\s*$|^\d+(\s+\d+\.\.\d+)?$|\.(docx?|indd|tex|pdf|qxd|rtf)\b|^untitled|^microsoft word|template|^[A-Z]+\d+(\s+\d+\.\.\d+)?$", re.I)


def pdf_metadata(path) -> dict:
    """Best effort ``{"title", "doi"}`` from the PDF metadata or the first pages' text."""
    out = {"title": None, "doi": None}
    doc, skip = _open(path)
    if doc is None:
        return out
    try:
        meta = doc.metadata or {}
        title = " ".join((meta.get("title") or "").split())
        if title and not _JUNK_TITLE.search(title) and len(title.split()) >= 2:
            out["title"] = title
        # the article's DOI is the one repeated in running footers; else the first one seen
        dois = Counter()
        first: list[str] = []
        for field_ in ("subject", "keywords"):
            for d in DOI_RE.findall(meta.get(field_) or ""):
                dois[d.rstrip(".,;)")] += 2
        for pno in range(min(3, doc.page_count)):
            for d in DOI_RE.findall(doc[pno].get_text()):
                d = d.rstrip(".,;)]")
                dois[d] += 1
                if d not in first:
                    first.append(d)
        if dois:
            top = max(dois.values())
            out["doi"] = next(d for d in list(dois) if dois[d] == top)
        if out["title"] is None:
            out["title"] = _first_page_title(doc[0])
    except Exception as exc:  # noqa: BLE001 - best effort
        log.debug("%s: metadata: %s", path, exc)
    finally:
        doc.close()
    return out


def _first_page_title(page: pymupdf.Page) -> str | None:
    """The largest-font text in the top 60% of the first page (ignoring drop capitals)."""
    spans = []
    for b in page.get_text("dict")["blocks"]:
        for line in b.get("lines", []):
            for s in line["spans"]:
                t = s["text"].strip()
                if len(t) >= 2 and s["bbox"][1] < 0.6 * page.rect.height:
                    spans.append((round(s["size"], 1), s["bbox"][1], t))
    if not spans:
        return None
    sizes = Counter()
    for size, _, t in spans:
        sizes[size] += len(t)
    for size in sorted(sizes, reverse=True):
        if sizes[size] >= 15:
            text = " ".join(t for s, _, t in sorted((x for x in spans if x[0] == size), key=lambda x: x[1]))
            return " ".join(text.split()) or None
    return None
