"""Panel letters cited in running text: "Fig. 2B", "Figure 2B-D", "Figs. 2A and 3C", "Fig. S1b",
"Figure 1—figure supplement 2A".

* :func:`parse_citations` -> ``[{"figure": "2", "panels": ["B", "C"], "span": [s, e]}, ...]``
* :func:`panel_letters_from_citation` -> letters of every citation, or of one figure
* :func:`cited_panels` -> letters a sentence cites for one figure (what the ingest stage stores
  as ``{"sentence": ..., "panels": cited_panels(sentence, figure_number)}``)

Figure ids are normalised: "2", "S2" (supplementary figures: "Fig. S2", "Supplementary
Figure 2"), "1-S2" (eLife "Figure 1—figure supplement 2").  Panel letters come back upper case,
in citation order, without duplicates; ranges ("B-D") are expanded.  A figure cited without
letters ("Fig. 2") gives ``panels == []``.
"""

from __future__ import annotations

import re

__all__ = ["parse_citations", "panel_letters_from_citation", "cited_panels", "normalise_figure_id"]

_FIG_WORD = re.compile(
    r"(?P<supp>\b(?:Supplementary|Supplemental|Suppl\.?|Additional)\s+)?"
    r"\b(?:Figures?|FIGURES?|Figs?\.?|FIGS?\.?|figures?|figs?\.?)(?![A-Za-z])\s*"
)
_NUM = re.compile(
    r"\s*(?P<num>S?\d+)(?P<esupp>\s*[—–-]\s*(?:figure|Figure)\s+supplement\s+(?P<snum>\d+))?"
)
_DASH = r"(?:-|–|—|~|\bto\b)"
# one panel token right after a figure number or after a separator: 'B', '(B)', "B'", 'Bi'
_PANEL_TOKEN = re.compile(r"\(?(?P<l>[A-Za-z])(?:[ivx]{1,4}(?![A-Za-z]))?['′]?\)?")


def normalise_figure_id(value) -> str:
    """'Figure 2' / 'Fig. 2' / 2 -> '2'; 'Fig. S2' -> 'S2'; 'Figure 1—figure supplement 2' -> '1-S2'."""
    s = str(value).strip()
    m = re.search(r"(\d+)\s*[—–-]\s*figure\s+supplement\s+(\d+)", s, re.I)
    if m:
        return f"{m.group(1)}-S{m.group(2)}"
    supp = bool(re.match(r"\s*(?:Supplementary|Supplemental|Suppl\.?|Additional)\b", s, re.I))
    m = re.search(r"(S?)(\d+)", s)
    if not m:
        return s
    return ("S" if (m.group(1) or supp) else "") + m.group(2)


def _expand(a: str, b: str) -> list:
    if a.isupper() != b.isupper() or not 0 < ord(b) - ord(a) <= 25:
        return [b]
    return [chr(c) for c in range(ord(a) + 1, ord(b) + 1)]


def _letter_ok(text: str, m: re.Match, attached: bool) -> bool:
    """A standalone letter after a separator must not be a word ('and a significant ...')."""
    letter = m.group("l")
    nxt = text[m.end():m.end() + 2]
    if nxt[:1].isalpha():
        return False
    if attached or letter.isupper():
        return True
    return not nxt.strip() or nxt.strip()[0] in ",;).]–—-"


def parse_citations(text: str) -> list:
    """Every figure citation in ``text`` with the panel letters it names."""
    out: list = []
    if not text:
        return out
    for fm in _FIG_WORD.finditer(text):
        pos = fm.end()
        supp_word = bool(fm.group("supp"))
        while True:
            nm = _NUM.match(text, pos)
            if not nm:
                break
            num = nm.group("num")
            fig = f"{num}-S{nm.group('snum')}" if nm.group("esupp") else num
            if supp_word and not fig.startswith("S") and "-S" not in fig:
                fig = "S" + fig
            start, pos = nm.start("num"), nm.end()
            panels: list = []
            # panels attached to the number ('2B', '2(B)') or after one space ('2 B' upper case)
            pm = _PANEL_TOKEN.match(text, pos)
            if not pm and re.match(r" [A-Z](?![A-Za-z])", text[pos:pos + 3]):
                pm = _PANEL_TOKEN.match(text, pos + 1)
            if pm and _letter_ok(text, pm, attached=pm.start() == pos):
                panels.append(pm.group("l").upper())
                pos = pm.end()
                while True:
                    sm = re.match(rf"\s*(?P<sep>{_DASH}|,\s*and\b|,|&|\band\b|/)\s*", text[pos:])
                    if not sm:
                        break
                    after = pos + sm.end()
                    if re.match(r"\(?S?\d", text[after:]):
                        break  # 'Figs. 2A and 3C': a new figure number
                    lm = _PANEL_TOKEN.match(text, after)
                    if not lm or not _letter_ok(text, lm, attached=False):
                        break
                    letter = lm.group("l")
                    if re.fullmatch(_DASH, sm.group("sep").strip()) and panels:
                        prev = panels[-1]
                        panels.extend(_expand(prev, letter.upper()))
                    else:
                        panels.append(letter.upper())
                    pos = lm.end()
            out.append({"figure": fig, "panels": list(dict.fromkeys(panels)), "span": [start, pos]})
            # another figure in the same citation: 'Figs. 2A and 3C', 'Figures 2, 3B'
            cm = re.match(rf"\s*(?:,\s*and|,|and|&|;|{_DASH})\s*(?=\(?S?\d)", text[pos:])
            if not cm:
                break
            pos += cm.end()
            if text[pos:pos + 1] == "(":
                pos += 1
    return out


def panel_letters_from_citation(text: str, figure_number=None) -> list:
    """Panel letters cited in ``text``; only those of ``figure_number`` when it is given."""
    want = normalise_figure_id(figure_number) if figure_number is not None else None
    letters: list = []
    for c in parse_citations(text):
        if want is None or c["figure"] == want:
            letters.extend(c["panels"])
    return list(dict.fromkeys(letters))


def cited_panels(sentence: str, figure_number) -> list:
    """Letters of figure ``figure_number`` that ``sentence`` cites (``[]`` if none or only the figure)."""
    return panel_letters_from_citation(sentence, figure_number)
