"""Find caption clauses anchored on visual-marker words ("arrows indicate ...", "(red arrowhead)").

``find_marker_phrases(caption, subcaptions=None)`` returns, in caption order, one dict per marker
mention that points at something::

    {"type": "arrow", "colour": "red" | None, "count": 2 | None, "labels": ["B"],
     "phrase": "tumor cells", "span": [start, end]}

* ``type``: arrow, arrowhead, asterisk, star, box, circle, inset, triangle, line, outline, hash.
* ``colour``: colour word attached to the marker ("red arrows", "circled in white"), else None.
* ``count``: an explicit number ("two arrows" -> 2), 1 for a singular noun, None for a bare plural.
* ``labels``: panel keys the clause belongs to: letters named in the clause itself ("arrows in B",
  "(F; arrow)"), else the panel whose subcaption holds the clause (from ``subcaptions`` when
  given, else from :func:`panel2patch.text.split.segment_caption`); ``[]`` for shared text.
* ``phrase``: the finding the marker points at ("The red arrow indicates the nerve" -> "the nerve",
  "micro-abscesses (black arrows)" -> "micro-abscesses").
* ``span``: character offsets of the marker words in ``caption``.

Recognised frames: "<markers> [in B] indicate/show/point to/mark ... <phrase>", "<phrase> (is)
indicated/marked/bounded by <marker>", "<phrase> (<colour> <marker>[, B])", "(B, arrows)",
definition lists "(large arrows, necrotic centres; small arrows, ...)" and "*, <phrase>;",
"Inset: <phrase>".  Significance stars ("*P < 0.05"), box plots and "star-shaped" are skipped.
Rule based and deterministic.
"""

from __future__ import annotations

import bisect
import functools
import itertools
import re

from .split import SHARED, _EXPR, _parse_expr, segment_caption

__all__ = ["find_marker_phrases", "MARKER_TYPES"]

MARKER_TYPES = ("arrow", "arrowhead", "asterisk", "star", "box", "circle", "inset", "triangle", "line",
                "outline", "hash")

_COLOUR_WORDS = (
    "red|green|blue|yellow|white|black|orange|purple|violet|magenta|cyan|pink|brown|grey|gray|"
    "turquoise|gold|golden|silver"
)
_COLOUR = rf"(?:(?:light|dark|bright|pale)[\s-])?(?:{_COLOUR_WORDS})"
_MOD = (
    r"(?:thick|thin|small|large|big|long|short|open|closed|filled|solid|hollow|empty|dashed|dotted|"
    r"broken|curved|bold|double(?:-headed)?|single|bidirectional|upward(?:[\s-]facing)?|"
    r"downward(?:[\s-]facing)?|horizontal|vertical|straight|white-filled|black-filled|"
    r"dash-dotted|transparent|framed|line|rectangular|square)"
)
_NUM_WORDS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
              "nine": 9, "ten": 10, "single": 1, "a": 1, "an": 1}
_NUM = r"(?:one|two|three|four|five|six|seven|eight|nine|ten|\d{1,2})"

# marker nouns; order matters (arrowhead before arrow)
_NOUNS = [
    (r"arrow[\s-]?heads?", "arrowhead"),
    (r"arrows?|arrowed", "arrow"),
    (r"asterisks?", "asterisk"),
    (r"stars?(?![\s-]*(?:shaped|like|burst))", "star"),
    (r"boxed|box(?:es)?(?![\s-]*(?:plots?|blots?|and[\s-]whisker))|rectangles?|squares?(?![\s-]*(?:root|mm|cm|µm|um|mum|pixels?)\b)", "box"),
    (r"circled|circles?|ovals?|ellipses?", "circle"),
    (r"insets?|inserts?(?!ed)|inlets?", "inset"),
    (r"triangles?|chevrons?", "triangle"),
    (r"(?:dashed|dotted|broken|dash-dotted)\s+(?:lines?|curves?)", "line"),
    (r"outlined|outlines?", "outline"),
]
_NOUN_RE = "|".join(f"(?P<t{i}>{p})" for i, (p, _) in enumerate(_NOUNS))
# a marker noun phrase: article/number, modifiers/colours, noun
_MNP = (
    rf"(?P<det>\b(?:the|a|an|{_NUM})\s+)?"
    rf"(?P<mods>(?:(?:{_COLOUR}|{_MOD})(?:\s*(?:,|and|or|/)\s*|[\s-]+))*)"
    rf"\b(?P<noun>{_NOUN_RE})\b"
)
_RE_MNP = re.compile(_MNP, re.I)

_VERB = (
    r"(?:indicat(?:e|es|ed|ing)|point(?:s|ed|ing)?(?:\s+(?:to|at|out))?|mark(?:s|ed|ing)?|"
    r"show(?:s|ed|n|ing)?|denot(?:e|es|ed|ing)|highlight(?:s|ed|ing)?|represent(?:s|ed|ing)?|"
    r"depict(?:s|ed|ing)?|identif(?:y|ies|ied|ying)|designat(?:e|es|ed|ing)|delineat(?:e|es|ed|ing)|"
    r"demarcat(?:e|es|ed|ing)|outlin(?:e|es|ed|ing)|label(?:s|led|ed|ling|ing)?|reveal(?:s|ed|ing)?|"
    r"correspond(?:s|ing)?\s+to|refer(?:s|ring)?\s+to|display(?:s|ed|ing)?|flag(?:s|ged)?|"
    r"illustrat(?:e|es|ed|ing)|locat(?:e|es|ed)|encircl(?:e|es|ed)|surround(?:s|ed)?|"
    r"enclos(?:e|es|ed)|contain(?:s|ed)?|(?:is|are|was|were)(?:\s+(?:in|on|at))?|mean(?:s)?|=|:|,)"
)
_RE_SUBJ_TAIL = re.compile(
    rf"\s*(?P<loc>(?:in|on|within|of)\s+(?:the\s+)?(?:(?:left|right|top|bottom|upper|lower|middle|"
    rf"central|corresponding|respective)\s+(?:and\s+)?)*(?:(?:panels?|images?|rows?|columns?|"
    rf"micrographs?|pictures?|sections?|figures?)\s*)?(?P<labs>\(?{_EXPR}\)?(?:\s*(?:,|and|&)\s*\(?{_EXPR}\)?){{0,8}})?"
    rf"(?=\s))?\s*(?:\([^()]*\)\s*)?(?P<verb>{_VERB})(?![A-Za-z])\s*",
)
_PASSIVE = (
    r"(?:(?:is|are|was|were|as|be|been)\s+)?(?:(?:also|clearly|further|each|all)\s+)?"
    r"(?P<pverb>indicated|marked|highlighted|shown|pointed\s+out|denoted|outlined|labell?ed|identified|"
    r"depicted|designated|delineated|demarcated|bounded|surrounded|enclosed|encircled|circled|boxed|"
    r"framed|flagged)\s+(?:by|with|using)\s+$"
)
_RE_PASSIVE = re.compile(_PASSIVE, re.I)
_SPATIAL_PASSIVE = {"bounded", "surrounded", "enclosed", "encircled", "framed"}
_RE_LEADING = re.compile(
    r"^(?:(?:note|notice|please\s+note)\s+(?:that\s+)?|that\s+|which\s+|where\s+|and\s+|or\s+|but\s+|"
    r"while\s+|whereas\s+|although\s+|showing\s+(?:that\s+)?|with\s+|also\s+|both\s+(?=\w+\s+\w))+",
    re.I,
)
_RE_STATS = re.compile(
    r"\bp\s*[<=>≤]|p[- ]?values?|significan|statistic|t[- ]test|anova|versus|\bvs\b|compared\s+(?:to|with)|"
    r"mann|wilcoxon|chi|\bsd\b|s\.e\.m|\bsem\b",
    re.I,
)
_RE_CONTENT_WORD = re.compile(r"[A-Za-z]{3,}")
_RE_NOT_CONTENT = re.compile(
    r"\b(?:original|magnifications?|magnified|scale|bars?|mum|µm|um|nm|mm|cm|objective|lens|and|the|insets?)\b", re.I
)
_RE_LABEL_ONLY = re.compile(rf"\s*(?:panels?\s+)?{_EXPR}\s*")
_RE_SYMBOL_PAREN = re.compile(r"\((?P<sym>\*{1,3}|#{1,2}|†)\)")
_RE_SYMBOL_DEF = re.compile(r"(?:(?<=[;:(])|^)\s*(?P<sym>\*{1,3}|#{1,2}|†)\s*[,:=]\s+(?P<def>[^;.()]{2,80})")
_RE_SENT_END = re.compile(r"[.!?](?=\s+[A-Z0-9(\[]|\s*$)|;")
_BOUNDARY_BACK = re.compile(r"[.;:]\s|[(]|\)\s|,\s+(?:and|while|whereas|but)\s|,\s|\s(?:and|while|whereas|but)\s")


def g_mods(group: list) -> bool:
    """Whether any marker noun phrase of a group carries a colour or shape word."""
    return any((g.group("mods") or "").strip() for g in group)


def _noun_type(m: re.Match) -> str:
    for i, (_, t) in enumerate(_NOUNS):
        if m.group(f"t{i}"):
            return t
    return "arrow"


def _colour_of(mods: str, after: str) -> str | None:
    cm = re.findall(rf"\b({_COLOUR})\b", mods or "", re.I)
    if cm:
        c = cm[-1].lower()
    else:
        am = re.match(rf"\s*(?:\(\s*)?(?:in\s+)?({_COLOUR})\b(?!\s+(?:and|or)\s)", after, re.I)
        if not am:
            return None
        c = am.group(1).lower()
    c = c.replace("gray", "grey")
    return c


def _count_of(det: str | None, noun: str) -> int | None:
    d = (det or "").strip().lower()
    if d and d in _NUM_WORDS:
        return _NUM_WORDS[d]
    if d.isdigit():
        return int(d)
    plural = noun.lower().endswith("s") and not noun.lower().endswith(("ss",))
    if noun.lower() in ("boxed", "circled", "outlined", "arrowed"):
        return None
    return None if plural else 1


def _labels_from_text(s: str) -> list:
    out = []
    for m in re.finditer(rf"(?<![A-Za-z])(?:panels?\s+)?\(?(?P<e>{_EXPR})\)?(?![A-Za-z])", s):
        toks = _parse_expr(m.group("e")) or []
        for t, multi in toks:
            if multi or len(t) != 1:
                continue
            out.append(t.upper())
    return list(dict.fromkeys(out))


def _clean_phrase(s: str) -> str:
    s = re.sub(r"\s+", " ", s).strip(" ,;:.")
    prev = None
    while prev != s:
        prev = s
        s = _RE_LEADING.sub("", s).strip(" ,;:.")
    s = re.sub(r"\s+(?:and|or|as|is|are|was|were|which|that)$", "", s, flags=re.I)
    # drop a dangling open bracket
    if s.count("(") > s.count(")"):
        s = s[: s.rfind("(")].rstrip(" ,;")
    if s.count(")") > s.count("("):
        s = s.replace(")", "", s.count(")") - s.count("(")) if s.startswith(")") else s.rstrip(")")
    return s.strip(" ,;:.")


@functools.lru_cache(maxsize=8)
def _index(text: str) -> tuple:
    """Per caption, once: bracket balance before each position, sentence-break spans, and the
    positions of '(' / ')' by the balance before them, so that the bounds below cost a bisection
    instead of a scan of the caption (a 1 MB caption made the scans quadratic)."""
    bal = [0, *itertools.accumulate(1 if ch == "(" else -1 if ch == ")" else 0 for ch in text)]
    breaks = [(m.start(), m.end()) for m in _RE_SENT_END.finditer(text)]
    opens: dict = {}
    closes: dict = {}
    for i, ch in enumerate(text):
        if ch == "(":
            opens.setdefault(bal[i], []).append(i)
        elif ch == ")":
            closes.setdefault(bal[i], []).append(i)
    return bal, [s for s, _ in breaks], [e for _, e in breaks], opens, closes


_WALK = 256  # sentence breaks inside brackets skipped before giving up (pathological captions)


def _sentence_bounds(text: str, pos: int) -> tuple:
    """[start, end) of the sentence (or ';'-clause) around ``pos``; breaks inside brackets
    that do not hold ``pos`` are ignored."""
    bal, starts, ends, _, _ = _index(text)
    b = bal[pos]
    start = 0
    k = pos  # a stop followed by nothing but spaces up to ``pos`` ends a sentence too
    while k > 0 and text[k - 1].isspace():
        k -= 1
    t = bisect.bisect_right(ends, pos) - 1
    if k > 0 and text[k - 1] in ".!?" and (t < 0 or ends[t] < k):
        start, t = k, -1
    for _ in range(_WALK):
        if t < 0:
            break
        if bal[ends[t]] <= b:
            start = ends[t]
            break
        t -= 1
    end = len(text)
    t = bisect.bisect_left(starts, pos)
    for t in range(t, min(t + _WALK, len(starts))):
        if bal[starts[t]] <= b:
            end = starts[t] + (1 if text[starts[t]] != ";" else 0)
            break
    return start, end


def _back_phrase(text: str, end: int, floor: int, max_words: int = 16) -> tuple:
    """The clause chunk right before ``end``: back to '.', ';', ':', '(', ', ', ') and ', or the
    closing bracket of a parenthesis that names another marker."""
    seg = text[floor:end].rstrip(" ,")
    depth = 0
    cut = 0
    i = len(seg)
    while i > 0:
        i -= 1
        ch = seg[i]
        if ch == ")":
            if depth == 0:
                op = seg.rfind("(", 0, i)
                if op >= 0 and seg[i + 1:].strip() and (
                    _RE_MNP.search(seg[op:i]) or re.fullmatch(r"\(\s*[*#†]+\s*", seg[op:i])
                    # a panel letter heading its clause: '. (B) Ki67 (arrowhead)'
                    or (_RE_LABEL_ONLY.fullmatch(seg[op + 1:i]) and seg[:op].rstrip()[-1:] in ("", ".", ";", ":"))
                ):
                    cut = i + 1  # '... cancer (thin arrow) and PIN (arrowhead)'
                    break
            depth += 1
            continue
        if ch == "(":
            if depth == 0:
                cut = i + 1
                break
            depth -= 1
            continue
        if depth:
            continue
        if ch in ".;:" and (i + 1 >= len(seg) or seg[i + 1].isspace()):
            cut = i + 1
            break
        if ch == "," and i + 1 < len(seg) and seg[i + 1].isspace():
            cut = i + 1
            break
        if seg.startswith((" while ", " whereas ", " but "), i) or (
            seg.startswith(" and ", i) and seg[:i].rstrip().endswith(")")
        ):
            cut = i + 1
            break
    chunk = seg[cut:]
    if cut and seg[cut - 1] == ")" and len(chunk.split()) <= 3 and re.match(r"\s*(?:at|in|on|of|with|from|into)\b", chunk):
        # '... the fascia propria (stars) at a site indicated by arrows': one clause across the marker
        more, more_cut = _back_phrase(text, floor + seg.rfind("(", 0, cut - 1), floor, max_words)
        if more:
            return _clean_phrase(more + " " + chunk), more_cut
    words = chunk.split()
    if len(words) > max_words:
        chunk = " ".join(words[-max_words:])
    return _clean_phrase(chunk), floor + cut


def _forward_phrase(text: str, start: int, hard_end: int, max_words: int = 30) -> str:
    seg = text[start:hard_end]
    depth = 0
    end = len(seg)
    i = 0
    while i < len(seg):
        ch = seg[i]
        if ch == "(":
            inner = seg[i:i + 60]
            close = inner.find(")")
            if close > 0 and _RE_MNP.search(inner[:close]):
                end = i  # a parenthesis naming another marker ends the phrase
                break
            depth += 1
        elif ch == ")":
            if depth == 0:
                end = i
                break
            depth -= 1
        elif depth == 0 and ch in ";":
            end = i
            break
        elif depth == 0 and ch == "," and re.match(
            rf",\s+(?:which|while|whereas|but|respectively|(?:original\s+)?magnification|scale\s+bars?|bars?\b|and\s+(?:the\s+|an?\s+)?(?:(?:{_COLOUR}|{_MOD})\s+)*"
            rf"(?:arrow|arrowhead|asterisk|star|box|circle|triangle|inset))",
            seg[i:], re.I,
        ):
            end = i
            break
        elif depth == 0 and re.match(
            rf"\s+(?:and|while|whereas)\s+(?:the\s+|an?\s+)?(?:(?:{_COLOUR}|{_MOD})\s+)*"
            rf"(?:arrow|arrowhead|asterisk|star|box|circle|triangle|inset)s?\s+{_VERB}",
            seg[i:], re.I,
        ):
            end = i
            break
        i += 1
    chunk = seg[:end]
    words = chunk.split()
    if len(words) > max_words:
        chunk = " ".join(words[:max_words])
    return _clean_phrase(chunk)


def _paren_bounds(text: str, pos: int) -> tuple | None:
    """(open, close) of the innermost parenthesis holding ``pos``, if any."""
    bal, _, _, opens, closes = _index(text)
    before = opens.get(bal[pos] - 1, [])
    i = bisect.bisect_left(before, pos) - 1
    after = closes.get(bal[pos], [])
    j = bisect.bisect_left(after, pos)
    return (before[i], after[j]) if i >= 0 and j < len(after) else None


def _subject_start_ok(text: str, start: int, floor: int) -> bool:
    before = text[floor:start]
    b = before.strip()
    if not b or b[-1] in ".;:(":
        return True
    # a short name before the marker at a clause start: 'AP insert: ...', 'p16 inset: ...'
    sm = re.search(r"(?:^|[.;:(]\s*)(\S+)$", b)
    if sm and len(sm.group(1)) <= 8 and not sm.group(1).islower():
        return True
    low = b.lower()
    return bool(re.search(r"(?:,|\band|\bwhile|\bwhereas|\bbut|\bnote|\bthat|\balso|\bhere|\bin addition,?)$", low))


def find_marker_phrases(caption: str, subcaptions: dict | None = None) -> list:
    """Marker clauses of ``caption`` (see module docstring); ``subcaptions`` from ``split_caption``."""
    text = caption or ""
    if not text:
        return []
    seg = segment_caption(text) if subcaptions is None else None
    found: list = []
    used = bytearray(len(text) + 1)  # 1 where a marker word was already explained

    def add(mtype, colour, count, labels, phrase, span, where):
        if not phrase or not _RE_CONTENT_WORD.search(_RE_NOT_CONTENT.sub(" ", phrase)):
            return  # '100* (inset)', 'insets: x1000'
        if mtype in ("asterisk", "star"):
            s0, s1 = _sentence_bounds(text, span[0])
            if _RE_STATS.search(text[s0:s1]):
                return  # significance stars
        if used[span[0]]:
            return
        used[span[0]:span[1]] = b"\x01" * (span[1] - span[0])
        found.append({
            "type": mtype, "colour": colour, "count": count, "labels": labels, "phrase": phrase,
            "span": [span[0], span[1]],
        })

    mnps = list(_RE_MNP.finditer(text))
    # 1. subject frame: '[The] red arrows [in B] indicate <phrase>'  (also coordinated marker NPs)
    i = 0
    while i < len(mnps):
        m = mnps[i]
        s_start, s_end = _sentence_bounds(text, m.start())
        group = [m]
        j = i
        while j + 1 < len(mnps) and re.fullmatch(r"\s*(?:,|and|or|&|/|,\s*and)\s*", text[group[-1].end():mnps[j + 1].start()]):
            group.append(mnps[j + 1])
            j += 1
        last = group[-1]
        tail = _RE_SUBJ_TAIL.match(text, last.end())
        par = _paren_bounds(text, m.start())
        floor = par[0] + 1 if par else s_start
        if tail and _subject_start_ok(text, m.start(), floor) and not (
            tail.group("verb") == "," and len(group) > 1
        ):
            verb = tail.group("verb")
            hard_end = par[1] if par else s_end
            phrase = _forward_phrase(text, tail.end(), hard_end)
            ok = bool(phrase)
            if verb in (",", "=", ":") or re.match(r"(?:is|are|was|were)", verb):
                # 'Arrows, tumour cells' / 'Inset: ...' only at a clause start
                lead = text[floor:m.start()].strip()
                ok = ok and (not lead or text[:m.start()].rstrip()[-1:] in ";:("
                             or (" " not in lead and len(lead) <= 8 and not lead.islower()))
            if ok and verb == "," and _noun_type(m) in ("box", "circle", "line", "outline"):
                ok = False
            if ok and verb == "," and len(phrase.split()) < 3:
                ok = False  # '(black arrow, WT inset)', '(a inset, indirect immunoperoxidase)'
            if ok and _noun_type(m) in ("box", "circle", "triangle") and not g_mods(group) and re.match(
                r"(?:display|contain|is|are|was|were|mean|=|:|,)", verb
            ):
                ok = False  # 'Each box displays the values' (a box plot)
            if ok:
                labs = _labels_from_text(tail.group("labs") or "") if tail.group("labs") else []
                for g in group:
                    mt = _noun_type(g)
                    add(mt, _colour_of(g.group("mods"), text[g.end():g.end() + 20]),
                        _count_of(g.group("det"), g.group("noun")), labs, phrase, (g.start("noun"), g.end()), "subject")
                i = j + 1
                continue
        i += 1

    # 2. passive frame: '<phrase> (is) indicated by (the) arrows [in B]'
    for m in mnps:
        if used[m.start("noun")]:
            continue
        pre = text[max(0, m.start() - 60):m.start()]
        pm = _RE_PASSIVE.search(pre)
        if not pm:
            continue
        vstart = m.start() - (len(pre) - pm.start())
        s_start, s_end = _sentence_bounds(text, m.start())
        par = _paren_bounds(text, m.start())
        floor = par[0] + 1 if par else s_start
        phrase, _ = _back_phrase(text, vstart, floor)
        if not phrase and par:
            ps, _ = _sentence_bounds(text, par[0])
            phrase, _ = _back_phrase(text, par[0], ps)
        if pm.group("pverb").lower() in _SPATIAL_PASSIVE and phrase:
            phrase = _clean_phrase(phrase + " " + text[vstart:m.end()])
        after = text[m.end():m.end() + 40]
        lm = re.match(rf"\s*(?:in|on)\s+(?:panels?\s+)?(?P<labs>\(?{_EXPR}\)?(?:\s*(?:,|and|&|,\s*and)\s*\(?{_EXPR}\)?){{0,8}})(?![A-Za-z])", after)
        labs = _labels_from_text(lm.group("labs")) if lm else []
        add(_noun_type(m), _colour_of(m.group("mods"), after), _count_of(m.group("det"), m.group("noun")),
            labs, phrase, (m.start("noun"), m.end()), "passive")

    # 3. parenthetical: '<phrase> (black arrows)', '(F; arrow)', '(arrows in A)', definitions
    for m in mnps:
        if used[m.start("noun")]:
            continue
        par = _paren_bounds(text, m.start())
        if not par:
            continue
        po, pc = par
        content = text[po + 1:pc]
        parts = [p.strip() for p in re.split(r"[;,]", content)]
        # definition list: '(large yellow arrows, necrotic centers; small yellow arrows, condensed nuclei)'
        rel = m.start() - (po + 1)
        part_idx, acc = 0, 0
        for k, p in enumerate(re.split(r"([;,])", content)):
            if acc + len(p) > rel:
                part_idx = k
                break
            acc += len(p)
        raw_parts = re.split(r"([;,])", content)
        mypart = raw_parts[part_idx] if part_idx < len(raw_parts) else ""
        nxt = raw_parts[part_idx + 2].strip() if part_idx + 2 < len(raw_parts) else ""
        labels = _labels_from_text(" ".join(p for p in parts if re.fullmatch(rf"(?:panels?\s+)?{_EXPR}", p)))
        inner_loc = re.search(rf"\b(?:in|on)\s+(?:panels?\s+)?(?P<e>{_EXPR})\s*$", mypart)
        if inner_loc:
            labels = list(dict.fromkeys(labels + _labels_from_text(inner_loc.group("e"))))
        between = re.match(r"\s*between\s", mypart)
        phrase = ""
        if (nxt and not re.fullmatch(rf"(?:panels?\s+)?{_EXPR}", nxt) and len(nxt.split()) >= 2
                and re.match(r"\s*(?:the\s+)?" + re.escape(m.group(0).strip()), mypart, re.I)
                and (";" in content or len(nxt.split()) >= 3)):
            phrase = _clean_phrase(nxt)
        if not phrase:
            s_start, _ = _sentence_bounds(text, po)
            phrase, _ = _back_phrase(text, po, s_start)
        if between and not phrase:
            continue
        add(_noun_type(m), _colour_of(m.group("mods"), text[m.end():m.end() + 20]),
            _count_of(m.group("det"), m.group("noun")), labels, phrase, (m.start("noun"), m.end()), "paren")

    # 4. remaining marker words in running text ('with an arrow', 'the boxed area in A')
    for m in mnps:
        if used[m.start("noun")]:
            continue
        t = _noun_type(m)
        noun = m.group("noun").lower()
        if t in ("box", "circle", "outline") and noun in ("boxed", "circled", "outlined"):
            # 'higher magnification of the boxed area in A': the noun after it is the finding
            am = re.match(r"\s+((?:[\w-]+\s+){0,2}?(?:areas?|regions?|fields?|zones?|parts?|cells?|glands?|foci|focus)\b"
                          rf"(?:\s+in\s+(?:panels?\s+)?\(?{_EXPR}\)?)?)", text[m.end():])
            if am:
                phrase = _clean_phrase(am.group(1))
                after_labels = _labels_from_text(am.group(1).split(" in ")[-1]) if " in " in am.group(1) else []
                add(t, _colour_of(m.group("mods"), text[m.end():m.end() + 20]), None, after_labels, phrase,
                    (m.start("noun"), m.end()), "attr")
                continue
            if t == "outline" or t == "circle":
                cm = re.match(rf"\s+(?:in\s+)?({_COLOUR})\b", text[m.end():], re.I)
                if cm:
                    s_start, _ = _sentence_bounds(text, m.start())
                    pre = text[s_start:m.start()]
                    pm = re.search(r"(?:\s+(?:is|are|was|were))?\s*$", pre)
                    phrase, _ = _back_phrase(text, s_start + pm.start(), s_start)
                    add(t, cm.group(1).lower().replace("gray", "grey"), None, [], phrase,
                        (m.start("noun"), m.end()), "attr")
                    continue
        if t == "inset":
            s_start, s_end = _sentence_bounds(text, m.start())
            fm = re.match(rf"\s*(?:in\s+(?:the\s+)?(?:panels?\s+)?\(?{_EXPR}\)?\s*)?(?:\([^()]*\)\s*)?"
                          rf"(?:{_VERB})\s+", text[m.end():])
            if fm and _subject_start_ok(text, m.start(), s_start):
                phrase = _forward_phrase(text, m.end() + fm.end(), s_end)
                add(t, None, _count_of(m.group("det"), m.group("noun")),
                    _labels_from_text(fm.group(0)) if re.search(r"\bin\b", fm.group(0)) else [],
                    phrase, (m.start("noun"), m.end()), "inset")
                continue
            # '... with inset revealing peri-neural invasion', '... is shown in the inset'
            wm = re.match(r"\s+(?:revealing|showing|shows|depicting|with)\s+", text[m.end():])
            if wm:
                phrase = _forward_phrase(text, m.end() + wm.end(), s_end)
                add(t, None, _count_of(m.group("det"), m.group("noun")), [], phrase,
                    (m.start("noun"), m.end()), "inset")
                continue

    # 5. symbols: 'glands (*)', '(#)', and definition lists '*, pre-ampullary gonoduct;'
    for m in _RE_SYMBOL_PAREN.finditer(text):
        s_start, s_end = _sentence_bounds(text, m.start())
        if _RE_STATS.search(text[s_start:s_end]):
            continue
        if text[m.end():m.end() + 20].strip().lower().startswith(("indicate", "denote", "mark", "represent", "corresponds")):
            phrase = _forward_phrase(text, m.end() + len(re.match(r"\s*\w+\s*", text[m.end():]).group(0)), s_end)
        else:
            phrase, _ = _back_phrase(text, m.start(), s_start)
        sym = m.group("sym")
        add("hash" if sym.startswith("#") else "asterisk", None, None, [], phrase, (m.start(), m.end()), "symbol")
    for m in _RE_SYMBOL_DEF.finditer(text):
        s_start, s_end = _sentence_bounds(text, m.start("sym"))
        if _RE_STATS.search(m.group("def")) or re.match(r"\s*p\b", m.group("def"), re.I):
            continue
        sym = m.group("sym")
        add("hash" if sym.startswith("#") else "asterisk", None, None, [], _clean_phrase(m.group("def")),
            (m.start("sym"), m.end("sym")), "symbol")

    found.sort(key=lambda d: d["span"][0])
    flat = {k: re.sub(r"\s+", " ", v or "") for k, v in (subcaptions or {}).items()}
    for d in found:
        if not d["labels"]:
            d["labels"] = _labels_for(text, d["span"], seg, flat)
    return found


def _labels_for(text: str, span: list, seg, subcaptions: dict | None) -> list:
    """``subcaptions`` with runs of white space made one space."""
    if seg is not None:
        # a marker note after the last panel's text ('(C) ... Arrows indicate X.') is shared like
        # the split shares it (seg.trailing); giving it to the last panel helped the tuned labels
        # but hurt the held-out ones, and a wrong panel is worse than none for align_patches
        return seg.labels_at(span[0])
    if not subcaptions:
        return []
    keys = [k for k in subcaptions if k != SHARED]
    if not keys:
        return []
    s_start, s_end = _sentence_bounds(text, span[0])
    for lo, hi in ((max(s_start, span[0] - 40), min(s_end, span[1] + 10)), (span[0], span[1])):
        needle = re.sub(r"\s+", " ", text[lo:hi]).strip()
        if not needle:
            continue
        hits = [k for k in keys if needle in subcaptions[k]]
        if hits:
            return [] if len(hits) == len(keys) else hits
    return []
