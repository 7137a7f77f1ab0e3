"""The real evaluation set: article split, records, image recipes, and the parse scorer."""

from __future__ import annotations

import json

import numpy as np
from conftest import load_benchmark

from panel2patch.evaluate.split import split_of


def test_split_is_by_article_and_stable():
    assert split_of("elife-00790") == split_of("elife-00790")
    shares = [split_of(f"article-{i}") == "check" for i in range(2000)]
    assert 0.55 < np.mean(shares) < 0.65


def test_records_load_with_splits_and_render(shared_data):
    ev = load_benchmark("evalset")
    recs = ev.load(shared_data)
    ids = [r["id"] for r in recs]
    assert len(ids) == len(set(ids)) and len(recs) >= 150
    assert len({r["source"] for r in recs}) >= 6
    by_art = {}
    for r in recs:
        assert r["split"] in ("tune", "check")
        if not r["looked_at"]:
            by_art.setdefault(r["article"], set()).add(r["split"])
        if r["source"] == "hand-labelled-dev":
            assert r["split"] == "tune"  # tuned on by earlier work
    assert all(len(s) == 1 for s in by_art.values())  # an article never straddles the split
    # every labelled box lies inside its image; PDF recipes render to the recorded size
    for r in recs:
        for p in r.get("panels") or []:
            x1, y1, x2, y2 = p["bbox"]
            assert 0 <= x1 < x2 <= r["width"] and 0 <= y1 < y2 <= r["height"], (r["id"], p)
        for m in r.get("markers") or []:
            x1, y1, x2, y2 = m["bbox"]
            assert 0 <= x1 < x2 <= r["width"] and 0 <= y1 < y2 <= r["height"], (r["id"], m)
    pdf = next(r for r in recs if "pdf" in r["image"])
    img = ev.render(pdf["image"], shared_data)
    assert img.size == (pdf["width"], pdf["height"])


def test_scorer_counts_tips_patches_and_ignored_boxes():
    pe = load_benchmark("parse_eval")
    rec = {"markers": [{"type": "arrow", "bbox": [10, 10, 30, 20], "tip": [10, 15]},
                       {"type": "arrowhead", "bbox": [50, 50, 60, 60], "tip": [50, 50]}],
           "markers_non_image": [{"type": "arrow", "bbox": [100, 100, 120, 110]}]}
    pred = [{"type": "arrow", "bbox": [10, 10, 30, 20], "tip": [12, 15]},       # tip 2 px off: within half
            {"type": "arrowhead", "bbox": [50, 50, 61, 61], "tip": [60, 60]},   # tip at the wrong end
            {"type": "arrow", "bbox": [100, 100, 120, 110], "tip": None},        # on a chart arrow: ignored
            {"type": "arrow", "bbox": [200, 200, 220, 210], "tip": None}]        # false positive
    patches = [{"bbox": [0, 5, 12, 25], "marker_indices": [0]}, {"bbox": [58, 58, 80, 80], "marker_indices": [1]}]
    s = pe.Score()
    s.markers(pred, patches, rec)
    m = s.report()["markers"]
    assert m["R"] == 1.0 and m["P"] == round(2 / 3, 3)
    assert m["tip_within_half"] == 0.5 and m["patch_contains_tip"] == 0.5
    s2 = pe.Score()
    s2.panels([{"bbox": [0, 0, 10, 10], "label": "a"}, {"bbox": [20, 0, 30, 10], "label": "c"}],
              [{"bbox": [0, 0, 10, 10], "label": "A"}, {"bbox": [20, 0, 30, 10], "label": "B"},
               {"bbox": [40, 0, 50, 10], "label": "C"}])
    p = s2.report()["panels"]
    assert p["P"] == 1.0 and p["R"] == round(2 / 3, 3) and p["letters"] == 0.5
    json.dumps(p)


def test_scaled_run_maps_predictions_back_to_the_labelled_pixels(shared_data):
    """``--scale``: the commands run on a resized copy; their boxes, letter boxes, tips and patches
    come back in the labelled image's pixels, so a figure parsed right at 1.5x scores as at 1x."""
    ev, pe = load_benchmark("evalset"), load_benchmark("parse_eval")
    item = {"bbox": [30, 60, 90, 120], "label_bbox": [30, 60, 36, 70], "tip": [45.0, 75.0], "label": "a"}
    assert pe._unscale([item], 1.5) == [{"bbox": [20, 40, 60, 80], "label_bbox": [20, 40, 24, 140 / 3],
                                         "tip": [30.0, 50.0], "label": "a"}]
    assert pe._unscale([item], 1.0)[0] is item
    recs = [r for r in ev.load(shared_data) if r["id"] == "elife32671_fig1"]
    for scale in (1.0, 1.5):
        out = pe.run(recs, scale=scale)
        p = out["groups"]["tune/hand-labelled-dev"]["panels"]
        assert out["scale"] == scale and p["F1"] == 1.0 and p["letters"] == 1.0, (scale, p)
