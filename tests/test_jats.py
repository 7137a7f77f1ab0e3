"""JATS parsing on the real PMC/eLife articles in ../shared/data, and on hostile XML."""

from __future__ import annotations

from pathlib import Path

import pytest

from panel2patch.ingest.jats import JatsError, parse_jats, split_sentences
from panel2patch.text.refs import cited_panels
from panel2patch.ingest.licence import licence_code


def nxml(shared_data: Path, name: str) -> Path:
    found = list((shared_data / "jats").rglob(name))
    assert found, name
    return found[0]


def test_all_real_nxml_parse(shared_data):
    files = sorted((shared_data / "jats").rglob("*.nxml"))
    assert len(files) == 18
    for f in files:
        art = parse_jats(f)
        assert art.pmcid and art.pmcid.startswith("PMC"), f
        for fig in art.figures:
            assert fig.caption, (f, fig.key)
            assert fig.graphics, (f, fig.key)
            assert "  " not in fig.caption


def test_ids_licence_and_figures(shared_data):
    art = parse_jats(nxml(shared_data, "pone.0046493.nxml"))
    assert (art.pmcid, art.pmid, art.doi) == ("PMC3460867", "23029536", "10.1371/journal.pone.0046493")
    assert [f.label for f in art.figures] == ["Figure 1", "Figure 2", "Figure 3", "Figure 4"]
    assert licence_code(art.licence) == "cc-by"  # stated only in the licence paragraph text
    fig1 = art.figures[0]
    assert fig1.graphics == ["pone.0046493.g001"]
    assert fig1.caption.startswith(fig1.caption_title)


def test_licences_across_publishers(shared_data):
    codes = {f.name: licence_code(parse_jats(f).licence) for f in sorted((shared_data / "jats").rglob("*.nxml"))}
    assert codes["mds526.nxml"] == "cc-by-nc"
    assert codes["ehp-116-1694.nxml"] == "public-domain"
    assert codes["6605965a.nxml"] is None  # no licence stated anywhere: null, never guessed
    assert codes["pone.0000217.nxml"] == "cc-by"  # old PLOS: only in <copyright-statement>
    assert codes["d-67-00463.nxml"] == "cc-by"


def test_inline_references_with_panel_letters(shared_data):
    art = parse_jats(nxml(shared_data, "soto131-469.nxml"))
    fig1 = next(f for f in art.figures if f.number == "1")
    panels = [tuple(r["panels"]) for r in fig1.inline_refs]
    assert ("A", "B", "C", "D") in panels  # "Figure 1A-D"
    for r in fig1.inline_refs:
        assert "Fig" in r["sentence"] and r["sentence"].endswith((".", ")", ";", ":"))
    fig3 = next(f for f in art.figures if f.number == "3")
    assert ("B", "C") in [tuple(r["panels"]) for r in fig3.inline_refs]  # "Figure 3B and C"
    assert () in [tuple(r["panels"]) for r in fig3.inline_refs]  # "(Figures 3 and 4)": no letter


def test_icon_xrefs_take_letters_from_the_sentence(shared_data):
    # ehp articles cite "(Figure 1 ▶)": the xref text is an icon, the citation precedes it.
    art = parse_jats(nxml(shared_data, "ehp-116-1694.nxml"))
    refs = [r for f in art.figures for r in f.inline_refs]
    assert refs and all("▶" in r["sentence"] or "Fig" in r["sentence"] for r in refs)


def test_elife_figure_supplements_and_refs(shared_data):
    art = parse_jats(shared_data / "articles" / "elife-32671" / "manuscript.xml")
    assert [f.key for f in art.figures] == ["fig1", "fig2", "fig3", "fig4", "fig5"]
    assert art.licence is None and art.doi is None
    assert sum(len(f.inline_refs) for f in art.figures) > 10


@pytest.mark.parametrize(
    "text, letters",
    [("Figure 2B-D) show", ["B", "C", "D"]), ("Figure 2B and C", ["B", "C"]), ("Figure 2b, c", ["B", "C"]),
     ("Figure 2(b)", ["B"]), ("Figure 2 and Table 2", []), ("Figure 2 a total of", []), ("Figure 2). Each", []),
     ("Figure 2 for an example", []), ("Figure 2A–C", ["A", "B", "C"]), ("Figs. 2A and 3C", ["A"])],
)
def test_citation_letters(text, letters):
    assert cited_panels(text, "2") == letters


def test_elife_supplement_citations(shared_data):
    art = parse_jats(shared_data / "articles" / "elife-bot-packages" / "elife-05-19405" / "elife-19405.xml")
    assert art.figures[0].number == "1"
    assert all(r["panels"] == [] for r in art.figures[0].inline_refs)


def test_sentence_split_keeps_abbreviations():
    text = "As shown in Fig. 2, cells grow. Smith et al. found more (Fig. 3A). Next sentence."
    sentences = [text[a:b].strip() for a, b in split_sentences(text)]
    assert sentences == ["As shown in Fig. 2, cells grow.", "Smith et al. found more (Fig. 3A).", "Next sentence."]


def test_external_entities_are_never_resolved(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    xml = tmp_path / "xxe.nxml"
    xml.write_text(
        f"""<?xml version="1.0"?>
<!DOCTYPE article [<!ENTITY xxe SYSTEM "file://{secret}"><!ENTITY remote SYSTEM "http://127.0.0.1:9/x">]>
<article><front><article-meta><article-id pub-id-type="pmc">123</article-id></article-meta></front>
<body><fig id="f1"><label>Figure 1</label><caption><p>Caption &xxe; and &remote; end.</p></caption>
<graphic xmlns:xlink="http://www.w3.org/1999/xlink" xlink:href="f1.png"/></fig></body></article>"""
    )
    art = parse_jats(xml)
    assert art.pmcid == "PMC123"
    assert "TOP-SECRET" not in art.figures[0].caption
    assert art.figures[0].caption == "Caption and end."


def test_malformed_and_foreign_xml(tmp_path):
    bad = tmp_path / "bad.nxml"
    bad.write_text("<article><front><article-meta></front>")
    with pytest.raises(JatsError) as e:
        parse_jats(bad)
    assert e.value.reason == "malformed-xml"
    other = tmp_path / "other.xml"
    other.write_text("<dar><documents/></dar>")
    with pytest.raises(JatsError) as e:
        parse_jats(other)
    assert e.value.reason == "not-jats"
