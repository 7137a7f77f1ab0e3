"""Meaning-breaking caption perturbations for perturbed report discrimination (arXiv 2506.01902).

``perturb(text, k, seed)`` returns up to ``k`` texts that keep the caption's words but break its
meaning, each different from the original and from one another; the model must pick the
original among them (:class:`panel2patch.train.losses.DiscriminationLoss`).  Rule-based, no NLP
dependency: a small closed word list plus suffix heuristics.  Deterministic for a (text, seed).

Kinds (``KINDS``; those in ``KEEPS_WORDS`` keep the multiset of words exactly):

* ``shuffle``     word order shuffled, punctuation and spacing left in place
* ``noun``        two different nouns swapped                 ("nuclei ... membrane" -> "membrane ... nuclei")
* ``adjective``   two different adjectives swapped            ("red arrow ... green cells")
* ``relation``    the two sides of "X of Y", "X in Y", "X than Y", ... swapped
* ``negation``    "not"/"no" removed, or "not" inserted after an auxiliary; with <-> without
* ``number``      two different numbers swapped (a lone number is changed instead)
* ``letter``      two panel letters swapped, "(A)" <-> "(B)" (a lone letter is changed instead)
* ``laterality``  left <-> right, upper <-> lower, anterior <-> posterior, ...
* ``clause``      clauses (split at , ; . and "and"/"but"/"while"/"whereas") reordered

A kind that does not apply (no numbers, one clause, ...) or gives an already seen text is skipped
and the next kind is tried, so fewer than ``k`` texts come back only when the caption admits
fewer (a single word, say): callers drop or pad such samples.
"""

from __future__ import annotations

import random
import re
import zlib
from collections.abc import Callable, Sequence

KINDS = ("shuffle", "noun", "adjective", "relation", "negation", "number", "letter", "laterality", "clause")
KEEPS_WORDS = frozenset({"shuffle", "noun", "adjective", "relation", "clause"})
# number / letter / laterality keep the words too when the caption holds two different values

_WORD = re.compile(r"[A-Za-z0-9]+(?:[-'][A-Za-z0-9]+)*")

STOP = frozenset(
    """a an the of in on at to from by with without for and or but than as into onto within over under
    is are was were be been being this that these those it its their there here which who whom whose
    not no nor each all both some any more most less least very also only same other such per via
    shows show shown showing indicate indicates indicated mark marks marked denote denotes denoted""".split()
)
NOUNS = frozenset(
    """cell cells nucleus nuclei membrane cytoplasm tissue tissues tumour tumor tumours tumors lesion
    lesions vessel vessels artery arteries vein veins liver kidney lung lungs heart brain muscle bone
    neuron neurons axon axons dendrite dendrites mitochondria protein proteins gene genes expression
    staining signal signals fibre fibres fiber fibers duct ducts gland glands mouse mice rat rats
    patient patients control controls sample samples section sections region regions area areas
    layer layers cortex epithelium stroma nodule nodules mass cyst cysts image images field arrow
    arrows arrowhead arrowheads asterisk asterisks bar scale treatment group groups""".split()
)
ADJECTIVES = frozenset(
    """red green blue yellow white black brown dark bright large small big tiny high low normal
    abnormal positive negative dense sparse thick thin early late acute chronic mild severe benign
    malignant round irregular focal diffuse strong weak intact damaged healthy diseased mature
    immature old young wide narrow long short""".split()
)
_NOUN_SUFFIX = ("tion", "sion", "ment", "ness", "ity", "cyte", "cytes", "oma", "omas", "osis", "itis", "ase", "some", "somes")
_ADJ_SUFFIX = ("al", "ic", "ous", "ive", "ary", "ful", "less", "able", "ible", "ent", "ant")
RELATIONS = ("of", "in", "than", "with", "from", "to", "into", "on", "within", "versus", "vs", "over", "after", "before")
_COMPARATIVE = re.compile(r"^(more|less|higher|lower|greater|smaller|larger|fewer|[a-z]+er)$")
LATERALITY = {
    "left": "right", "upper": "lower", "top": "bottom", "anterior": "posterior", "proximal": "distal",
    "medial": "lateral", "superior": "inferior", "dorsal": "ventral", "apical": "basal", "inner": "outer",
    "above": "below", "ipsilateral": "contralateral",
}  # fmt: skip
LATERALITY.update({v: k for k, v in list(LATERALITY.items())})
_AUX = re.compile(r"\b(is|are|was|were|can|could|may|might|does|do|did|has|have|had|will|should)\b", re.I)


# --------------------------------------------------------------------------------- utilities
def _words(text: str) -> list[re.Match]:
    return list(_WORD.finditer(text))


def _replace_spans(text: str, spans: Sequence[tuple[int, int, str]]) -> str:
    out, last = [], 0
    for start, end, new in sorted(spans):
        out.append(text[last:start])
        out.append(new)
        last = end
    out.append(text[last:])
    return "".join(out)


def _match_case(new: str, old: str) -> str:
    if old.isupper() and len(old) > 1:
        return new.upper()
    if old[:1].isupper():
        return new[:1].upper() + new[1:]
    return new


def _swap(text: str, a: re.Match, b: re.Match) -> str:
    return _replace_spans(text, [(a.start(), a.end(), b.group()), (b.start(), b.end(), a.group())])


def _swap_two_distinct(text: str, cands: list[re.Match], rng: random.Random) -> str | None:
    """Swap two candidates whose (lower-cased) texts differ."""
    pairs = [(a, b) for i, a in enumerate(cands) for b in cands[i + 1 :] if a.group().lower() != b.group().lower()]
    if not pairs:
        return None
    return _swap(text, *rng.choice(pairs))


def normalise(text: str) -> str:
    """What counts as "the same text": case and spacing ignored."""
    return " ".join(re.findall(r"\w+|[^\w\s]", text.lower()))


def word_multiset(text: str) -> list[str]:
    return sorted(w.lower() for w in _WORD.findall(text))


# --------------------------------------------------------------------------------- the kinds
def _shuffle(text: str, rng: random.Random) -> str | None:
    words = _words(text)
    if len({w.group().lower() for w in words}) < 2:
        return None
    order = list(range(len(words)))
    for _ in range(10):
        rng.shuffle(order)
        if any(words[i].group().lower() != words[j].group().lower() for j, i in enumerate(order)):
            break
    return _replace_spans(text, [(w.start(), w.end(), words[i].group()) for w, i in zip(words, order)])


def _is_noun(w: str) -> bool:
    w = w.lower()
    return w not in STOP and (w in NOUNS or (len(w) > 5 and w.endswith(_NOUN_SUFFIX)))


def _is_adjective(w: str) -> bool:
    w = w.lower()
    if w in STOP or w in NOUNS:
        return False
    return w in ADJECTIVES or (len(w) > 5 and w.endswith(_ADJ_SUFFIX) and not w.endswith(_NOUN_SUFFIX))


def _noun(text: str, rng: random.Random) -> str | None:
    return _swap_two_distinct(text, [m for m in _words(text) if _is_noun(m.group())], rng)


def _adjective(text: str, rng: random.Random) -> str | None:
    return _swap_two_distinct(text, [m for m in _words(text) if _is_adjective(m.group())], rng)


def _relation(text: str, rng: random.Random) -> str | None:
    words = _words(text)
    options = []
    for i, w in enumerate(words):
        if w.group().lower() not in RELATIONS:
            continue

        def side(rng_: range, modifiers: bool) -> re.Match | None:
            for j in rng_:
                cand = words[j].group().lower()
                if cand in STOP or _COMPARATIVE.match(cand) or cand.isdigit():
                    continue
                if not modifiers and (cand in LATERALITY or _is_adjective(cand)) and j + 1 < len(words):
                    continue  # "in the left lobe": the right side's head is "lobe"
                return words[j]
            return None

        left = side(range(i - 1, max(-1, i - 5), -1), modifiers=True)
        right = side(range(i + 1, min(len(words), i + 5)), modifiers=False)
        if left is not None and right is not None and left.group().lower() != right.group().lower():
            options.append((left, right))
    if not options:
        return None
    return _swap(text, *rng.choice(options))


def _negation(text: str, rng: random.Random) -> str | None:
    options: list[Callable[[], str]] = []
    for m in re.finditer(r"\b(not|no)\s+", text, re.I):
        options.append(lambda m=m: text[: m.start()] + text[m.end() :])
    for m in re.finditer(r"\bwithout\b", text, re.I):
        options.append(lambda m=m: text[: m.start()] + _match_case("with", m.group()) + text[m.end() :])
    if not options:
        for m in re.finditer(r"\bwith\b", text, re.I):
            options.append(lambda m=m: text[: m.start()] + _match_case("without", m.group()) + text[m.end() :])
        for m in _AUX.finditer(text):
            options.append(lambda m=m: text[: m.end()] + " not" + text[m.end() :])
    if not options:  # no verb found: deny the whole statement
        stripped = text.lstrip()
        if not stripped:
            return None
        return "No " + (stripped[:1].lower() if not stripped[:2].isupper() else stripped[:1]) + stripped[1:]
    return rng.choice(options)()


def _number(text: str, rng: random.Random) -> str | None:
    nums = list(re.finditer(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.]*\d)", text))
    swapped = _swap_two_distinct(text, nums, rng)
    if swapped is not None or not nums:
        return swapped
    m = rng.choice(nums)  # a lone number: change it (x10, or +1 for zero)
    value = m.group()
    new = value + "0" if "." not in value and value != "0" else str(float(value) * 10 if "." in value else 1)
    return text[: m.start()] + new + text[m.end() :]


_LETTER = re.compile(r"\(([A-Za-z])\)|\b[Pp]anels?\s+([A-Za-z])\b|(?:^|(?<=[.;]\s))([A-Z])(?=[.:)]\s)")


def _letters(text: str) -> list[tuple[int, int, str]]:
    out = []
    for m in _LETTER.finditer(text):
        g = next(i for i in (1, 2, 3) if m.group(i) is not None)
        out.append((m.start(g), m.end(g), m.group(g)))
    return out


def _letter(text: str, rng: random.Random) -> str | None:
    letters = _letters(text)
    pairs = [(a, b) for i, a in enumerate(letters) for b in letters[i + 1 :] if a[2].lower() != b[2].lower()]
    if pairs:
        a, b = rng.choice(pairs)
        return _replace_spans(text, [(a[0], a[1], b[2]), (b[0], b[1], a[2])])
    if not letters:
        return None
    start, end, old = rng.choice(letters)  # a lone letter: the next one in the alphabet
    new = chr((ord(old.lower()) - ord("a") + 1) % 26 + ord("a"))
    return text[:start] + (new.upper() if old.isupper() else new) + text[end:]


def _laterality(text: str, rng: random.Random) -> str | None:
    spans = [(m.start(), m.end(), _match_case(LATERALITY[m.group().lower()], m.group()))
             for m in _words(text) if m.group().lower() in LATERALITY]  # fmt: skip
    if not spans:
        return None
    return _replace_spans(text, spans)


_CLAUSE_SEP = re.compile(r"(\s*[,;:.]\s+|\s+(?:and|but|while|whereas)\s+)")


def _clause(text: str, rng: random.Random) -> str | None:
    body = text.rstrip()
    end = ""
    while body and body[-1] in ".;:,":
        body, end = body[:-1], body[-1] + end
    parts = _CLAUSE_SEP.split(body)
    clauses, seps = parts[0::2], parts[1::2]
    if len({normalise(c) for c in clauses if c.strip()}) < 2:
        return None
    order = list(range(len(clauses)))
    for _ in range(10):
        rng.shuffle(order)
        if any(normalise(clauses[i]) != normalise(clauses[j]) for j, i in enumerate(order)):
            break
    out = [clauses[order[0]]]
    for sep, i in zip(seps, order[1:]):
        out += [sep, clauses[i]]
    return "".join(out) + end


PERTURBERS: dict[str, Callable[[str, random.Random], str | None]] = {
    "shuffle": _shuffle, "noun": _noun, "adjective": _adjective, "relation": _relation, "negation": _negation,
    "number": _number, "letter": _letter, "laterality": _laterality, "clause": _clause,
}  # fmt: skip


# ------------------------------------------------------------------------------------- API
def apply(text: str, kind: str, seed: int = 0) -> str | None:
    """One perturbation of ``kind``, or None when the kind does not apply or changes nothing."""
    rng = random.Random(zlib.crc32(f"{seed}\0{kind}\0{text}".encode()))
    out = PERTURBERS[kind](text, rng)
    return None if out is None or normalise(out) == normalise(text) else out


def perturb_with_kinds(text: str, k: int, seed: int = 0, kinds: Sequence[str] = KINDS) -> list[tuple[str, str]]:
    """Up to ``k`` (kind, perturbed text), all different from ``text`` and from one another.

    Kinds are tried in an order drawn from the seed, one text each; when all have been tried and
    fewer than ``k`` came out, the randomised kinds are drawn again with new seeds (``2 k`` rounds at
    most, at least 4)."""
    unknown = set(kinds) - set(PERTURBERS)
    if unknown:
        raise ValueError(f"unknown perturbation kinds {sorted(unknown)}")
    rng = random.Random(zlib.crc32(f"{seed}\0{text}".encode()))
    order = list(kinds)
    rng.shuffle(order)
    seen = {normalise(text)}
    out: list[tuple[str, str]] = []
    for round_ in range(max(4, 2 * k)):
        for kind in order:
            if len(out) >= k:
                return out
            new = apply(text, kind, seed=seed * 1000 + round_)
            if new is not None and normalise(new) not in seen:
                seen.add(normalise(new))
                out.append((kind, new))
    return out


def perturb(text: str, k: int, seed: int = 0, kinds: Sequence[str] = KINDS) -> list[str]:
    """Up to ``k`` meaning-breaking variants of ``text`` (see :func:`perturb_with_kinds`)."""
    return [t for _, t in perturb_with_kinds(text, k, seed, kinds)]
