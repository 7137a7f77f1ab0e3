"""Alignment of panels with subcaptions and of marker patches with marker phrases.

Real-data tests use the hand-labelled development figures (panel letters read by hand, captions
from JATS) through the ``shared_data`` fixture and skip with a reason without them.
"""

from __future__ import annotations

import json

import pytest

from panel2patch.align import align_panels, align_patches, normalise_label
from panel2patch.text import find_marker_phrases, split_caption

SUBS = {"_shared": "Tumour growth.", "A": "H&E staining.", "B": "Ki67 staining.", "C": "Quantification."}


def by_panel(rows):
    return {r["panel_index"]: r for r in rows if r["panel_index"] is not None}


@pytest.mark.parametrize(
    "label, key, exact",
    [("A", "A", True), ("a", "A", True), ("(b)", "B", True), ("c)", "C", True), ("Ⓓ", "D", True),
     ("b1", "B", False), ("B'", "B", False), ("12", None, False), ("", None, False), (None, None, False)],
)
def test_normalise_label(label, key, exact):
    assert normalise_label(label) == (key, exact)


def test_roman_labels():
    assert normalise_label("ii", roman=True) == ("ii", True)
    assert normalise_label("I", roman=True) == ("i", True)


def test_letter_matching_case_insensitive():
    rows = align_panels([{"index": 0, "label": "a"}, {"index": 1, "label": "(B)"}, {"index": 2, "label": "c"}], SUBS)
    assert [(r["key"], r["method"], r["confidence"]) for r in rows] == [("A", "letter", 1.0), ("B", "letter", 1.0),
                                                                       ("C", "letter", 1.0)]
    assert rows[0]["text"] == "H&E staining. Tumour growth."  # own words first
    assert all(r["reason"] is None for r in rows)


def test_reading_order_when_no_letters_read():
    rows = align_panels([{"index": 2, "label": None}, {"index": 0, "label": None}, {"index": 1, "label": None}], SUBS)
    assert [(r["panel_index"], r["key"], r["method"]) for r in rows] == [(0, "A", "order"), (1, "B", "order"),
                                                                        (2, "C", "order")]
    assert all(0 < r["confidence"] < 1 and r["reason"] for r in rows)


def test_counts_differ_keeps_everything_unmatched():
    rows = align_panels([{"index": 0, "label": None}, {"index": 1, "label": None}], SUBS)
    assert [r["method"] for r in rows] == ["none"] * 5
    assert [r["key"] for r in rows if r["panel_index"] is None] == ["A", "B", "C"]
    assert all(r["reason"] for r in rows)


def test_gap_filled_by_order_between_letters():
    rows = align_panels([{"index": 0, "label": "A"}, {"index": 1, "label": None}, {"index": 2, "label": "C"}], SUBS)
    assert [(r["key"], r["method"]) for r in rows] == [("A", "letter"), ("B", "order"), ("C", "letter")]


def test_unmatched_panels_and_subcaptions_kept_with_reason():
    rows = align_panels([{"index": 0, "label": "A"}, {"index": 1, "label": "X"}, {"index": 2, "label": "7"}], SUBS)
    p = by_panel(rows)
    assert p[0]["key"] == "A"
    assert p[1]["method"] == "none" and "'X' not in caption" in p[1]["reason"]
    assert p[2]["method"] == "none" and "not a panel letter" in p[2]["reason"]
    left = [r for r in rows if r["panel_index"] is None]
    assert [(r["key"], r["method"], r["reason"]) for r in left] == [("B", "none", "no panel labelled B"),
                                                                   ("C", "none", "no panel labelled C")]


def test_duplicate_and_variant_labels_lower_confidence():
    rows = align_panels([{"index": 0, "label": "A"}, {"index": 1, "label": "A"}, {"index": 2, "label": "b1"}], SUBS)
    p = by_panel(rows)
    assert p[0]["key"] == p[1]["key"] == "A" and p[0]["confidence"] < 1 and "2 panels" in p[0]["reason"]
    assert p[2]["key"] == "B" and p[2]["confidence"] < 1 and "read as B" in p[2]["reason"]


def test_roman_and_positional_keys():
    subs = split_caption("Histology. (i) H&E staining. (ii) IHC for p53.")
    rows = align_panels([{"index": 0, "label": "ii"}, {"index": 1, "label": "i"}], subs)
    assert [(r["panel_index"], r["key"]) for r in rows] == [(0, "ii"), (1, "i")]
    subs = split_caption("Histology. Left panel: H&E staining. Right panel: IHC for AR.")
    rows = align_panels([{"index": 0, "label": None}, {"index": 1, "label": None}], subs)
    assert [(r["key"], r["method"]) for r in rows] == [("left", "order"), ("right", "order")]


def test_caption_without_panels():
    subs = {"_shared": "A single micrograph."}
    assert align_panels([{"index": 0, "label": None}], subs)[0]["text"] == "A single micrograph."
    rows = align_panels([{"index": 0, "label": "A"}, {"index": 1, "label": "B"}], subs)
    assert [r["method"] for r in rows] == ["none", "none"]
    assert align_panels([], SUBS) == [
        {"panel_index": None, "key": k, "text": f"{SUBS[k]} Tumour growth.", "method": "none", "confidence": 0.0,
         "reason": f"no panel labelled {k}"} for k in "ABC"
    ]


def test_hand_labelled_figures_align_by_letter(shared_data):
    records = json.loads((shared_data / "panels-gt" / "hand-labelled-dev" / "annotations.json").read_text())
    checked = 0
    for rec in records:
        subs_gold = rec.get("subcaptions") or {}
        if not rec.get("caption") or len(subs_gold) < 2:
            continue
        panels = [{"index": i, "label": p.get("label")} for i, p in enumerate(rec["panels"])]
        rows = align_panels(panels, split_caption(rec["caption"]))
        for i, p in enumerate(rec["panels"]):
            row = by_panel(rows)[i]
            if p.get("label") and p["label"].upper() in subs_gold:
                assert row["key"] == p["label"].upper() and row["method"] == "letter", (rec["id"], p["label"])
                checked += 1
    assert checked >= 25


# ------------------------------------------------------------------------------------------------
# patches <-> marker phrases

CAPTION = ("Tumours. (A) H&E; red arrows indicate necrosis. (B) Ki67 in tumour cells (arrowhead). "
           "(C) Mitoses (asterisks).")


def test_align_patches_by_panel_type_and_colour():
    markers = find_marker_phrases(CAPTION)
    patches = [
        {"index": 0, "panel_label": "A", "type": "arrow", "colour": "red"},
        {"index": 1, "panel_label": "a", "type": "arrow", "colour": None},
        {"index": 2, "panel_label": "B", "type": "arrowhead", "colour": None},
        {"index": 3, "panel_label": "B", "type": "arrowhead", "colour": None},
        {"index": 4, "panel_label": "A", "type": "arrow", "colour": "white"},
        {"index": 5, "panel_label": "B", "type": "asterisk", "colour": None},
    ]
    rows = align_patches(patches, markers)
    got = {r["patch_index"]: r for r in rows if r["patch_index"] is not None}
    assert got[0]["phrase"] == got[1]["phrase"] == "necrosis" and got[0]["score"] > got[1]["score"]
    assert got[2]["phrase"] == "Ki67 in tumour cells"
    assert not got[3]["paired"] and "already taken" in got[3]["reason"]  # one arrowhead, one patch
    assert not got[4]["paired"] and "colour" in got[4]["reason"]
    assert not got[5]["paired"] and "panel" in got[5]["reason"]
    left = [r for r in rows if r["patch_index"] is None]
    assert [(r["phrase"], r["paired"]) for r in left] == [("Mitoses", False)]
    assert "no detected asterisk patch in panel C" == left[0]["reason"]


def test_align_patches_shared_phrase_fits_any_panel():
    markers = find_marker_phrases("Tumours. (A) H&E. (B) Ki67. Arrows indicate mitoses.")
    assert markers[0]["labels"] == []
    rows = align_patches([{"index": 0, "panel_label": "B", "type": "arrowhead", "colour": None}], markers)
    assert rows[0]["paired"] and rows[0]["phrase"] == "mitoses" and rows[0]["reason"]


def test_align_patches_missing_colour_from_a_table_matches_any_colour():
    # Parquet gives NaN for a phrase without a colour ("(arrows)"): it must not read as colour "nan"
    patches = [{"index": 0, "panel_label": "C", "type": "arrow", "colour": "blue"},
               {"index": 1, "panel_label": "C", "type": "arrow", "colour": "white"}]
    phrases = [{"type": "arrow", "colour": float("nan"), "count": None, "labels": ["C"], "phrase": "GamGFP foci"}]
    out = align_patches(patches, phrases)
    assert [(o["patch_index"], o["paired"], o["phrase"]) for o in out] == [(0, True, "GamGFP foci"), (1, True, "GamGFP foci")]


def test_align_patches_empty():
    assert align_patches([], []) == []
    rows = align_patches([{"index": 0, "panel_label": None, "type": "arrow", "colour": None}], [])
    assert rows == [{"patch_index": 0, "marker_index": None, "phrase": None, "score": 0.0, "paired": False,
                     "reason": "no marker phrase in the caption"}]


def test_align_stage_tables(tmp_path, monkeypatch):
    import pandas as pd

    from panel2patch.align.stage import PANEL_TEXT, run_align_shard
    from panel2patch.ingest.tables import write_table
    from panel2patch.text.stage import SUBCAPTIONS, caption_rows

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("P2P_MLFLOW_PARENT", raising=False)
    refs = [{"sentence": "Cells grow (Fig. 1B).", "panels": ["B"]}]
    subs, _ = caption_rows("f1", "Title. (A) Control. (B) Treated. (C) Merge.", refs)
    subs2, _ = caption_rows("f2", "A single micrograph.", [])
    write_table(subs + subs2, SUBCAPTIONS, tmp_path / "subcaptions.parquet")
    panels = pd.DataFrame({"figure_id": ["f1", "f1", "f2"], "panel_index": [0, 1, 0], "label": ["a", "B", None]})
    panels.to_parquet(tmp_path / "panels.parquet")
    stats = run_align_shard(tmp_path / "panels.parquet", tmp_path / "subcaptions.parquet", tmp_path / "pt.parquet",
                            "manual", tmp_path / "results")
    out = pd.read_parquet(tmp_path / "pt.parquet")
    assert list(out.columns) == PANEL_TEXT.names
    f1 = out[out.figure_id == "f1"]
    assert f1[["key", "method"]].values.tolist() == [["A", "letter"], ["B", "letter"], ["C", "none"]]
    assert f1.panel_index.tolist()[:2] == [0, 1] and pd.isna(f1.panel_index.iloc[2])
    assert f1.iloc[1].text == "Treated. Title." and list(f1.iloc[1].inline_refs) == ["Cells grow (Fig. 1B)."]
    f2 = out[out.figure_id == "f2"].iloc[0]
    assert (f2.method, f2.text) == ("order", "A single micrograph.")
    assert stats["panels"] == 3 and stats["unmatched_subcaptions"] == 1
