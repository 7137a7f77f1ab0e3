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
   of vector paths (boxes from ``page.get_bboxlog``, joined by :func:`cluster_rects`, a linear
   version of ``page.cluster_drawings``) are the graphics; logos and icons repeated on many
   pages, tiny items, shaded text boxes and frames around captions are dropped.  Text blocks
   are split where PyMuPDF glued two columns together; running headers/footers and margin line
   numbers are dropped; a block is "body" when set in the document's body font size (or
   larger: headings) or when it is a long small-print paragraph.
   ``method="layout"``: the page-layout ONNX model shipped with ``pymupdf-layout`` labels boxes
   (picture, caption, text, table, page-header, ...); its pictures, completed with orphan images
   and vector clusters exactly as ``pymupdf4llm`` does, are the graphics and its classes give the
   text roles.
2. *Captions.*  A text block starting with a figure label and a delimiter ("Figure 3.",
   "Fig. 3:", "FIGURE 3 |", "Figure 3—figure supplement 1.", "Appendix 1—Figure 2."), or with
   the label alone on its first line, or with a label set in bold / another font than the title
   ("**Figure 3** Title"), starts a caption.  Blocks right below it in the same font size, at
   its own line spacing, continue it; it ends at the next label, at a wider gap or at a
   publisher trailer (a "DOI: ..." line, "The following figure supplements are available ..."),
   which is left out.  "Figure 3 continued" on a later page appends to Figure 3's caption.
3. *Pairing.*  Each caption takes the graphics between it and the nearest body text, caption or
   table above (or below) it that overlap it horizontally; which side comes first is voted per
   document (figures usually sit above their captions); failing both, a graphic right beside
   the caption (captions set in a side column).  Table captions ("Table 1.") take their ruled
   tables first so that tables never become figures.  The figure box is the union of those
   graphics plus the small text (panel letters, axis labels) around them.
4. *Fallbacks.*  Manuscripts with all legends in one section and one figure per page after it
   are paired in order, but only when that is unambiguous (main figures only, ascending, the
   counts agree exactly); eLife POA PDFs, which list supplements among the legends but print
   them after all main figures, are therefore left alone (no figures, not wrong ones).
   A large raster image left over with a short small-print block right below it becomes an
   unlabelled figure (``label=None``).

Boxes are computed in unrotated page coordinates; ``PdfFigure.bbox`` and the rendering are as
displayed (``/Rotate`` applied).  A damaged file whose pages partly fail to load gives the
figures of the readable pages plus an ``unreadable-pdf`` skip.

``method="auto"`` is the heuristic: on the eLife PDFs in ``shared/data``
(``benchmarks/pdf_figures.py``) both methods find every JATS figure with the same captions, and
the heuristic is more than ten times faster (the layout model costs ~0.3 s of CPU per page).

Known limits: scanned PDFs (no text layer) give no captions, hence no figures; figures without
a printed label are found only in the narrow case above; a figure continued over two pages
yields its first page only.
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
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
    bbox: tuple[float, float, float, float]  # figure region in PDF points (x0, y0, x1, y1), as
    # displayed (PyMuPDF page coordinates: origin top left, page /Rotate applied)
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
    r"(?P<num>S?\d{1,3}(?:\.\d{1,2}(?=[\s.:|]))?)(?![\d.,]\d)"  # 3, S3, 2.1 (chapter.figure)
    r"(?P<sub>\s*\.?\s*" + _DASH + r"\s*(?:figure|Figure)\s+supplement\s+\d+)?"
    r")"
)
# A caption starts with a label and a clear delimiter: ".", ":", "|", an em dash, or nothing
# more on the line (label on a line of its own).  "Figure 3 shows", "Figure 3A", "Figure 3)"
# and "Figure 3—Source data 1." are not captions.
_NOT_ASSET = r"(?!\s*(?i:source|video|animation|audio|data|figure supplement)\b)"
CAPTION_RE = re.compile(r"^\s*" + _LABEL + r"\s*(?P<delim>[.:|]|\u2014" + _NOT_ASSET + r"|\s*$)")
LABEL_LINE_RE = re.compile(r"^\s*" + _LABEL + r"\s*[.:|\u2014]?\s*$")  # "Figure 2" alone on a line
LABEL_WORD_RE = re.compile(r"^\s*" + _LABEL + r"\s+(?=[A-Z(])")  # "Figure 2 Title" (bold label)
LABEL_PREFIX_RE = re.compile(r"^\s*" + _LABEL + r"\s*[.:|\u2014]?\s*")
# "Figure 3 continued" / "Figure 3 (continued)" at the top of a later page
CONTINUED_RE = re.compile(r"^\s*" + _LABEL + r"\s*[.:]?\s*\(?(?:continued|cont\.)\)?", re.I)
_TABLE = (
    r"^\s*(?:(?:Appendix|Box)\s*\d+\s*" + _DASH + r"\s*)?(?:Supplementary\s+)?"
    r"(?:Table|TABLE)\s*S?[IVX\d]{1,4}"
)
TABLE_RE = re.compile(_TABLE + r"\s*(?:[.:|\u2014]|\s*$)")
TABLE_LINE_RE = re.compile(_TABLE + r"\s*[.:|\u2014]?\s*$")
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


def _caption_start(lines: list[str], text: str, spans: list[tuple[str, str, bool]] = ()) -> re.Match | None:
    """The label match if a block starts a caption.

    ``lines`` and ``text`` are the block's lines and joined text, ``spans`` its first row's
    (text, font, bold) spans: "Figure 2 Title" without a delimiter counts only when the label
    is set apart from the title in bold or another font.
    """
    m = CAPTION_RE.match(text)
    if m is None and lines:
        m = LABEL_LINE_RE.match(lines[0])  # "Figure 2" on a line of its own, title below
    if m is None and spans:
        w = LABEL_WORD_RE.match(text)
        if w:
            pos, label_font, label_bold, after = 0, None, False, None
            for t, font, bold in spans:
                if pos < w.end("label"):
                    label_font, label_bold = font, bold
                elif t.strip():
                    after = (font, bold)
                    break
                pos += len(t)
            if after and ((label_bold and not after[1]) or label_font != after[0]):
                m = w
    return m


def _table_start(lines: list[str], text: str) -> bool:
    return bool(TABLE_RE.match(text) or (lines and TABLE_LINE_RE.match(lines[0])))


def normalise_label(match: re.Match) -> str:
    """Printed label with the figure word spelled "Figure" and whitespace normalised."""
    prefix = " ".join((match.group("prefix") or "").split())
    if prefix:  # "Appendix 1 —" -> "Appendix 1—"
        prefix = re.sub(r"\s*" + _DASH + r"\s*$", "\u2014", prefix)
        prefix = prefix[0].upper() + prefix[1:].lower()
    supp = (match.group("supp") or "").strip().capitalize()
    label = f"{prefix}{supp + ' ' if supp else ''}Figure {match.group('num')}"
    sub = match.group("sub")
    if sub:
        label += " ".join(sub.split()) if not sub[:1].isspace() else " " + " ".join(sub.split())
    return label


def caption_title(caption: str, labelled: bool = True) -> str | None:
    """First sentence of ``caption`` after its label ("Figure 1. Title. More." -> "Title.")."""
    text = LABEL_PREFIX_RE.sub("", caption, count=1) if labelled else caption
    text = text.strip()
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
    spans: list = field(default_factory=list)  # first row: (text, font, bold) per span
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


@functools.lru_cache(maxsize=1024)
def _bold_font(font: str) -> bool:
    return bool(re.search(r"bold|black|heavy|semibold|,B\b", font, re.I))


def _is_bold(span: dict) -> bool:
    return bool(span.get("flags", 0) & 16) or _bold_font(span.get("font", ""))


def _text_blocks(page: pymupdf.Page, textpage=None) -> list[_Block]:
    """Text blocks with rows of spans joined left to right and margin line numbers dropped."""
    width = _unrotated_rect(page).width
    d = textpage.extractDICT() if textpage is not None else page.get_text("dict")
    blocks = []
    for b in d["blocks"]:
        if b.get("type") != 0:
            continue
        rows: list[list[dict]] = []  # lines sharing a baseline row
        for line in b["lines"]:
            text = "".join(s["text"] for s in line["spans"])
            if not text.strip():
                continue
            x0, x1 = line["bbox"][0], line["bbox"][2]
            if re.fullmatch(r"\s*\d{1,4}\s*", text) and (x0 > 0.8 * width or x1 < 0.2 * width):
                continue  # line numbers of manuscripts ("709") in the page margins
            y0, y1 = line["bbox"][1], line["bbox"][3]
            if rows:
                r0 = min(l["bbox"][1] for l in rows[-1])
                r1 = max(l["bbox"][3] for l in rows[-1])
                if min(y1, r1) - max(y0, r0) > 0.5 * min(y1 - y0, r1 - r0) and line["dir"][0] > 0.9:
                    rows[-1].append(line)
                    continue
            rows.append([line])
        # (rect, text, {size: chars}, first span bold) per row
        infos = []
        for row in rows:
            row.sort(key=lambda l: l["bbox"][0])
            text, x1 = "", None
            for line in row:
                t = "".join(s["text"] for s in line["spans"])
                if x1 is not None and not text.endswith(" ") and not t.startswith(" ") and abs(line["bbox"][0] - x1) > 1.0:
                    text += " "  # words on one row split into several lines
                text += t
                x1 = line["bbox"][2]
            lb = pymupdf.Rect(row[0]["bbox"])
            for line in row[1:]:
                lb |= line["bbox"]
            sizes, bold = Counter(), None
            for line in row:
                for s in line["spans"]:
                    if s["text"].strip():
                        sizes[round(s["size"], 1)] += len(s["text"].strip())
                        if bold is None:
                            bold = _is_bold(s)
            infos.append((lb, text, sizes, bool(bold), row))
        # split blocks whose rows jump to another column or across a gap (text wrapped
        # around a figure comes as one block spanning both columns)
        groups: list[list[tuple]] = []
        for info in infos:
            if groups:
                prev = groups[-1][-1][0]
                if abs(info[0].x0 - prev.x0) <= 30 and info[0].y0 - prev.y1 <= max(1.2 * prev.height, 3):
                    groups[-1].append(info)
                    continue
            groups.append([info])
        for g in groups:
            rect, sizes = pymupdf.Rect(g[0][0]), Counter()
            for info in g[1:]:
                rect |= info[0]
            for info in g:
                sizes.update(info[2])
            spans = [(sp["text"], sp.get("font", ""), _is_bold(sp)) for line in g[0][4] for sp in line["spans"]]
            blocks.append(_Block(rect, [i[1] for i in g], sizes.most_common(1)[0][0], g[0][3], spans))
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
    """Remove logos and page furniture: small or edge-of-page graphics repeated in place.

    Large graphics in the page body are kept even when repeated: figure-only pages of a
    manuscript may all hold a figure scaled to the same box.
    """
    def key(g: pymupdf.Rect) -> tuple:
        return tuple(round(v / 2) for v in g)

    counts = Counter()
    for p in pages:
        counts.update({key(g) for g in p.graphics})
    need = 2 if len(pages) < 4 else max(3, round(0.3 * len(pages)))
    for p in pages:
        h = p.rect.height
        p.graphics = [
            g for g in p.graphics
            if counts[key(g)] < need or not (_area(g) < 0.02 * _area(p.rect) or g.y1 < 0.15 * h or g.y0 > 0.85 * h)
        ]


# ---- heuristic page reading ----------------------------------------------------------------


_PATH_KINDS = {"fill-path", "stroke-path", "fill-shade"}


def _unrotated_rect(page: pymupdf.Page) -> pymupdf.Rect:
    """The page in the unrotated coordinates that text, image and path boxes come in."""
    return pymupdf.Rect(page.rect * page.derotation_matrix)


def cluster_rects(rects: list[pymupdf.Rect], page_rect: pymupdf.Rect, tol: float = 3.0) -> list[pymupdf.Rect]:
    """Join rectangles closer than ``tol`` points into clusters (vector figures).

    Same idea as ``Page.cluster_drawings`` (whose clusters also swallow whatever lies inside
    their bounding box), but linear in the number of paths: ``cluster_drawings`` takes ~45 s
    on a scatter plot of 5,000 separate markers.  The rects, grown by about ``tol / 2``, are
    painted on a 1-point grid whose connected runs are joined with a union-find; the cluster
    boxes are painted again until no two of them touch.  Only rects inside the page count,
    and clusters not larger than ``tol`` both ways are dropped, as in ``cluster_drawings``.
    """
    inside = page_rect + (-1, -1, 1, 1)
    boxes = [pymupdf.Rect(r) for r in rects if inside.contains(r)]
    while boxes:
        groups = _touching(boxes, page_rect, tol) if len(boxes) > 200 else _touching_small(boxes, tol)
        merged = []
        for members in groups:
            box = pymupdf.Rect(boxes[members[0]])
            for i in members[1:]:
                box |= boxes[i]
            merged.append(box)
        if len(merged) == len(boxes):
            break
        boxes = merged
    return [c for c in boxes if c.width > tol and c.height > tol]


def _find(parent: list[int], i: int) -> int:
    """Union-find root of ``i`` (with path halving)."""
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


def _touching_small(rects: list[pymupdf.Rect], tol: float) -> list[list[int]]:
    """``_touching`` for a few rects: pairwise bounding-box distance <= ``tol``."""
    parent = list(range(len(rects)))

    for i, a in enumerate(rects):
        for j in range(i + 1, len(rects)):
            b = rects[j]
            if a.x0 - tol <= b.x1 and b.x0 - tol <= a.x1 and a.y0 - tol <= b.y1 and b.y0 - tol <= a.y1:
                ri, rj = _find(parent, i), _find(parent, j)
                if ri != rj:
                    parent[ri] = rj
    groups: dict[int, list[int]] = {}
    for i in range(len(rects)):
        groups.setdefault(_find(parent, i), []).append(i)
    return list(groups.values())


def _touching(rects: list[pymupdf.Rect], page_rect: pymupdf.Rect, tol: float) -> list[list[int]]:
    """Indices of ``rects`` grouped by connected components of their painted, grown areas."""
    ox, oy = page_rect.x0, page_rect.y0
    w, h = int(math.ceil(page_rect.width)) + 2, int(math.ceil(page_rect.height)) + 2
    grow = max(tol / 2 - 0.5, 0.5)  # the grid rounds outwards by up to 1 point
    mask = np.zeros((h, w), dtype=bool)
    cells = []
    for r in rects:
        x0 = min(max(int(math.floor(r.x0 - ox - grow)), 0), w - 1)
        x1 = min(max(int(math.ceil(r.x1 - ox + grow)), x0 + 1), w)
        y0 = min(max(int(math.floor(r.y0 - oy - grow)), 0), h - 1)
        y1 = min(max(int(math.ceil(r.y1 - oy + grow)), y0 + 1), h)
        mask[y0:y1, x0:x1] = True
        cells.append(((y0 + y1 - 1) // 2, (x0 + x1 - 1) // 2))

    # horizontal runs in row-major order (within the painted area); runs of row y are
    # row_first[y]:row_first[y+1]
    cols = np.flatnonzero(mask.any(axis=0))
    c0, c1 = int(cols[0]), int(cols[-1]) + 1
    edges = np.diff(mask[:, c0:c1].view(np.int8), axis=1, prepend=0, append=0)
    run_y, run_x0 = np.nonzero(edges > 0)
    run_x1 = np.nonzero(edges < 0)[1] + c0
    run_x0 = run_x0 + c0
    row_first = np.searchsorted(run_y, np.arange(h + 1))
    parent = list(range(len(run_y)))

    for y in np.unique(run_y):
        if y == 0 or row_first[y - 1] == row_first[y]:
            continue  # first row, or nothing in the row above
        j, j_end = int(row_first[y - 1]), int(row_first[y])
        for k in range(int(row_first[y]), int(row_first[y + 1])):
            while j < j_end and run_x1[j] <= run_x0[k]:
                j += 1
            jj = j
            while jj < j_end and run_x0[jj] < run_x1[k]:
                a, b = _find(parent, k), _find(parent, jj)
                if a != b:
                    parent[a] = b
                jj += 1

    groups: dict[int, list[int]] = {}
    for i, (cy, cx) in enumerate(cells):
        lo, hi = int(row_first[cy]), int(row_first[cy + 1])
        k = lo + int(np.searchsorted(run_x0[lo:hi], cx, side="right")) - 1
        groups.setdefault(_find(parent, k), []).append(i)
    return list(groups.values())


def _heuristic_page(page: pymupdf.Page) -> _Page:
    prect = _unrotated_rect(page)
    blocks = _text_blocks(page)
    graphics, images = [], []
    for info in page.get_image_info():
        r = pymupdf.Rect(info["bbox"]) & prect
        if not r.is_empty and r.width > 3 and r.height > 3:
            graphics.append(r)
            images.append(pymupdf.Rect(r))
    try:  # path boxes from the bbox log: ~10x faster than page.get_drawings()
        paths = [pymupdf.Rect(r) for kind, r in page.get_bboxlog() if kind in _PATH_KINDS]
    except Exception:  # noqa: BLE001 - a broken content stream: images only
        paths = []
    clusters = cluster_rects([r for r in paths if _area(r & prect) < 0.9 * _area(prect)], prect)
    for r in clusters:
        r = pymupdf.Rect(r) & prect
        if r.is_empty or r.width <= 3 or r.height <= 3 or _area(r) > 0.9 * _area(prect):
            continue
        graphics.append(r)
    return _Page(page.number, prect, blocks, graphics, images=images)


def _heuristic_roles(pages: list[_Page], body: float) -> None:
    for p in pages:
        # shaded text boxes and appendix/box backgrounds: a vector cluster largely covered by
        # paragraphs in the body font, or framing a caption, is not a figure (its images stay)
        paragraphs = [b.rect for b in p.blocks if b.role != "margin" and abs(b.size - body) <= 0.6 and len(b.text) >= 80]
        captions = [b.rect for b in p.blocks if _caption_start(b.lines, b.text, b.spans) or _table_start(b.lines, b.text)]
        keep = []
        for g in p.graphics:
            is_image = any(_inside_frac(g, i) > 0.95 and _inside_frac(i, g) > 0.95 for i in p.images)
            covered = sum(_area(r & g) for r in paragraphs)
            framed = any(_inside_frac(r, g) > 0.9 for r in captions)
            if not is_image and (covered > 0.3 * _area(g) or framed):
                continue
            keep.append(g)
        p.graphics = keep
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
    importlib.import_module("pymupdf.layout")  # registers the ONNX layout model with PyMuPDF

    prect = _unrotated_rect(page)
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
    images = [pymupdf.Rect(i["bbox"]) & prect for i in page.get_image_info()]
    return _Page(page.number, prect, blocks, [g for g in graphics if not g.is_empty], tables, images)


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
    blocks: set[int] = field(default_factory=set)  # indices of the caption's text blocks


def _assemble(p: _Page, start: int, used: set[int]) -> tuple[str, pymupdf.Rect]:
    """Caption text from block ``start`` plus the blocks that continue it directly below.

    A block continues the caption when it is set in the caption's font size, starts at its
    left edge and follows at the caption's own line spacing (a wider gap starts a new
    paragraph); a label, a publisher trailer or another asset's caption ends it.
    """
    first = p.blocks[start]
    parts, rect, last = [first.text], pymupdf.Rect(first.rect), first
    used.add(start)
    trailer = TRAILER_RE.search(first.text)
    if trailer and trailer.start() > 0:
        return first.text, rect
    # gap between lines inside the caption: known from a multi-line first block, else from
    # the first continuation (double-spaced manuscripts)
    n = len(first.lines)
    line_gap = max(first.rect.height / n - first.size * 1.15, 0.0) if n > 1 else None
    while True:
        allowed = max(1.6 * first.size, 6) if line_gap is None else max(1.8 * line_gap + 1.5, 3)
        nxt = None
        for i, b in enumerate(p.blocks):
            if i in used or b.role in ("margin", "figtext", "table"):
                continue
            gap = b.rect.y0 - last.rect.y1
            if -2 <= gap <= allowed and abs(b.rect.x0 - rect.x0) <= 12 and abs(b.size - first.size) <= 0.6:
                if nxt is None or b.rect.y0 < p.blocks[nxt].rect.y0:
                    nxt = i
        if nxt is None:
            break
        b = p.blocks[nxt]
        if (
            _caption_start(b.lines, b.text, b.spans)
            or CONTINUED_RE.match(b.text)
            or _table_start(b.lines, b.text)
            or OTHER_ASSET_RE.match(b.text)
            or TRAILER_RE.match(b.text)
        ):
            break
        if line_gap is None:
            line_gap = max(b.rect.y0 - last.rect.y1, 0.0)
        used.add(nxt)
        parts.append(b.text)
        rect |= b.rect
        last = b
        if TRAILER_RE.search(b.text):
            break
    return _join_lines(parts), rect


def _find_captions(pages: list[_Page], method: str) -> list[_Caption]:
    """Figure captions, table captions and "Figure N continued" markers, page by page."""
    caps = []
    for p in pages:
        used: set[int] = set()
        for i, b in enumerate(p.blocks):
            if i in used or b.role == "margin" or (method == "layout" and b.role == "figtext"):
                continue
            before = set(used)
            cont = CONTINUED_RE.match(b.text)
            m = _caption_start(b.lines, b.text, b.spans)
            if cont and not m:
                text, rect = _assemble(p, i, used)
                c = _Caption(p.number, i, "continued", normalise_label(cont), text[cont.end():], rect)
            elif m:
                text, rect = _assemble(p, i, used)
                c = _Caption(p.number, i, "figure", normalise_label(m), text, rect)
            elif _table_start(b.lines, b.text):
                used.add(i)
                c = _Caption(p.number, i, "table", None, b.text, pymupdf.Rect(b.rect))
            else:
                continue
            c.blocks = used - before
            caps.append(c)
    return caps


def _grow(seeds: list[pymupdf.Rect], pool: list[pymupdf.Rect], side: bool = False) -> tuple[list, pymupdf.Rect]:
    """Add the pool's graphics that touch the seeds' span (or share its columns, unless ``side``)."""
    chosen = list(seeds)
    span = pymupdf.Rect(chosen[0])
    for g in chosen[1:]:
        span |= g
    grew = True
    while grew:  # parts beside the seeds (a figure wider than its caption)
        grew = False
        for g in pool:
            if g in chosen:
                continue
            if (not side and _xoverlap(g, span) > 0) or (g + (-8, -8, 8, 8)).intersects(span):
                chosen.append(g)
                span |= g
                grew = True
    return chosen, span


def _band(p: _Page, cap: _Caption, up: bool, graphics: list[pymupdf.Rect], blockers: list[pymupdf.Rect]):
    """Graphics between ``cap`` and the nearest blocker above (``up``) or below it.

    Returns (graphics, gap to the caption, zone the figure may extend over).
    """
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
        zone = pymupdf.Rect(0, top, p.rect.width, c.y0)
    else:
        inside = [g for g in graphics if g.y0 >= c.y1 - 4 and g.y1 <= bottom + 4]
        zone = pymupdf.Rect(0, c.y1, p.rect.width, bottom)
    seeds = [g for g in inside if _xoverlap(g, c) > 0]
    if not any(_significant(g, p.rect) for g in seeds):
        return [], float("inf"), zone
    chosen, span = _grow(seeds, inside)
    gap = (c.y0 - span.y1) if up else (span.y0 - c.y1)
    return chosen, max(gap, 0.0), zone


def _beside(p: _Page, cap: _Caption, graphics: list[pymupdf.Rect], blockers: list[pymupdf.Rect]):
    """A figure left or right of its caption (captions set in a side column)."""
    c = cap.rect
    best = None
    for g in graphics:
        if not _significant(g, p.rect):
            continue
        voverlap = min(g.y1, c.y1) - max(g.y0, c.y0)
        if voverlap < 0.5 * min(c.height, g.height):
            continue
        right = g.x0 >= c.x1 - 2
        gap = g.x0 - c.x1 if right else c.x0 - g.x1
        if not -2 <= gap <= 36:
            continue
        lo, hi = (c.x1, g.x0) if right else (g.x1, c.x0)
        between = [r for r in blockers if r.x0 < hi - 1 and r.x1 > lo + 1 and min(r.y1, g.y1) > max(r.y0, g.y0)]
        if not between and (best is None or gap < best[0]):
            best = (gap, g, right)
    if best is None:
        return [], float("inf"), None
    _, g, right = best
    pool = [h for h in graphics if (h.x0 >= c.x1 - 2 if right else h.x1 <= c.x0 + 2)]
    chosen, span = _grow([g], pool, side=True)
    zone = pymupdf.Rect(c.x1 if right else 0, span.y0 - 14, p.rect.width if right else c.x0, span.y1 + 14)
    return chosen, best[0], zone


def _region(p: _Page, parts: list[pymupdf.Rect], zone: pymupdf.Rect, caption_rect, skip: set[int] = frozenset()) -> pymupdf.Rect:
    """Union of the parts plus nearby small text (panel letters, axis labels) in the zone."""
    region = pymupdf.Rect(parts[0])
    for g in parts[1:]:
        region |= g
    for _ in range(2):
        grown = region + (-14, -14, 14, 14)
        for i, b in enumerate(p.blocks):
            if i in skip or b.role not in ("figtext", "other") or not b.rect.intersects(grown):
                continue
            if _inside_frac(b.rect, zone + (-1, -1, 1, 1)) > 0.99 and not b.rect.intersects(caption_rect):
                region |= b.rect
    return region & p.rect


def _pair(pages: list[_Page], caps: list[_Caption]) -> None:
    """Give each figure/table caption its graphics (see module docstring, step 3)."""
    by_page: dict[int, list[_Caption]] = {}
    for c in caps:
        by_page.setdefault(c.page, []).append(c)
    caption_blocks = {pno: set().union(*(c.blocks for c in cs)) for pno, cs in by_page.items()}

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
        for choice in ("preferred", "other", "beside"):
            for c in caps:
                if c.kind != kind or c.parts:
                    continue
                p = pages[c.page]
                free = [g for j, g in enumerate(p.graphics) if j not in taken.get(p.number, set())]
                if choice == "beside":
                    parts, gap, zone = _beside(p, c, free, blockers(p, c))
                else:
                    parts, gap, zone = _band(p, c, pref[kind] == (choice == "preferred"), free, blockers(p, c))
                if parts:
                    c.parts = parts
                    c.region = _region(p, parts, zone, c.rect, caption_blocks[p.number])
                    ids = taken.setdefault(p.number, set())
                    ids.update(j for j, g in enumerate(p.graphics) if g in parts)


def _legend_section(pages: list[_Page], caps: list[_Caption]) -> None:
    """Legends collected in one section, figures one per page after it: pair them in order.

    Only when it is unambiguous: every unpaired caption is a main figure ("Figure 4", no
    supplement), their numbers ascend, and there are exactly as many caption-less pages with
    a figure and no body text after the last legend.  Mixed main figures and supplements are
    not paired: their pages need not follow the legends' order (eLife POA PDFs print main
    figures first, then supplements, while the legends interleave them).
    """
    orphans = [c for c in caps if c.kind == "figure" and not c.parts]
    if not orphans:
        return
    numbers = []
    for c in orphans:
        m = re.fullmatch(r"Figure (\d+)", c.label or "")
        if not m:
            return
        numbers.append(int(m.group(1)))
    if numbers != sorted(set(numbers)):
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
        c.region = _region(p, free, pymupdf.Rect(p.rect), pymupdf.Rect(-1, -1, -1, -1))
        c.region_page = p.number


def _unlabelled(pages: list[_Page], caps: list[_Caption], body: float, method: str) -> list[_Caption]:
    """A large leftover image with a short small-print caption right below it."""
    out = []
    taken = {id(g) for c in caps for g in c.parts}
    cap_blocks = {(c.page, i) for c in caps for i in c.blocks}
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
                    c = _Caption(p.number, i, "unlabelled", None, text, rect, [g], blocks=used)
                    c.region = _region(p, [g], pymupdf.Rect(0, g.y0, p.rect.width, b.rect.y0), rect)
                    out.append(c)
                    taken.add(id(g))
                    break
    return out


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def _name(path) -> str:
    """``path`` for messages (PDF bytes are not printed)."""
    return f"<{len(path)} bytes of PDF>" if isinstance(path, (bytes, bytearray)) else str(path)


def _open(path) -> tuple[pymupdf.Document | None, tuple[str, str] | None]:
    """Open ``path`` (a file path, or the PDF as bytes); (None, skip) when it cannot be read."""
    name = _name(path)
    try:
        doc = pymupdf.open(str(path)) if not isinstance(path, (bytes, bytearray)) else pymupdf.open(stream=bytes(path), filetype="pdf")
    except Exception as exc:  # noqa: BLE001 - any open failure is an unreadable PDF
        return None, ("unreadable-pdf", f"{name}: {type(exc).__name__}: {exc}")
    try:
        if doc.needs_pass and not doc.authenticate(""):
            doc.close()
            return None, ("unreadable-pdf", f"{name}: encrypted (password required)")
        if not doc.is_pdf:
            doc.close()
            return None, ("unreadable-pdf", f"{name}: not a PDF")
        if doc.page_count == 0:
            doc.close()
            return None, ("unreadable-pdf", f"{name}: no pages")
    except Exception as exc:  # noqa: BLE001
        return None, ("unreadable-pdf", f"{name}: {type(exc).__name__}: {exc}")
    return doc, None


def _read_pages(doc: pymupdf.Document, method: str) -> tuple[list[_Page], list[str]]:
    pages, errors = [], []
    for pno in range(doc.page_count):
        try:
            page = doc[pno]
            p = _layout_page(page) if method == "layout" else _heuristic_page(page)
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
    if method == "layout":
        importlib.import_module("pymupdf.layout")  # a missing model is a setup error, not a bad PDF
    doc, skip = _open(path)
    path = _name(path)
    if doc is None:
        return [], [skip]
    skips: list[tuple[str, str]] = []
    try:
        pages, errors = _read_pages(doc, method)
        if errors:  # damaged or truncated file: keep what the readable pages give
            detail = f"{path}: {len(errors)} of {doc.page_count} pages unreadable ({errors[0]})"
            if len(errors) == doc.page_count:
                return [], [("unreadable-pdf", detail)]
            log.warning(detail)
            skips.append(("unreadable-pdf", detail))
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
        figs.sort(key=lambda c: (c.page if c.region_page is None else c.region_page, c.region.y0, c.region.x0))

        out = []
        tag = "pdf-layout" if method == "layout" else "pdf-heuristic"
        for c in figs:
            pno = c.page if c.region_page is None else c.region_page
            rect = pymupdf.Rect(c.region * doc[pno].rotation_matrix)  # as displayed (/Rotate)
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
            title = caption_title(caption, labelled=c.label is not None)
            out.append(PdfFigure(c.label, caption, title, pno + 1, tuple(round(v, 2) for v in rect), image, tag))
        if not out and not any(reason != "unreadable-pdf" for reason, _ in skips):
            skips.append(("no-figures", f"{path}: no captioned figure found ({method})"))
        return out, skips
    except Exception as exc:  # noqa: BLE001 - never raise on a bad PDF
        log.exception("%s: figure extraction failed", path)
        return [], [("unreadable-pdf", f"{path}: {type(exc).__name__}: {exc}")]
    finally:
        doc.close()


_JUNK_TITLE = re.compile(r"^\s*$|^\d+(\s+\d+\.\.\d+)?$|\.(docx?|indd|tex|pdf|qxd|rtf)\b|^untitled|^microsoft word|template|^[A-Z]+\d+(\s+\d+\.\.\d+)?$", re.I)


_CC_URL = re.compile(r"creativecommons\.org/(?:licenses|publicdomain)/[a-z0-9./-]+", re.I)
_LICENCE_SENTENCE = re.compile(r"[^.]*(?:Creative Commons|public domain)[^.]*\.", re.I)


def _licence_statement(text: str) -> str | None:
    """A Creative Commons URL, else the sentence granting a CC / public-domain licence."""
    flat = " ".join(text.split())
    if m := _CC_URL.search(flat.replace("http:// ", "http://").replace("https:// ", "https://")):
        return "http://" + m.group(0).rstrip(".,;)")
    if m := _LICENCE_SENTENCE.search(flat):
        return m.group(0).strip()[:500]
    return None


def pdf_metadata(path) -> dict:
    """Best effort ``{"title", "doi", "licence"}`` from the PDF metadata or the first pages' text."""
    out = {"title": None, "doi": None, "licence": None}
    doc, _ = _open(path)
    if doc is None:
        return out
    try:
        meta = doc.metadata or {}
        title = " ".join((meta.get("title") or "").split())
        if title and not _JUNK_TITLE.search(title) and len(title.split()) >= 2:
            out["title"] = title
        # the article's DOI is the one repeated in running footers; else the first one seen
        dois = Counter()  # insertion order breaks ties: metadata first, then reading order
        for field_ in ("subject", "keywords"):
            for d in DOI_RE.findall(meta.get(field_) or ""):
                dois[d.rstrip(".,;)]")] += 2
        for pno in range(min(3, doc.page_count)):
            text = doc[pno].get_text()
            for d in DOI_RE.findall(text):
                dois[d.rstrip(".,;)]")] += 1
            out["licence"] = out["licence"] or _licence_statement(text)
        if dois:
            top = max(dois.values())
            out["doi"] = next(d for d in dois if dois[d] == top)
        if out["title"] is None:
            out["title"] = _first_page_title(doc[0])
    except Exception as exc:  # noqa: BLE001 - best effort
        log.debug("%s: metadata: %s", _name(path), exc)
    finally:
        doc.close()
    return out


def _first_page_title(page: pymupdf.Page) -> str | None:
    """The largest-font text (>= 5 characters: not a drop capital) in the top 60% of page 1."""
    spans = []
    for b in page.get_text("dict")["blocks"]:
        for line in b.get("lines", []):
            for s in line["spans"]:
                t = s["text"].strip()
                if t and s["bbox"][1] < 0.6 * page.rect.height:
                    spans.append((round(s["size"], 1), (round(s["bbox"][1]), s["bbox"][0]), t))
    if not spans:
        return None
    sizes = Counter()
    for size, _, t in spans:
        sizes[size] += len(t)
    for size in sorted(sizes, reverse=True):
        if sizes[size] >= 5:
            text = " ".join(t for s, _, t in sorted((x for x in spans if x[0] == size), key=lambda x: x[1]))
            return " ".join(text.split()) or None
    return None
