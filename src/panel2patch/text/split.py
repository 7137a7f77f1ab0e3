"""Split a figure caption into per-panel subcaptions with deterministic rules (no ML).

``split_caption(caption)`` returns ``{"_shared": ..., "A": ..., "B": ...}``:

* ``_shared`` holds text that describes every panel (title sentence, lead-ins such as
  "... stained photomicrographs showing:", trailing notes such as "Scale bars, 50 µm.").
  A consumer wanting the full description of panel ``B`` uses ``_shared + " " + out["B"]``.
* Panel keys are upper-case Latin letters (``"(a)"`` -> ``"A"``), lower-case roman numerals
  (``"(ii)"`` -> ``"ii"``) when the caption is numbered that way, or positional words
  (``"left"``, ``"right"``, ``"top"``, ``"bottom"``, ``"middle"``, e.g. ``"top-left"``) when the
  caption has no panel letters at all but says "Left panel: ... Right panel: ...".
* A combined marker ("(A-C)", "(A and B)", "(a, b)", "C and D)") gives its text to every label.
* A letter written after its description ("... staining (A).", "positive (C), negative (D)")
  takes the clause before it; the text after the last such letter of a sentence goes to all
  letters of that sentence.
* Letters cited inside another panel's text ("as in (A)", "boxed area in (B)") do not split.
* A caption without panel letters gives only ``_shared``.
* A leading "Figure 3." / "Fig. 2" / "Figure 1—figure supplement 2." label is dropped.

The rules work on character offsets: every character of the caption is owned by the shared
text, by a set of labels, or by nobody (the markers themselves), see :func:`segment_caption`.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

__all__ = ["split_caption", "segment_caption", "Segmentation", "Marker", "label_sort_key"]

SHARED = "_shared"

# Caption work is linear in length, but a caption this long is no real caption (PMC's longest are
# ~10,000 characters): the text stage keeps it whole as the figure's text, unsplit
# (``captions_too_long``), and ``split-caption`` gives an error record for it.
MAX_CAPTION_CHARS = 100_000

ROMAN = {
    "i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6, "vii": 7, "viii": 8, "ix": 9, "x": 10,
    "xi": 11, "xii": 12, "xiii": 13, "xiv": 14, "xv": 15, "xvi": 16, "xvii": 17, "xviii": 18,
    "xix": 19, "xx": 20,
}
_ROMAN_BY_VALUE = {v: k for k, v in ROMAN.items()}

# one label token: a single letter, or a multi-letter roman numeral (ii, iv, XII)
_ITEM = r"(?:[ivx]{2,5}|[IVX]{2,5}|[A-Za-z])(?![A-Za-z0-9])"
_RANGE_SEP = r"(?:-|–|—|~|−|\bto\b|\bthrough\b)"
_LIST_SEP = r"(?:,\s*and\b|,\s*&|,|&|/|\band\b|\bor\b)"
_SEP = rf"\s*(?:{_RANGE_SEP}|{_LIST_SEP})\s*"
_EXPR = rf"{_ITEM}(?:{_SEP}{_ITEM}){{0,25}}"  # bounded: linear-time matching on any caption
_PANEL_WORD = r"(?:[Pp]anels?\s+|PANELS?\s+)?"

_RE_ITEM_SPLIT = re.compile(rf"({_ITEM})|({_RANGE_SEP})|({_LIST_SEP})")
_RE_EXPR_HEAD = re.compile(rf"\s*{_PANEL_WORD}(?P<expr>{_EXPR})")
_RE_CITE_PREFIX = re.compile(
    r"\s*(?:see|cf\.?|compare|as\s+in|as\s+shown\s+in|also|same\s+as|e\.g\.,?|i\.e\.,?)\s+", re.I
)
_RE_HE = re.compile(r"H\s*(?:&|and)\s*E", re.I)  # the stain, not panels H and E
# '(WT, A)', '(arrows, e)', '(arrows in A)': a description, then the panel letters
_RE_TAIL_LABEL = re.compile(
    rf"\s*(?P<desc>[A-Za-z][^()]*?)(?:\s*[,;]\s*|\s+(?:in|of|from|on)\s+){_PANEL_WORD}(?P<expr>{_EXPR})\s*$"
)
_RE_BRACKET = re.compile(r"[()\[\]]")
_RE_INNER_PAREN = re.compile(r"\(([^()]*)\)")
_RE_CLOSE = re.compile(rf"(?<![^\s.;:,])(?P<panel>{_PANEL_WORD})(?P<expr>{_EXPR})\)(?:\.(?=\s))?")
_RE_DOT = re.compile(rf"(?<![^\s.;:!?)])(?P<panel>{_PANEL_WORD})(?P<expr>{_EXPR})\.(?=\s*[A-Za-z0-9(\[\"'“])")
_RE_COLON = re.compile(rf"(?<![^\s.;:!?)(])(?P<panel>{_PANEL_WORD})(?P<expr>{_EXPR})\s*:(?!\d)")
_RE_COMMA = re.compile(rf"(?<![^\s.;:!?])(?P<panel>{_PANEL_WORD})(?P<expr>{_EXPR}),\s+(?=[A-Za-z0-9(*])")
_RE_PHEAD = re.compile(
    rf"(?<![^\s.;:!?(])(?:In\s+|in\s+)?(?:[Pp]anels?|PANELS?)\s+(?P<expr>{_EXPR})(?=\s+[A-Za-z(])"
)
_RE_PWORD = re.compile(rf"(?<![A-Za-z])(?:[Pp]anels?)\s+(?P<expr>{_EXPR})(?![:)])")
# 'b, c Optical images ...', 'd–f SEM images ...' (Nature style): a group of letters opening a sentence
_RE_LEAD = re.compile(rf"(?<![^\s.;:!?])(?P<expr>{_ITEM}(?:{_SEP}{_ITEM}){{1,25}})\s+(?=[A-Z0-9(])")
_RE_BARE = re.compile(r"(?<![^\s.;:!?,])(?P<expr>[A-Za-z])\s+(?=(?P<next>[A-Za-z0-9(]))")

_POS_WORD = r"(?:top|bottom|upper|lower|middle|centre|center|left|right)"
_POS = rf"(?P<pos>{_POS_WORD}(?:[\s-]+(?:left|right|middle|centre|center))?)"
_POS_NOUN = r"(?:\s+(?:panels?|images?|rows?|columns?|graphs?|photos?|photographs?|pictures?|micrographs?|sections?|side))?"
_RE_POS_HEAD = re.compile(rf"(?<![^\s.;:!?)(]){_POS}{_POS_NOUN}\s*[:,]\s+", re.I)
_RE_POS_PAREN = re.compile(rf"\(\s*{_POS}{_POS_NOUN}\s*(?:[,;]\s*(?P<desc>[^()]*))?\)", re.I)

_RE_PREFIX = re.compile(
    r"^\s*(?:(?:Supplementary|Suppl\.?|Supplemental)\s+)?(?:Figure|Fig\.?|FIGURE|FIG\.?)\s*S?\d+[A-Za-z]?"
    r"(?:\s*[—–-]\s*figure\s+supplement\s+\d+)?\s*[.:|]?\s+",
)

_ABBREV = {
    "fig", "figs", "e.g", "i.e", "eg", "ie", "vs", "al", "approx", "ca", "no", "nos", "dr", "eq",
    "cf", "resp", "ref", "refs", "st", "sp", "spp", "var", "inc", "ltd", "co", "mr", "ms", "prof",
    "ver", "vol", "min", "max", "mag", "orig",
}
_RE_SENT_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+(?=[\"'“(\[]?[A-Z0-9(\[*#])|(?<=[a-z]{2}[.!?])(?=[A-Z(])")

_CONJ = {"and", "or", "while", "whereas", "but", "versus", "vs", "vs.", "then", "and/or", ",", ";", "with"}

_PREP_CITE = {"in", "of", "from", "between", "see", "as", "than", "like", "cf.", "cf", "to"}

# trailing sentences of the last panel that describe every panel
_RE_NOTE_START = re.compile(
    r"^\W*(?:the\s+|all\s+|both\s+)?(?:data|results?|values?|error\s+bars?|scale(?:\s+bars?)?|bars?\b|"
    r"magnifications?|original\s+magnifications?|arrows?|arrowheads?|asterisks?|stars?|"
    r"abbreviations?|statistic|p[- ]?values?|\*|#|†|n\s*=|means?\b|photographs|images\s+were|"
    r"all\b|both\b|details|representative\s+of|dashed|dotted|solid\s+lines?|boxes|boxed|circles|"
    r"(?:hematoxylin|haematoxylin|h\s*&\s*e)\b)",
    re.I,
)
_RE_NOTE_ANY = re.compile(
    r"scale\s+bars?|magnifi(?:cation|ed)|independent\s+experiments|representative\s+of|error\s+bars|"
    r"counterstain|\barrows?\b|\barrowheads?\b|\basterisks?\b",
    re.I,
)


@dataclass
class Marker:
    start: int
    end: int
    tokens: list  # raw label tokens after range expansion, as (token, is_roman_multi)
    style: str  # paren | close | dot | colon | comma | bare | pos
    descriptor: dict = field(default_factory=dict)  # label key -> descriptor text
    colon_pre: bool = False
    cite: bool = False
    labels: tuple = ()
    role: str = ""  # pre | post | post_word | cite | enum | orphan
    squashed: bool = False  # glued to the previous word: 'tumorigenesis(a) H&E'
    tail: bool = False  # letters after a description: '(white arrow, b)'


@dataclass
class Segmentation:
    """Result of :func:`segment_caption`: who owns each character of the caption."""

    text: str
    labels: list  # panel keys in order
    owner: list  # per character: None (shared), frozenset of keys, or False (marker / prefix)
    extras: list  # (position, frozenset(keys), text) descriptor snippets
    markers: list  # Marker objects kept
    trailing: tuple | None = None  # (start, end, keys): last panel's notes moved to the shared text

    def labels_at(self, pos: int) -> list:
        """Panel keys owning the character at ``pos`` ([] for shared text)."""
        if not 0 <= pos < len(self.owner):
            return []
        o = self.owner[pos]
        if not o:
            return []
        if len(o) == len(self.labels):
            return []
        return sorted(o, key=label_sort_key)

    def labels_for_span(self, start: int, end: int) -> list:
        """Union of panel keys owning any character of ``[start, end)`` ([] if only shared)."""
        keys: set = set()
        shared_only = True
        for o in self.owner[max(0, start):max(start, end)]:
            if o:
                keys |= o
                shared_only = False
        if shared_only or len(keys) == len(self.labels):
            return []
        return sorted(keys, key=label_sort_key)


def label_sort_key(key: str):
    if key in ROMAN:
        return (1, ROMAN[key], key)
    if len(key) == 1:
        return (0, ord(key), key)
    order = ["top", "top-left", "top-middle", "top-right", "middle", "left", "middle-left", "middle-right",
             "right", "bottom", "bottom-left", "bottom-middle", "bottom-right"]
    return (2, order.index(key) if key in order else 99, key)


# ----------------------------------------------------------------------------------------------
# marker candidates


def _parse_expr(expr: str) -> list | None:
    """'A-C, E' -> [('A',False),('B',False),('C',False),('E',False)]; None if not a label list."""
    out: list = []
    pending_range = False
    for m in _RE_ITEM_SPLIT.finditer(expr):
        item, rng, _lst = m.groups()
        if item:
            multi = len(item) > 1
            if multi and item.lower() not in ROMAN:
                return None
            if pending_range and out:
                prev, prev_multi = out[-1]
                expanded = _expand_range(prev, prev_multi, item, multi)
                if expanded is None:
                    return None
                out.extend(expanded)
            else:
                out.append((item, multi))
            pending_range = False
        elif rng:
            pending_range = True
    return out or None


def _expand_range(a: str, a_multi: bool, b: str, b_multi: bool):
    # roman range (i-iii)
    if (a_multi or b_multi) or (a.lower() in ROMAN and b.lower() in ROMAN and (a.islower() == b.islower())
                                and ROMAN[b.lower()] - ROMAN[a.lower()] in range(1, 12)
                                and not (len(a) == 1 and len(b) == 1 and ord(b.lower()) - ord(a.lower()) in range(1, 26))):
        if a.lower() in ROMAN and b.lower() in ROMAN:
            lo, hi = ROMAN[a.lower()], ROMAN[b.lower()]
            if 0 < hi - lo <= 20:
                toks = []
                for v in range(lo + 1, hi + 1):
                    r = _ROMAN_BY_VALUE[v]
                    r = r if a.islower() else r.upper()
                    toks.append((r, len(r) > 1))
                return toks
        return None
    if a.isupper() != b.isupper():
        return None
    lo, hi = ord(a), ord(b)
    if not 0 < hi - lo <= 25:
        return None
    return [(chr(c), False) for c in range(lo + 1, hi + 1)]


def _paren_depths(text: str) -> list:
    """Bracket depth before each character (a stray closing bracket at depth 0 is ignored)."""
    n = len(text)
    out = [0] * (n + 1)
    depth, last = 0, 0
    for m in _RE_BRACKET.finditer(text):
        i = m.start()
        if depth:
            out[last:i + 1] = [depth] * (i + 1 - last)
        ch = text[i]
        if ch in "([":
            depth += 1
        elif depth > 0:
            depth -= 1
        last = i + 1
    if depth:
        out[last:n + 1] = [depth] * (n + 1 - last)
    return out


def _split_descriptor(rest: str, tokens: list) -> tuple:
    """Descriptor text after the labels; '*100; B, *200' style adds more labels."""
    desc: dict = {}
    extra_tokens: list = []
    parts = [p.strip() for p in re.split(r";", rest)]
    first = parts[0]
    keys_here = [t for t, _ in tokens]
    if first:
        for k in keys_here:
            desc[k] = first
    for p in parts[1:]:
        m = re.match(rf"{_PANEL_WORD}(?P<expr>{_EXPR})\s*[,:]\s*(?P<d>.*)$", p)
        toks = _parse_expr(m.group("expr")) if m else None
        if toks:
            extra_tokens.extend(toks)
            for t, _ in toks:
                if m.group("d").strip():
                    desc[t] = m.group("d").strip()
        elif p:
            for k in keys_here:
                desc[k] = (desc.get(k, "") + "; " + p).strip("; ")
    return desc, extra_tokens


def _paren_candidates(text: str) -> list:
    out = []
    for m in _RE_INNER_PAREN.finditer(text):
        content = m.group(1)
        s, e = m.start(), m.end()
        cite = False
        body = content
        cm = _RE_CITE_PREFIX.match(body)
        if cm:
            cite = True
            body = body[cm.end():]
        hm = _RE_EXPR_HEAD.match(body)
        if not hm:
            tm = _RE_TAIL_LABEL.match(body)
            if tm and not cite and not re.search(r"[=<>±]|\d\s*$", tm.group("desc")):
                toks = _parse_expr(tm.group("expr"))
                if toks and not _RE_HE.fullmatch(tm.group("expr")):
                    out.append(Marker(s, e, toks, "paren", tail=True,
                                      descriptor={t: tm.group("desc").strip() for t, _ in toks}))
            continue
        if _RE_HE.fullmatch(hm.group("expr")):
            continue
        tokens = _parse_expr(hm.group("expr"))
        if not tokens:
            continue
        rest = body[hm.end():]
        colon_pre = False
        desc: dict = {}
        if not rest.strip():
            pass
        elif rest.lstrip()[0] in ",;":
            d, extra = _split_descriptor(rest.lstrip()[1:], tokens)
            desc = d
            tokens = tokens + extra
        elif rest.lstrip()[0] == ":" and not cite:
            colon_pre = True
        elif rest[:1].isspace() and re.match(r"\s+[A-Za-z]", rest) and (
            len(tokens) > 1 or re.match(r"\s+[A-Z]", rest)
        ):
            # '(A, B Hematoxylin counterstain)' / '(A Tumour)': labels then a description
            if len(tokens) == 1 and re.match(r"\s+[A-Z][a-z]*\b", rest) and not re.match(r"\s+[A-Z][a-z]{2,}", rest):
                continue
            desc = {t: rest.strip() for t, _ in tokens}
        else:
            continue
        if s > 0 and (text[s - 1].isalnum()):
            # 'cell(s)' is not a marker; a squashed title 'tumorigenesis(a) H&E' is
            if not (tokens[0][0] in "aA" and re.match(r"\s+\S", text[e:])):
                continue
        if colon_pre:
            colon_at = s + 1 + (len(content) - len(body)) + hm.end() + rest.index(":")
            out.append(Marker(s, colon_at + 1, tokens, "paren", colon_pre=True))
        else:
            out.append(Marker(s, e, tokens, "paren", descriptor=desc, cite=cite))
    return out


def _boundary_ok(text: str, start: int, chars: str) -> bool:
    i = start - 1
    while i >= 0 and text[i].isspace():
        i -= 1
    return i < 0 or text[i] in chars


def _expr_tokens(m: re.Match) -> tuple:
    """Tokens of a matched expression and its start; 'grade II, H)' keeps only 'H'."""
    expr = m.group("expr")
    toks = _parse_expr(expr)
    if toks and not (any(mu for _, mu in toks) and any(not mu and t.lower() not in "ivx" for t, mu in toks)):
        return toks, m.start()
    last = list(re.finditer(_ITEM, expr))
    if not last:
        return None, m.start()
    it = last[-1]
    toks = _parse_expr(it.group(0))
    return toks, m.start("expr") + it.start()


def _regex_candidates(text: str, depth: list) -> list:
    out = []
    for m in _RE_CLOSE.finditer(text):
        toks, s = _expr_tokens(m)
        if depth[s] > 0 or not toks:
            continue
        out.append(Marker(s, m.end(), toks, "close"))
    for m in _RE_DOT.finditer(text):
        s = m.start()
        if not _boundary_ok(text, s, ".;:!?)") or depth[s] > 0:
            continue
        if s > 0 and not text[s - 1].isspace() and not re.search(r"(?:[A-Za-z]{3,}|\d|\))[.!?)]$", text[max(0, s - 8):s]):
            continue  # 'S.E.M.' is no panel E
        toks = _parse_expr(m.group("expr"))
        nxt = re.match(r"\s*(\S+)", text[m.end():])
        if toks and nxt and re.fullmatch(r"[a-z]+[.,;:]?", nxt.group(1)):
            continue  # 'E. coli'
        if toks:
            out.append(Marker(s, m.end(), toks, "dot"))
    # (pattern, boundary characters, only outside brackets, zero width, kind)
    for regex, chars, top_level, zero_width, kind in (
        (_RE_COLON, ".;:!?)(", False, False, "colon"),
        (_RE_COMMA, ".;:!?", True, False, "comma"),
        (_RE_LEAD, ".!?", True, False, "lead"),
        (_RE_PHEAD, ".;:!?", True, True, "phead"),  # zero width: 'Panel A shows ...' stays A's text
    ):
        for m in regex.finditer(text):
            s = m.start()
            if not _boundary_ok(text, s, chars) or (top_level and depth[s] > 0):
                continue
            toks = _parse_expr(m.group("expr"))
            if toks:
                out.append(Marker(s, s if zero_width else m.end(), toks, kind))
    for m in _RE_PWORD.finditer(text):
        s = m.start()
        if _boundary_ok(text, s, ".;:!?(") or depth[s] > 0:
            continue
        toks = _parse_expr(m.group("expr"))
        if toks and not _RE_HE.fullmatch(m.group("expr")):
            out.append(Marker(s, m.end(), toks, "pword", cite=True))
    for m in _RE_BARE.finditer(text):
        s = m.start()
        if depth[s] > 0:
            continue
        ch = m.group("expr")
        before = text[max(0, s - 8):s].rstrip()
        if before and before[-1] == "," and not ch.islower():
            continue
        if before and before[-1] not in ".;:!?,":
            continue
        if ch.isupper() and not (m.group("next").isupper() or m.group("next").isdigit()):
            continue
        out.append(Marker(s, m.end(), [(ch, False)], "bare"))
    return out


def _pos_key(raw: str) -> str:
    w = re.split(r"[\s-]+", raw.lower().strip())
    norm = {"upper": "top", "lower": "bottom", "centre": "middle", "center": "middle"}
    w = [norm.get(x, x) for x in w]
    return "-".join(w)


def _pos_candidates(text: str) -> list:
    out = []
    for m in _RE_POS_PAREN.finditer(text):
        d = (m.group("desc") or "").strip()
        key = _pos_key(m.group("pos"))
        out.append(Marker(m.start(), m.end(), [(key, False)], "pos", descriptor={key: d} if d else {}))
    for m in _RE_POS_HEAD.finditer(text):
        if not _boundary_ok(text, m.start(), ".;:!?)("):
            continue
        key = _pos_key(m.group("pos"))
        out.append(Marker(m.start(), m.end(), [(key, False)], "pos"))
    return out


# ----------------------------------------------------------------------------------------------
# choosing the label system


def _resolve_labels(cands: list) -> tuple:
    """Decide letters vs roman numerals, case, and the valid label run; set ``labels`` on markers."""
    strong = [c for c in cands if c.style != "bare"]
    roman_multi = [t for c in strong for t, multi in c.tokens if multi]
    letters = {t for c in strong for t, multi in c.tokens if not multi and t.lower() not in "ivx"}

    def letter_run(pool_letters: set) -> list:
        if not pool_letters:
            return []
        ords = sorted({ord(ch.upper()) for ch in pool_letters})
        if ords[0] > ord("B"):
            return []
        run = [ords[0]]
        for o in ords[1:]:
            if o - run[-1] <= 2:
                run.append(o)
            else:
                break
        return [chr(o) for o in run]

    # case: the one whose letters form the longer run from A (ties: more markers)
    upper = sum(1 for c in strong for t, multi in c.tokens if not multi and t.isupper())
    lower = sum(1 for c in strong for t, multi in c.tokens if not multi and t.islower())
    run_u = letter_run({t for t in letters if t.isupper()})
    run_l = letter_run({t for t in letters if t.islower()})
    use_lower = (len(run_l), lower) > (len(run_u), upper)
    if not strong:
        bare_letters = [t for c in cands for t, _ in c.tokens]
        use_lower = sum(ch.islower() for ch in bare_letters) > sum(ch.isupper() for ch in bare_letters)

    def case_ok(t: str) -> bool:
        return t.islower() if use_lower else t.isupper()

    cased_letters = {t for t in letters if case_ok(t)}
    # ambiguous single i / v / x count as letters when their predecessor letter is present
    for c in strong:
        for t, multi in c.tokens:
            if not multi and t.lower() in "ivx" and case_ok(t):
                pred = chr(ord(t) - 1)
                if pred in cased_letters or (t.lower() == "i" and chr(ord(t) - 2) in cased_letters):
                    cased_letters.add(t)
    run = letter_run(cased_letters)
    if cased_letters and (not run or run[0] != "A") and any(c.style == "lead" for c in strong):
        # 'a Polarization ... b Power ... c, d Discharge ...': the strong letters start at 'c'; the
        # single letters opening the sentences before them start the run
        bare_cased = {c.tokens[0][0] for c in cands if c.style == "bare" and case_ok(c.tokens[0][0])}
        run2 = letter_run(cased_letters | bare_cased)
        if len(run2) > len(run) and set(run2) & {t.upper() for t in cased_letters}:
            run = run2

    mode = "letter"
    if roman_multi and len(run) < 2:
        mode = "roman"
    if mode == "roman":
        rcase_lower = sum(t.islower() for t in roman_multi) >= sum(t.isupper() for t in roman_multi)
        vals = set()
        for c in strong:
            for t, multi in c.tokens:
                if t.lower() in ROMAN and (t.islower() == rcase_lower) and (multi or t.lower() in "ivx"):
                    vals.add(ROMAN[t.lower()])
        vals = sorted(vals)
        if not vals or vals[0] > 2:
            return [], "none"
        keep = [vals[0]]
        for v in vals[1:]:
            if v - keep[-1] <= 2:
                keep.append(v)
            else:
                break
        valid = {_ROMAN_BY_VALUE[v] for v in keep}
        for c in cands:
            if c.style == "bare":
                c.labels = ()
                continue
            c.labels = tuple(dict.fromkeys(
                t.lower() for t, multi in c.tokens
                if t.lower() in valid and (t.islower() == rcase_lower) and (multi or t.lower() in "ivx")
            ))
        keys = [_ROMAN_BY_VALUE[v] for v in keep]
        return (keys if len(keys) >= 2 else []), "roman"

    valid = set(run)

    def keep_tokens(c: Marker) -> tuple:
        ks = []
        for t, multi in c.tokens:
            if multi or not case_ok(t):
                continue
            if t.lower() in "ivx" and t not in cased_letters:
                continue
            if t.upper() in valid:
                ks.append(t.upper())
        return tuple(dict.fromkeys(ks))

    for c in cands:
        if c.style != "bare":
            c.labels = keep_tokens(c)
    # bare letters ('a Gleason grade 2, b Gleason grade 3'): only as a continuing sequence
    covered = {}
    for c in cands:
        if c.style != "bare" and not c.tail:
            for k in c.labels:
                covered.setdefault(k, c.start)
    bare = sorted((c for c in cands if c.style == "bare"), key=lambda c: c.start)
    has_lead = any(c.style == "lead" and c.labels for c in cands)
    accepted: dict = {}
    for c in bare:
        c.labels = ()
    for c in bare:
        t = c.tokens[0][0]
        if not case_ok(t):
            continue
        k = t.upper()
        if k in accepted or (k in covered and (covered[k] < c.start or not has_lead)):
            continue  # (with sentence-opening groups, a later '(f)' is a citation, not f's marker)
        if k == "A":
            # must be followed by a bare 'b' (or a leading group 'b, c'); keep the last 'a' before it
            nxt = [b for b in bare if b.start > c.start and b.tokens[0][0] == chr(ord(t) + 1)]
            nxt += [x for x in cands if x.style == "lead" and x.start > c.start and "B" in x.labels]
            nxt.sort(key=lambda b: b.start)
            if not nxt:
                continue
            later_a = [b for b in bare if c.start < b.start < nxt[0].start and b.tokens[0][0] == t]
            if later_a:
                continue
            accepted[k] = c
            c.labels = (k,)
            continue
        prev = chr(ord(k) - 1)
        prev_pos = accepted[prev].start if prev in accepted else covered.get(prev)
        if prev_pos is None or prev_pos >= c.start:
            continue
        accepted[k] = c
        c.labels = (k,)
    all_keys = set(valid) | set(accepted)
    if len(all_keys) < 2:
        return [], "none"
    return sorted(all_keys), "letter"


# ----------------------------------------------------------------------------------------------
# sentences and roles


def _sentence_starts(text: str, start0: int = 0) -> list:
    starts = [start0]
    for m in _RE_SENT_END.finditer(text, start0):
        pos = m.end()
        if pos >= len(text):
            continue
        # abbreviation before the full stop?
        head = text[max(0, m.start() - 24):m.start()]
        wm = re.search(r"([A-Za-z.]+)\.$", head) or re.search(r"([A-Za-z.]+)$", head)
        word = (wm.group(1) if wm else "").lower().rstrip(".")
        if word in _ABBREV:
            continue
        starts.append(pos)
    return sorted(set(starts))


def _sent_index(starts: list, pos: int) -> int:
    lo, hi = 0, len(starts) - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if starts[mid] <= pos:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _succ(key: str) -> str:
    if key in ROMAN:
        return _ROMAN_BY_VALUE.get(ROMAN[key] + 1, "")
    return chr(ord(key) + 1) if len(key) == 1 else ""


def _prev_token(text: str, pos: int) -> str:
    before = text[max(0, pos - 40):pos].rstrip()
    if not before:
        return ""
    if not (before[-1].isalnum() or before[-1] == "."):
        return before[-1]
    m = re.search(r"([A-Za-z/]+\.?)$", before)
    return m.group(1).lower() if m else before[-1]


def _assign_roles(text: str, markers: list, sent_starts: list, start0: int) -> None:
    for m in markers:
        if m.style == "pword":
            m.role = "cite"
            continue
        if m.style not in ("paren", "pos") or (m.style == "pos" and not text.startswith("(", m.start)):
            m.role = "pre"
            continue
        if m.colon_pre:
            m.role = "pre"
            continue
        after = text[m.end:]
        nxt = after.lstrip()[:1]
        before = text[start0:m.start].rstrip()
        at_boundary = (not before) or before[-1] in ".;:!?(["
        if not at_boundary and before and before[-1] == ")":
            # directly after another marker: '(A) (B) text' or '((a), (b))'
            prev_m = [p for p in markers if p.end <= m.start and not text[p.end:m.start].strip()]
            at_boundary = bool(prev_m) and prev_m[-1].role == "pre"
        if m.start > 0 and text[m.start - 1].isalnum():
            at_boundary = True  # squashed title 'tumorigenesis(a) H&E'
            m.squashed = True
        if m.cite:
            m.role = "cite"
        elif not nxt or nxt in ".,;:)]":
            if at_boundary and nxt in ".,:" and re.match(r"\s*[.,:]\s+\S", after):
                m.role = "pre"
            else:
                m.role = "post"
        elif at_boundary:
            m.role = "pre"
        else:
            m.role = "post_word"
    # '(A) ... tissue (B) Schematic of ...': a full stop missing before the next letter in sequence
    # '(A) control (B) treated (C) merged.': no punctuation at all, the next letter in sequence
    # between plain words (not 'in (B)', 'and (B)', '(B) and') opens that letter's text too
    pres = [m for m in markers if m.role == "pre"]
    no_post = not any(m.role == "post" for m in markers)
    for m in markers:
        if m.role != "post_word" or not pres:
            continue
        if not (re.match(r"\s*[A-Z]", text[m.end:]) or (
                no_post and m.style == "paren" and _prev_token(text, m.start) not in _CONJ | _PREP_CITE
                and (re.findall(r"[\w/]+|[,;]", text[m.end:m.end + 20]) or [""])[0].lower() not in _CONJ)):
            continue
        before = [p for p in pres if p.end <= m.start]
        after = [p for p in pres if p.start >= m.end]
        if before and _succ(before[-1].labels[-1]) == m.labels[0] and (
            not after or _succ(m.labels[-1]) == after[0].labels[0]
        ):
            m.role = "pre"
            pres = sorted(pres + [m], key=lambda p: p.start)
    # inline enumerations: 'Location of (A) the tumour; and (B) the adenocarcinoma', or
    # '(a) an unstained image ... while (b) the stained one' -- but not '(C)-(E) ... a total of
    # (C) 3, (D) 9 and (E) 27 cells', where the letters belong to the current block already
    cur = None
    for i, m in enumerate(markers):
        if m.role == "pre":
            cur = set(m.labels)
            continue
        if m.role != "post_word" or m.style != "paren":
            continue
        if _prev_token(text, m.start) not in _CONJ or (cur is not None and set(m.labels) <= cur):
            continue
        si = _sent_index(sent_starts, m.start)
        earlier = [p for p in markers[:i] if _sent_index(sent_starts, p.start) == si
                   and p.role in ("pre", "post_word", "enum")]
        if not earlier:
            continue
        p = earlier[-1]  # only the letter right before joins the enumeration
        if p.role == "post_word" and (cur is None or not set(p.labels) <= cur):
            p.role = "enum"
        m.role = "enum"
        cur = set(m.labels)


# ----------------------------------------------------------------------------------------------
# segmentation


def _merge_groups(text: str, markers: list) -> list:
    """'(a), (b)' -> one marker; '(C)-(E)' -> range; '((a), (b))' swallows the outer parens."""
    markers = sorted(markers, key=lambda c: c.start)
    out: list = []
    for m in markers:
        if out and out[-1].style == "paren" and m.style == "paren" and not out[-1].colon_pre:
            gap = text[out[-1].end:m.start]
            g = gap.strip()
            if re.fullmatch(r",?\s*(?:and|&|or)?", g) or g == ",":
                prev = out[-1]
                prev.end = m.end
                prev.tokens = prev.tokens + m.tokens
                prev.descriptor = {**prev.descriptor, **m.descriptor}
                continue
            if re.fullmatch(r"-|–|—|~|to|through", g):
                prev = out[-1]
                rng = _expand_range(prev.tokens[-1][0], prev.tokens[-1][1], m.tokens[0][0], m.tokens[0][1])
                if rng is not None:
                    prev.end = m.end
                    prev.tokens = prev.tokens + rng + m.tokens[1:]
                    continue
        out.append(m)
    for m in out:
        if m.style == "paren" and m.start > 0 and text[m.start - 1] == "(" and text[m.end:m.end + 1] == ")":
            m.start -= 1
            m.end += 1
    return out


def _dedupe(cands: list) -> list:
    prio = {"paren": 0, "pos": 0, "close": 1, "colon": 2, "dot": 3, "lead": 4, "comma": 5, "phead": 6,
            "pword": 7, "bare": 8}
    kept: list = []
    n = max((c.end for c in cands), default=0) + 13
    owner = [0] * n  # per character: 1 + index of the kept marker covering it, 0 if none
    point = bytearray(n)  # zero-width kept markers
    near = bytearray(n)  # up to 12 characters after a kept marker that is not a 'phead'
    for c in sorted(cands, key=lambda c: (prio[c.style], c.start)):
        if c.start == c.end:
            if 0 < c.start and owner[c.start] and owner[c.start - 1] == owner[c.start]:
                continue  # strictly inside a kept marker
        elif any(owner[c.start:c.end]) or any(point[c.start + 1:c.end]):
            continue
        if c.style == "phead" and near[c.start]:
            continue
        kept.append(c)
        owner[c.start:c.end] = [len(kept)] * (c.end - c.start)
        if c.start == c.end:
            point[c.start] = 1
        if c.style != "phead":
            near[c.start:c.end + 12] = b"\x01" * (c.end + 12 - c.start)
    return sorted(kept, key=lambda c: c.start)


def _is_note(sentence: str) -> bool:
    return bool(_RE_NOTE_START.match(sentence) or _RE_NOTE_ANY.search(sentence))


def _first_words(s: str, n: int = 2, start: int = 0, end: int | None = None) -> str:
    """The first ``n`` words of ``s[start:end]``, lower-cased (only its head is read)."""
    end = len(s) if end is None else end
    return " ".join(re.findall(r"[a-z0-9]+", s[start:min(end, start + 400)].lower())[:n])


def segment_caption(caption: str) -> Segmentation:
    """Assign every character of ``caption`` to the shared text, a label set, or nothing."""
    text = caption or ""
    n = len(text)
    owner: list = [None] * n
    pm = _RE_PREFIX.match(text)
    start0 = pm.end() if pm else 0
    owner[:start0] = [False] * start0
    depth = _paren_depths(text)

    cands = _paren_candidates(text) + _regex_candidates(text, depth)
    cands = [c for c in cands if c.start >= start0]
    cands = _dedupe(cands)
    keys, mode = _resolve_labels(cands)
    markers = [c for c in cands if c.labels] if keys else []
    if not keys:
        pos = [c for c in _pos_candidates(text) if c.start >= start0]
        for c in pos:
            c.labels = (c.tokens[0][0],)
        distinct = {c.labels[0] for c in pos}
        if len(distinct) >= 2:
            markers = _dedupe(pos)
            keys = sorted(distinct, key=label_sort_key)
        else:
            return Segmentation(text, [], owner, [], [])
    if mode == "letter" and keys and keys[0] == "B":
        sq = _squashed_first(text, start0, markers)
        if sq is not None:
            markers.append(sq)
            keys = ["A"] + list(keys)
    markers = _merge_groups(text, markers)
    for m in markers:
        if m.style in ("paren",) and len(m.tokens) != len(m.labels):
            m.labels = _resolve_merged(m, keys, mode)
    markers = [m for m in markers if m.labels]
    sent_starts = _sentence_starts(text, start0)
    # 'A. H&E staining; B. p63 IHC': the full stop of a dot marker ends no sentence
    dot_ends = {m.end for m in markers if m.style == "dot"}
    if dot_ends:
        sent_starts = [s for s in sent_starts if len(text[:s].rstrip()) not in dot_ends]
        sent_starts = sorted(set([start0] + sent_starts))
    _assign_roles(text, markers, sent_starts, start0)
    all_keys = frozenset(keys)

    pre = [m for m in markers if m.role in ("pre", "enum")]
    extras: list = []
    # blocks between pre markers
    blocks = []  # (start, end, labels or None, marker)
    cur, cur_labels = start0, None
    for m in pre:
        blocks.append((cur, m.start, cur_labels))
        owner[m.start:m.end] = [False] * (m.end - m.start)
        cur, cur_labels = m.end, frozenset(m.labels)
        for k, d in m.descriptor.items():
            if k in m.labels or k.upper() in m.labels:
                extras.append((m.end - 0.5, frozenset([k.upper() if k.upper() in m.labels else k]), f"({d})"))
    blocks.append((cur, n, cur_labels))
    for bs, be, lab in blocks:
        if be > bs:
            owner[bs:be] = [lab] * (be - bs)

    # lead-ins: 'Bladder sections are derived from F) normal, G) grade II' -> F, G share the lead-in
    pre_starts = [m.start for m in pre]  # sorted
    seen_sent: set = set()
    for m in pre:
        si = _sent_index(sent_starts, m.start)
        if si in seen_sent:
            continue
        seen_sent.add(si)
        s0 = max(sent_starts[si], start0)
        s1 = sent_starts[si + 1] if si + 1 < len(sent_starts) else n
        lead = text[s0:m.start].rstrip()
        if not lead or not (lead[-1] == ":" or lead[-1].isalnum()) or m.squashed:
            continue
        union = frozenset(k for p in pre[bisect.bisect_left(pre_starts, s0):bisect.bisect_left(pre_starts, s1)]
                          for k in p.labels)
        for i in range(s0, m.start):
            if owner[i] is not False:
                owner[i] = union

    pre_labels = {k for m in pre for k in m.labels}
    # a Nature-style group ('c–e SEM images of BM (c), PM (d) and SMNp (e)') keeps its whole text
    # for every letter it names when the letters inside name one panel each: they only qualify it
    lead_blocks = {m.end for m in pre if m.style == "lead" and frozenset(m.labels) != frozenset(keys)}
    # post-positioned letters inside each block
    m_starts = [m.start for m in markers]  # sorted
    for bi, (bs, be, lab) in enumerate(blocks):
        if be <= bs:
            continue
        in_block = [m for m in markers[bisect.bisect_left(m_starts, bs):bisect.bisect_left(m_starts, be)]
                    if m.role in ("post", "post_word", "cite")]
        by_sent: dict = {}
        for m in in_block:
            by_sent.setdefault(_sent_index(sent_starts, m.start), []).append(m)
        for si, ms in by_sent.items():
            s0 = max(sent_starts[si], bs)
            s1 = min(sent_starts[si + 1] if si + 1 < len(sent_starts) else n, be)
            first_sentence = sent_starts[si] <= bs
            if lab is None:
                applied = [m for m in ms if m.role in ("post", "post_word", "cite")]
                kind = "shared"
            else:
                inside = [m for m in ms if frozenset(m.labels) < lab and m.role in ("post", "post_word")]
                orphans = [m for m in ms if not set(m.labels) & pre_labels and m.role in ("post", "post_word")]
                if inside and any(m.role == "post" for m in inside) and not (
                        bs in lead_blocks and all(len(m.labels) == 1 for m in inside)):
                    applied, kind = inside, "inside"
                elif orphans and not inside:
                    applied, kind = orphans, "orphan"
                    for m in orphans:
                        m.role = "orphan"
                else:
                    continue
            if not applied:
                continue
            union = frozenset(k for m in applied for k in m.labels)
            seg = text[s0:applied[0].start]
            if kind == "orphan":
                # a letter cited only after its clause: '(A) A scratch ..., and quantification ... (B).'
                cuts = re.finditer(r":|;\s+(?=[a-z(])|,\s+(?:and|while|whereas|but)\b", seg)
            else:
                cuts = re.finditer(r":|;\s+(?=[a-z(])", seg)
            cut = max((mm.end() for mm in cuts), default=0)
            c0 = s0 + cut
            if cut and lab is None:
                owner[s0:c0] = [union] * (c0 - s0)
            prev_end = c0
            group: list = []  # letters of the current ';'-clause
            for m in applied:
                labs = frozenset(m.labels)
                semi = text.rfind(";", prev_end, m.start)
                if group and semi >= 0 and kind != "orphan":
                    # 'HER2 (A) and ER (B) in breast cancer; PR staining (C) was negative'
                    g = frozenset(k for x in group for k in x.labels)
                    owner[prev_end:semi + 1] = [g] * (semi + 1 - prev_end)
                    prev_end = semi + 1
                    group = []
                group.append(m)
                owner[prev_end:m.start] = [labs] * (m.start - prev_end)
                if _prev_token(text, m.start) in _PREP_CITE and not m.descriptor:
                    # 'Necrosis is visible in (B) and (C).': keep the letters in the text
                    owner[m.start:m.end] = [labs] * (m.end - m.start)
                else:
                    owner[m.start:m.end] = [False] * (m.end - m.start)
                for k, d in m.descriptor.items():
                    kk = k.upper() if k.upper() in labs else k
                    if kk in labs:
                        extras.append((m.start, frozenset([kk]), f"({d})"))
                prev_end = m.end
            if kind == "orphan" and first_sentence and re.search(r"\w", text[prev_end:s1]):
                continue  # the rest of the block's own first sentence stays with the block
            tail = frozenset(k for x in group for k in x.labels) if kind != "orphan" else union
            owner[prev_end:s1] = [tail] * (s1 - prev_end)

    # trailing notes of the last panel that apply to every panel
    trailing = None
    if pre and blocks[-1][2] is not None and blocks[-1][2] != all_keys:
        bs, be, lab = blocks[-1]
        idx = [i for i, s in enumerate(sent_starts) if bs < s < be]
        other_firsts = set()
        for obs, obe, olab in blocks[1:-1]:
            other_firsts.add(_first_words(text, start=obs, end=obe))
            for s in sent_starts[bisect.bisect_right(sent_starts, obs):bisect.bisect_left(sent_starts, obe)]:
                other_firsts.add(_first_words(text, start=s, end=obe))
        # sentences of the last block that describe every panel: notes, or citing other panels
        # (a sentence citing only other panels belongs to them instead)
        sharable = []
        for si in idx:
            s_start = sent_starts[si]
            s1 = sent_starts[si + 1] if si + 1 < len(sent_starts) else be
            sent = text[s_start:s1]
            cited = {k for m in markers[bisect.bisect_left(m_starts, s_start):bisect.bisect_left(m_starts, s1)]
                     if m.role != "pre" for k in m.labels}
            note_kw = _is_note(sent)
            note = note_kw and _first_words(sent) not in other_firsts
            if cited and not cited & lab and not note_kw:
                # 'We adapted the data presented in panel B from ...' belongs to B
                cl = frozenset(cited)
                for i in range(s_start, s1):
                    if owner[i] == lab:
                        owner[i] = cl
                sharable.append((s_start, s1, None, False))
                continue
            sharable.append((s_start, s1, bool(note or (cited - lab)), bool(cited - lab)))
        tail = []
        first_cite = next((i for i, x in enumerate(sharable) if x[3]), None)
        if pre[-1].role == "enum":
            # the last letter closes an inline enumeration ('cohorts of (a) C57BL/6 and (b) BALB/c
            # mice.'): its text ends with that sentence; the sentences after it are about the figure
            tail = [(a, b) for a, b, ok, _ in sharable if ok is not None]
        elif first_cite is not None:
            # a sentence citing other panels shows that the text from the first shared sentence
            # before it on is about several panels: all of it is shared
            first = next(i for i, x in enumerate(sharable) if x[2])
            tail = [(a, b) for a, b, ok, _ in sharable[first:] if ok is not None]
        else:
            # notes alone: only the closing run of them is shared; a note followed by more of
            # the panel's own description ('Solid lines connect the means. Stage 48 cells are
            # more narrowly tuned.') stays the panel's
            for a, b, ok, _ in reversed(sharable):
                if ok is False:
                    break
                if ok:
                    tail.append((a, b))
        if tail:
            trailing = (tail[-1][0], be, sorted(lab, key=label_sort_key))
            for s_start, s1 in tail:
                for i in range(s_start, s1):
                    if owner[i] == lab:
                        owner[i] = None

    # text owned by every label is shared
    for i in range(n):
        if owner[i] and owner[i] == all_keys:
            owner[i] = None
    extras = [(p, None if ks == all_keys else ks, t) for p, ks, t in extras]
    return Segmentation(text, list(keys), owner, extras, markers, trailing)


def _squashed_first(text: str, start0: int, markers: list):
    """'... induces autoimmunitya. Prostate weights ... b-d. Histology': the title swallowed 'a'."""
    firsts = [m for m in markers if "B" in m.labels]
    if not firsts:
        return None
    first_b = min(firsts, key=lambda m: m.start)
    raw = next((t for t, _ in first_b.tokens if t.upper() == "B"), "B")
    a = "a" if raw.islower() else "A"
    m = re.compile(rf"(?<=[a-z]{{3}}){a}(\)\.?|\.|,|:)(?=\s+\S)").search(text, start0, first_b.start)
    if not m:
        return None
    mk = Marker(m.start(), m.end(), [(a, False)], "dot", labels=("A",), squashed=True)
    return mk


def _resolve_merged(m: Marker, keys: list, mode: str) -> tuple:
    ks = []
    for t, multi in m.tokens:
        k = t.lower() if mode == "roman" else t.upper()
        if k in keys:
            ks.append(k)
    return tuple(dict.fromkeys(ks))


# ----------------------------------------------------------------------------------------------
# assembling text


_RE_WS = re.compile(r"\s+")


def _clean(s: str) -> str:
    s = _RE_WS.sub(" ", s).strip()
    s = re.sub(r"\s+([,;.:])", r"\1", s)
    s = re.sub(r"\(\s*\)", "", s) if "( )" in s else s
    s = s.strip(" ,;:").lstrip(". ")
    # drop dangling brackets left by a removed marker
    while s.endswith((")", "]")) and s.count(")") + s.count("]") > s.count("(") + s.count("["):
        s = s[:-1].rstrip(" ,;:")
    while s.startswith(("(", "[")) and s.count("(") + s.count("[") > s.count(")") + s.count("]"):
        s = s[1:].lstrip(" ,;:")
    s = re.sub(r"\.(?:\s*\.)+", ".", s) if ".." in s or ". ." in s else s
    s = re.sub(r"^(?:and|or)\s+", "", s)
    s = re.sub(r"(?:,\s*|\s+)(?:and|or)$", "", s)
    return s.strip(" ,;:")


def _join(parts: list) -> str:
    out = []
    for t in parts:
        t = t.strip()
        if out and out[-1][-1:] in ".;:!?":
            t = t.lstrip(" ,;:")
        if t:
            out.append(t)
    return " ".join(out)


def _runs(seg: Segmentation) -> list:
    """[(start, owner, text)] maximal runs of equal owner (markers and prefix dropped)."""
    out = []
    owner = seg.owner
    n = len(owner)
    i = 0
    while i < n:
        o = owner[i]
        j = i + 1
        while j < n and owner[j] == o:
            j += 1
        if o is not False:
            out.append((i, o, seg.text[i:j]))
        i = j
    for p, ks, t in seg.extras:
        out.append((p, ks, t))
    out.sort(key=lambda r: r[0])
    return out


def split_caption(caption: str) -> dict:
    """Split ``caption`` into ``{"_shared": str, <panel key>: str, ...}`` (see module docstring)."""
    if not isinstance(caption, str):
        raise TypeError("caption must be a string")
    seg = segment_caption(caption)
    runs = _runs(seg)
    shared = _clean(_join([t for _, o, t in runs if o is None]))
    out = {SHARED: shared}
    for k in seg.labels:
        out[k] = _clean(_join([t for _, o, t in runs if o is not None and k in o]))
    return out
