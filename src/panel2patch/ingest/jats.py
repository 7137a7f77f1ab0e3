"""Read a JATS/NLM article: ids, licence, figures with captions, and the body sentences citing them.

The parser never resolves entities, never reads a DTD and never touches the network, so an
article with ``<!ENTITY x SYSTEM "file:///etc/passwd">`` yields the literal reference, not the file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from ..text.refs import cited_panels, normalise_figure_id
from .tables import SkipError

XLINK = "{http://www.w3.org/1999/xlink}href"
ALI_LICENCE = "{http://www.niso.org/schemas/ali/1.0/}license_ref"


class JatsError(SkipError):
    """The file is not a readable JATS article (malformed XML, or not an ``<article>``)."""


@dataclass
class JatsFigure:
    key: str  # the fig's id attribute, else its position ("fig3")
    label: str | None
    caption_title: str | None
    caption: str  # title + text
    graphics: list[str]  # xlink:href of the figure's graphics, preferred first
    number: str | None  # "2" from "Figure 2", used to read panel letters in citations
    inline_refs: list[dict] = field(default_factory=list)  # {"sentence", "panels"}


@dataclass
class JatsArticle:
    pmcid: str | None
    pmid: str | None
    doi: str | None
    publisher_id: str | None
    title: str | None
    journal: str | None
    licence: str | None
    figures: list[JatsFigure]


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False, huge_tree=False, recover=False
    )


# byte-order marks, then the bytes of "<" with no mark (XML 1.0, appendix F), longest first
_BOMS = ((b"\xef\xbb\xbf", "utf-8"), (b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"),
         (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"), (b"<\x00\x00\x00", "utf-32-le"),
         (b"\x00\x00\x00<", "utf-32-be"), (b"<\x00", "utf-16-le"), (b"\x00<", "utf-16-be"))


def sniff_encoding(head: bytes) -> str:
    """The encoding of an XML file from its first bytes: a byte-order mark or the NUL bytes around
    the first ``<`` (UTF-16/32), else UTF-8 (any ASCII-compatible encoding spells tags the same)."""
    return next((enc for mark, enc in _BOMS if head.startswith(mark)), "utf-8")


def is_jats(path: Path, head_bytes: int = 4096) -> bool:
    """Cheap sniff: an ``<article`` root element (or an ``article`` DOCTYPE) near the top of the
    file, in whatever encoding the file is (a UTF-16 article is as much an article)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(head_bytes)
    except OSError:
        return False
    text = head.decode(sniff_encoding(head), errors="ignore")
    return re.search(r"<(?:[A-Za-z]+:)?article[\s>]|<!DOCTYPE\s+(?:[A-Za-z]+:)?article[\s>\[]", text) is not None


def norm_space(text: str | None) -> str:
    return re.sub(r"\s+", " ", text or "").strip()


_BLOCK = {"title", "p", "sec", "list-item", "label", "def", "term", "disp-quote"}


def _text(el) -> str:
    """Text content of an element, entity references and comments dropped, blocks space-separated."""
    if el is None:
        return ""
    parts: list[str] = []

    def walk(node):
        if not isinstance(node.tag, str):  # unresolved entity, comment, processing instruction
            parts.append(node.tail or "")
            return
        parts.append(node.text or "")
        for child in node:
            walk(child)
        if node.tag in _BLOCK:
            parts.append(" ")
        if node is not el:
            parts.append(node.tail or "")

    walk(el)
    return norm_space("".join(parts))


def _first(el, path: str):
    found = el.find(path) if el is not None else None
    return found


def _licence(meta) -> str | None:
    """Licence URL (or type, or text) from ``<permissions>``; older articles state it only in a
    ``<copyright-statement>``, which is used when it names a Creative Commons or public-domain grant."""
    perms = _first(meta, ".//permissions")
    if perms is None or perms.find(".//license") is None:
        statement = _text(_first(meta, ".//copyright-statement"))
        if re.search(r"creative commons|public domain", statement, re.I):
            return statement
        return None
    for ref in perms.iter(ALI_LICENCE):
        if norm_space(ref.text):
            return norm_space(ref.text)
    lic = _first(perms, ".//license")
    if lic is None:
        return None
    if lic.get(XLINK):
        return lic.get(XLINK).strip()
    for link in lic.iter("ext-link", "uri"):
        href = link.get(XLINK) or link.text
        if href and "licen" in href.lower():
            return href.strip()
    if lic.get("license-type"):
        return lic.get("license-type").strip()
    text = _text(lic)
    return text or None


def _graphics(fig) -> list[str]:
    """Graphic hrefs, the main image first (thumbnails and web previews last)."""
    hrefs = []
    for g in fig.iter("graphic"):
        href = (g.get(XLINK) or "").strip()
        if not href:
            continue
        minor = bool(g.get("specific-use")) or "thumb" in href.lower()
        hrefs.append((minor, href))
    return [h for _, h in sorted(hrefs, key=lambda t: t[0])]


def _figure_number(label: str | None) -> str | None:
    """"Figure 2" -> "2", "Fig. S1" -> "S1", "Figure 1—figure supplement 2" -> "1-S2"."""
    return normalise_figure_id(label) if label and re.search(r"\d", label) else None


def parse_jats(path: str | Path) -> JatsArticle:
    """Parse one JATS file. Raises :class:`JatsError` for unreadable or non-article XML."""
    path = Path(path)
    try:
        tree = etree.parse(str(path), _parser())
    except etree.XMLSyntaxError as exc:
        raise JatsError("malformed-xml", f"{path.name}: {exc}") from None
    except OSError as exc:
        raise JatsError("malformed-xml", f"{path.name}: cannot read ({exc})") from None
    root = tree.getroot()
    if etree.QName(root).localname != "article":
        raise JatsError("not-jats", f"{path.name}: root element is <{etree.QName(root).localname}>, not <article>")
    # Namespaced JATS (rare) -> strip namespaces so one set of paths works.
    for el in root.iter():
        if isinstance(el.tag, str) and el.tag.startswith("{") and not el.tag.startswith("{http://www.w3.org/1998/Math"):
            if el.tag not in (ALI_LICENCE,):
                el.tag = etree.QName(el).localname

    meta = _first(root, "front/article-meta")
    ids: dict[str, str] = {}
    if meta is not None:
        for aid in meta.findall("article-id"):
            kind = (aid.get("pub-id-type") or "").lower()
            if aid.text and kind not in ids:
                ids[kind] = aid.text.strip()
    pmcid = ids.get("pmc") or ids.get("pmcid")
    if pmcid and not pmcid.upper().startswith("PMC"):
        pmcid = "PMC" + pmcid
    journal = _text(_first(root, "front/journal-meta/journal-title-group/journal-title")) or _text(
        _first(root, "front/journal-meta/journal-title")
    )
    figures = _figures(root)
    _attach_citations(root, figures)
    return JatsArticle(
        pmcid=pmcid,
        pmid=ids.get("pmid"),
        doi=ids.get("doi"),
        publisher_id=ids.get("publisher-id"),
        title=_text(_first(meta, "title-group/article-title")) or None,
        journal=journal or None,
        licence=_licence(meta),
        figures=figures,
    )


def _figures(root) -> list[JatsFigure]:
    out, seen = [], set()
    for i, fig in enumerate(root.iter("fig"), start=1):
        key = (fig.get("id") or f"fig{i}").strip()
        if key in seen:
            key = f"{key}-{i}"
        seen.add(key)
        label = _text(fig.find("label")) or None
        caption_el = fig.find("caption")
        title = _text(caption_el.find("title")) if caption_el is not None else ""
        caption = _text(caption_el) if caption_el is not None else ""
        out.append(
            JatsFigure(
                key=key,
                label=label,
                caption_title=title or None,
                caption=caption,
                graphics=_graphics(fig),
                number=_figure_number(label),
            )
        )
    return out


# --- citing sentences -------------------------------------------------------------------------

# Abbreviations that end in a period but do not end a sentence.
_ABBREV = re.compile(
    r"(?:\b(?:Figs?|Eqs?|Refs?|Tabs?|Suppl|vs|al|e\.g|i\.e|cf|approx|ca|No|Nos|Dr|Mr|Ms|Prof|resp|viz|St|sp|spp|var|min|max|Inc|Ltd|Co)\.)$",
    re.I,
)
_SENT_END = re.compile(r"[.!?](?:[\"')\]]*)\s+(?=[A-Z0-9(\[])")


def split_sentences(text: str) -> list[tuple[int, int]]:
    """Sentence spans ``(start, end)`` of ``text``; abbreviations like "Fig." do not end one."""
    spans, start = [], 0
    for m in _SENT_END.finditer(text):
        candidate = text[start : m.start() + 1]
        if _ABBREV.search(candidate) or re.search(r"\b[A-Z]\.$", candidate):  # "Fig." / "J. Smith"
            continue
        spans.append((start, m.end()))
        start = m.end()
    if start < len(text):
        spans.append((start, len(text)))
    return spans


def _body_paragraphs(root):
    body = root.find("body")
    if body is None:
        return []
    skip = {"fig", "fig-group", "table-wrap", "caption", "supplementary-material", "ref-list"}
    paras = []
    for p in body.iter("p"):
        anc = p.getparent()
        inside = False
        while anc is not None:
            if anc.tag in skip:
                inside = True
                break
            anc = anc.getparent()
        if not inside:
            paras.append(p)
    return paras


def _paragraph_text_with_xrefs(p) -> tuple[str, list[tuple[int, int, str]]]:
    """Text of ``p`` and (start, end, rid) spans of its figure cross-references."""
    parts: list[str] = []
    xrefs: list[tuple[int, int, str]] = []
    pos = 0

    def add(s: str | None):
        nonlocal pos
        if s:
            parts.append(s)
            pos += len(s)

    def walk(el):
        if isinstance(el, etree._Entity) or not isinstance(el.tag, str):
            add(el.tail)
            return
        start = pos
        add(el.text)
        for child in el:
            walk(child)
        if el.tag == "xref" and (el.get("ref-type") or "") == "fig":
            for rid in (el.get("rid") or "").split():
                xrefs.append((start, pos, rid))
        if el is not p:
            add(el.tail)

    walk(p)
    text = "".join(parts)
    # normalise whitespace while keeping offsets: replace runs by single spaces of same length is
    # not possible, so map offsets through a compaction table.
    keep, mapping = [], []
    prev_space = True
    for i, ch in enumerate(text):
        mapping.append(len(keep))
        if ch.isspace():
            if not prev_space:
                keep.append(" ")
            prev_space = True
        else:
            keep.append(ch)
            prev_space = False
    mapping.append(len(keep))
    compact = "".join(keep)
    return compact, [(mapping[s], mapping[e], rid) for s, e, rid in xrefs]


def _attach_citations(root, figures: list[JatsFigure]) -> None:
    by_key = {f.key: f for f in figures}
    for p in _body_paragraphs(root):
        text, xrefs = _paragraph_text_with_xrefs(p)
        if not xrefs:
            continue
        spans = split_sentences(text)
        for start, end, rid in xrefs:
            fig = by_key.get(rid)
            if fig is None:
                continue
            s0, s1 = next(((a, b) for a, b in spans if a <= start < b), (0, len(text)))
            sentence = text[s0:s1].strip()
            # "Figure 2B-D", "<xref>Figure 2</xref>B", "Figures 1C and <xref>2A</xref>": read the
            # citation from the reference's number on; an icon reference ("Fig. 1 ▶") has no
            # number, so the sentence's own citation of this figure is read instead.
            xref_text = text[start:end]
            m = re.search(r"(?<![0-9])S?\d", xref_text)
            if m:
                panels = cited_panels("Figure " + xref_text[m.start():] + text[end : end + 24], fig.number)
            else:
                panels = cited_panels(sentence, fig.number) if fig.number else []
            entry = {"sentence": sentence, "panels": panels}
            if entry not in fig.inline_refs:
                fig.inline_refs.append(entry)
