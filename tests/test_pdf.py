"""Tests for panel2patch.ingest.pdf on real eLife PDFs (shared data) and on made-up PDFs.

The real-data tests read ``$P2P_SHARED_DATA`` or ``<repo>/../shared/data`` and are skipped when
it is absent; nothing from there is copied into the repository.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pymupdf
import pytest
from lxml import etree

from panel2patch.ingest.pdf import (
    CAPTION_RE,
    PdfFigure,
    caption_title,
    extract_pdf_figures,
    normalise_label,
    pdf_metadata,
)

DATA = Path(os.environ.get("P2P_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
ELIFE = DATA / "pdfs" / "elife"
# Under CI the data must be there (conftest's shared_data fixture fails the run without it).
needs_data = pytest.mark.skipif(
    not DATA.is_dir() and not os.environ.get("CI"),
    reason=f"shared real data not found at {DATA} (set P2P_SHARED_DATA to run these tests)",
)


def norm(s: str) -> str:
    return " ".join(s.split()).lower()


def jats_figures(xml: Path) -> dict[str, tuple[str, str]]:
    """label -> (title, caption text) from an eLife JATS file (``.jinja`` placeholders filled)."""
    raw = xml.read_text(encoding="utf-8")
    number = re.search(r"elife-(\d+)", xml.parent.name).group(1)
    raw = re.sub(r"\{\{\s*article\['id'\]\s*\}\}", number, raw)
    root = etree.fromstring(raw.encode(), etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False))
    out = {}
    for fig in root.iter("fig"):
        label = " ".join("".join(fig.find("label").itertext()).split()).rstrip(".")
        cap = fig.find("caption")
        title = " ".join("".join(cap.find("title").itertext()).split())
        paras = [" ".join("".join(p.itertext()).split()) for p in cap.findall("p")]
        out[label] = (title, " ".join([title] + [p for p in paras if not p.startswith("DOI:")]))
    return out


@pytest.fixture(scope="module")
def elife_00790():
    folder = ELIFE / "elife-00790-vor-r1"
    figs, skips = extract_pdf_figures(folder / "elife-00790.pdf", dpi=72)
    return figs, skips, jats_figures(folder / "elife-00790.xml.jinja")


@needs_data
def test_elife_figures_have_jats_labels_and_captions(elife_00790):
    figs, skips, jats = elife_00790
    assert skips == []
    assert [f.label for f in figs] == [f"Figure {i}" for i in range(1, 9)]
    for f in figs:
        title, text = jats[f.label]
        assert isinstance(f, PdfFigure) and f.method == "pdf-heuristic"
        assert norm(f.caption).startswith(norm(f"{f.label}. {title}"))
        assert norm(f.caption) == norm(f"{f.label}. {text}")  # whole caption, DOI trailer dropped
        assert f.caption_title == title
    assert [f.page for f in figs] == [4, 6, 7, 8, 9, 10, 11, 11]


@needs_data
def test_figure_supplement_is_found_in_the_figures_pdf():
    folder = ELIFE / "elife-01239-vor-r1"
    jats = jats_figures(folder / "elife-01239.xml.jinja")
    doc = pymupdf.open(folder / "elife-01239-figures.pdf")
    doc.select([0, 3, 4])  # title page, Figure 3, its supplement: keeps the test fast
    figs, skips = extract_pdf_figures(doc.tobytes(), dpi=50)
    label = "Figure 3\u2014figure supplement 1"
    assert [f.label for f in figs] == ["Figure 3", label]
    assert norm(figs[1].caption).startswith(norm(f"{label}. {jats[label][0]}"))


@needs_data
def test_vector_figure_caption_continued_on_next_page():
    folder = ELIFE / "elife-15600-vor-r1"
    jats = jats_figures(folder / "elife-15600.xml.jinja")
    doc = pymupdf.open(folder / "elife-15600.pdf")
    doc.select([6, 7])  # Figure 3 (vector graphics) and the page with "Figure 3 continued"
    figs, _ = extract_pdf_figures(doc.tobytes(), dpi=50)
    assert [f.label for f in figs] == ["Figure 3"]
    tail = norm(jats["Figure 3"][1])[-80:]
    assert norm(figs[0].caption).endswith(tail)
    x0, y0, x1, y1 = figs[0].bbox
    assert x1 - x0 > 400 and y1 - y0 > 500  # the whole multi-panel figure, not one panel


@needs_data
def test_unlabelled_figure_with_its_caption():
    pdf = DATA / "articles" / "elife-bot-packages" / "elife-00353-vor-v1-20121213000000" / "elife-00353-v1.pdf"
    figs, skips = extract_pdf_figures(pdf, dpi=50)
    assert len(figs) == 1 and figs[0].label is None and skips == []
    assert figs[0].caption.startswith("This illustration of Eve Marder in her office")


@needs_data
def test_images_are_rgb_and_sized_from_bbox_and_dpi():
    pdf = DATA / "articles" / "elife-bot-packages" / "elife-05-19405" / "elife-19405.pdf"
    for dpi in (72, 120):
        figs, _ = extract_pdf_figures(pdf, dpi=dpi)
        assert [f.label for f in figs] == ["Figure 1"]
        f = figs[0]
        assert f.image.mode == "RGB" and f.page == 2
        x0, y0, x1, y1 = f.bbox
        assert abs(f.image.width - (x1 - x0) * dpi / 72) <= 2
        assert abs(f.image.height - (y1 - y0) * dpi / 72) <= 2


@needs_data
def test_max_pixels_guard():
    pdf = DATA / "articles" / "elife-bot-packages" / "elife-05-19405" / "elife-19405.pdf"
    figs, skips = extract_pdf_figures(pdf, max_pixels=10_000)
    assert figs == [] and [r for r, _ in skips] == ["decompression-bomb"]


@needs_data
def test_pdf_metadata_title_and_doi():
    meta = pdf_metadata(ELIFE / "elife-00790-vor-r1" / "elife-00790.pdf")
    assert meta["doi"] == "10.7554/eLife.00790"
    assert meta["title"].startswith("Fungal effector Ecp6 outcompetes host immune receptor")
    assert meta["licence"].startswith("This article is distributed under the terms of the Creative Commons Attribution")


@needs_data
def test_layout_method_finds_the_same_figure():
    pdf = DATA / "articles" / "elife-bot-packages" / "elife-05-19405" / "elife-19405.pdf"
    figs, skips = extract_pdf_figures(pdf, dpi=50, method="layout")
    assert [(f.label, f.page, f.method) for f in figs] == [("Figure 1", 2, "pdf-layout")]
    assert figs[0].caption.startswith("Figure 1. Membrane invaginations and cell division.")


@needs_data
def test_truncated_pdf_is_unreadable(tmp_path):
    data = (ELIFE / "elife-00790-vor-r1" / "elife-00790.pdf").read_bytes()
    bad = tmp_path / "truncated.pdf"
    bad.write_bytes(data[:2000])
    figs, skips = extract_pdf_figures(bad)
    assert figs == [] and [r for r, _ in skips] == ["unreadable-pdf"]


# ---- made-up PDFs (no shared data needed) ---------------------------------------------------

BODY = (
    "Body text of the article goes on here for a while, long enough to look like a paragraph "
    "of running text in the body font of the document."
)


def _text(page, rect, text, size=10):
    assert page.insert_textbox(pymupdf.Rect(rect), text, fontsize=size) >= 0


def _chart(page, rect):
    """A small vector 'bar chart' inside ``rect``."""
    x0, y0, x1, y1 = rect
    shape = page.new_shape()
    shape.draw_line((x0, y1), (x1, y1))
    shape.draw_line((x0, y0), (x0, y1))
    for i in range(5):
        bx = x0 + 15 + i * (x1 - x0 - 20) / 5
        shape.draw_rect(pymupdf.Rect(bx, y1 - (i + 1) * (y1 - y0) / 6, bx + 12, y1))
    shape.finish(color=(0, 0, 0), fill=(0.2, 0.4, 0.8))
    shape.commit()


def test_text_only_pdf_has_no_figures():
    doc = pymupdf.open()
    for _ in range(2):
        page = doc.new_page()
        _text(page, (72, 72, 540, 400), " ".join([BODY] * 5))
        _text(page, (72, 420, 540, 700), "As Figure 1 shows, nothing here is a figure. " + BODY)
    figs, skips = extract_pdf_figures(doc.tobytes())
    assert figs == [] and [r for r, _ in skips] == ["no-figures"]


@pytest.mark.parametrize("content", [b"", os.urandom(4096), b"%PDF-1.7\n1 0 obj << /Type /Catalog"])
def test_corrupt_pdf_is_unreadable(tmp_path, content):
    bad = tmp_path / "bad.pdf"
    bad.write_bytes(content)
    figs, skips = extract_pdf_figures(bad)
    assert figs == [] and [r for r, _ in skips] == ["unreadable-pdf"]
    assert pdf_metadata(bad) == {"title": None, "doi": None, "licence": None}


def test_missing_and_encrypted_pdf_are_unreadable(tmp_path):
    assert extract_pdf_figures(tmp_path / "missing.pdf")[1][0][0] == "unreadable-pdf"
    doc = pymupdf.open()
    _text(doc.new_page(), (72, 72, 540, 400), BODY)
    enc = tmp_path / "enc.pdf"
    doc.save(enc, encryption=pymupdf.PDF_ENCRYPT_AES_256, user_pw="secret", owner_pw="owner")
    figs, skips = extract_pdf_figures(enc)
    assert figs == [] and skips[0][0] == "unreadable-pdf" and "encrypted" in skips[0][1]


def test_vector_figure_with_caption_below_and_body_text():
    doc = pymupdf.open()
    page = doc.new_page()  # 612 x 792
    _text(page, (72, 60, 540, 200), " ".join([BODY] * 3))
    _chart(page, (100, 230, 400, 430))
    _text(page, (72, 445, 540, 490), "Figure 1. A synthetic bar chart. Bars (A) grow from left to right.", size=8)
    _text(page, (72, 520, 540, 700), " ".join([BODY] * 3))
    figs, skips = extract_pdf_figures(doc.tobytes(), dpi=72)
    assert skips == [] and len(figs) == 1
    f = figs[0]
    assert f.label == "Figure 1" and f.caption_title == "A synthetic bar chart."
    assert f.caption == "Figure 1. A synthetic bar chart. Bars (A) grow from left to right."
    x0, y0, x1, y1 = f.bbox
    assert 95 <= x0 <= 101 and 225 <= y0 <= 231 and 399 <= x1 <= 405 and 429 <= y1 <= 435


@pytest.mark.parametrize("rotation", [90, 270])
def test_rotated_page_renders_as_displayed(rotation):
    doc = pymupdf.open()
    page = doc.new_page()
    _text(page, (72, 60, 540, 200), " ".join([BODY] * 3))
    _chart(page, (100, 230, 400, 430))
    _text(page, (72, 445, 540, 490), "Figure 1. A synthetic bar chart.", size=8)
    page.set_rotation(rotation)
    figs, _ = extract_pdf_figures(doc.tobytes(), dpi=72)
    assert [f.label for f in figs] == ["Figure 1"]
    x0, y0, x1, y1 = figs[0].bbox
    assert 195 <= x1 - x0 <= 206 and 295 <= y1 - y0 <= 306  # landscape on screen: 200 x 300
    assert abs(figs[0].image.width - (x1 - x0)) <= 2 and abs(figs[0].image.height - (y1 - y0)) <= 2


def test_legend_section_then_one_figure_per_page():
    doc = pymupdf.open()
    page = doc.new_page()
    _text(page, (72, 60, 540, 300), " ".join([BODY] * 4))
    for i, y in enumerate((320, 360, 400), start=1):
        _text(page, (72, y, 540, y + 30), f"Figure {i}. Legend number {i}, on the legends page.")
    for _ in range(3):  # the same box on every page: still figures, not page furniture
        _chart(doc.new_page(), (80, 80, 500, 400))
    figs, _ = extract_pdf_figures(doc.tobytes(), dpi=36)
    assert [(f.label, f.page) for f in figs] == [("Figure 1", 2), ("Figure 2", 3), ("Figure 3", 4)]
    assert figs[1].caption == "Figure 2. Legend number 2, on the legends page."


@pytest.mark.parametrize(
    "text, label",
    [
        ("Figure 3. Title.", "Figure 3"),
        ("Fig. 3: Title", "Figure 3"),
        ("FIGURE 3 | Title", "Figure 3"),
        ("Figure 3\u2014figure supplement 1. Title", "Figure 3\u2014figure supplement 1"),
        ("Figure 1 \u2013 figure supplement 2. Title", "Figure 1 \u2013 figure supplement 2"),
        ("Appendix 1\u2014Figure 2. Title", "Appendix 1\u2014Figure 2"),
        ("Supplementary Fig. S2. Title", "Supplementary Figure S2"),
        ("Figure 3 shows that", None),
        ("Figure 3A: panel", None),
        ("Figure 3). More", None),
        ("Figure 3\u2014Source data 1. Values", None),
    ],
)
def test_caption_labels(text, label):
    m = CAPTION_RE.match(text)
    assert (normalise_label(m) if m else None) == label


def test_caption_title_skips_abbreviations():
    assert caption_title("Figure 2. Growth of C. elegans vs. time, e.g. at 20 degrees. More text.") == (
        "Growth of C. elegans vs. time, e.g. at 20 degrees."
    )
    assert caption_title("Figure 2") is None
    assert caption_title("An unlabelled caption. Second.", labelled=False) == "An unlabelled caption."
