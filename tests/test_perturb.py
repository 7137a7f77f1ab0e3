"""Caption perturbations: each kind breaks the meaning while keeping the words it promises to keep,
the output is deterministic for a seed, and the original never comes back."""

from __future__ import annotations

import re

import pytest

from panel2patch.train.perturb import KEEPS_WORDS, KINDS, apply, normalise, perturb, perturb_with_kinds, word_multiset

CAPTIONS = [
    "(A) Red arrows mark the nuclei of tumour cells in the left lobe, while green arrowheads indicate the "
    "membrane. (B) Expression of p53 is higher in tumours than in controls; 12 of 40 samples were positive.",
    "Arrows indicate necrotic regions.",
    "Kidney section without staining, scale bar 50 um.",
    "Panel B shows the upper lung and panel C the lower lung.",
    "H&E staining of liver tissue from treated mice is not different from controls.",
    "cell",
    "",
]

# (kind, caption where it applies, check of the perturbed text)
CASES = [
    ("shuffle", "Arrows mark the nuclei of tumour cells.", None),
    ("noun", "Arrows mark the nuclei of tumour cells.", None),
    ("adjective", "Large red nodules and small green cysts.", None),
    ("relation", "Loss of dystrophin in muscle fibres.", None),
    ("relation", "Tumours are larger than controls.", lambda t: t.lower() == "controls are larger than tumours."),
    ("negation", "The lesion is not enhanced.", lambda t: " not " not in t),
    ("negation", "The lesion is enhanced.", lambda t: "not" in t),
    ("negation", "Kidney section without staining.", lambda t: "without" not in t and "with" in t),
    ("number", "12 of 40 samples were positive.", lambda t: t.startswith("40 of 12")),
    ("letter", "(A) Liver. (B) Kidney.", lambda t: t == "(B) Liver. (A) Kidney."),
    ("laterality", "Lesion in the left upper lobe.", lambda t: t == "Lesion in the right lower lobe."),
    ("laterality", "Left kidney larger than right kidney.", lambda t: t == "Right kidney larger than left kidney."),
    ("clause", "Nuclei are blue, membranes are green; vessels are red.", None),
]


@pytest.mark.parametrize(("kind", "text", "check"), CASES)
def test_each_kind_changes_the_meaning(kind, text, check):
    out = apply(text, kind, seed=0)
    assert out is not None and normalise(out) != normalise(text)
    if kind in KEEPS_WORDS or kind in ("number", "letter") or text.startswith("Left kidney"):
        assert word_multiset(out) == word_multiset(text), (kind, out)
    if check is not None:
        assert check(out), (kind, out)
    if kind == "clause":  # the same clauses, in another order
        split = lambda s: sorted(normalise(c) for c in re.split(r"[,;.]", s) if c.strip())  # noqa: E731
        assert split(out) == split(text)


def test_kinds_that_do_not_apply_give_none():
    assert apply("Arrows indicate necrotic regions.", "number") is None
    assert apply("Arrows indicate necrotic regions.", "laterality") is None
    assert apply("A single clause here", "clause") is None
    assert apply("cell", "shuffle") is None


def test_deterministic_for_a_seed():
    for text in CAPTIONS:
        assert perturb(text, 6, seed=3) == perturb(text, 6, seed=3)
    # different seeds draw differently somewhere
    assert len({tuple(perturb(CAPTIONS[0], 6, seed=s)) for s in range(5)}) > 1


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_never_the_original_and_all_distinct(seed):
    for text in CAPTIONS:
        pairs = perturb_with_kinds(text, 8, seed=seed)
        outs = [t for _, t in pairs]
        assert normalise(text) not in {normalise(t) for t in outs}
        assert len({normalise(t) for t in outs}) == len(outs)
        assert all(kind in KINDS for kind, _ in pairs)
        if len(word_multiset(text)) >= 4:  # a real caption yields the full K
            assert len(outs) == 8, (text, outs)
    assert perturb("", 4) == []  # nothing to perturb: nothing, rather than the original


def test_unknown_kind_raises():
    with pytest.raises(ValueError):
        perturb("Arrows mark nuclei.", 2, kinds=["synonym"])
