"""Layout parsing: panels, panel letters, panel kinds; CLI contract; the workflow stage.

Real-figure tests read ../shared/data (or $P2P_SHARED_DATA) through the ``shared_data`` fixture
and skip with a reason when it is absent. Synthetic figures are composed here with known boxes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw, ImageFont

from conftest import load_benchmark
from panel2patch.evaluate.boxes import iou
from panel2patch.layout.cli import process_image
from panel2patch.layout.letters import reading_order
from panel2patch.layout.parse import parse_figure

REPO = Path(__file__).resolve().parents[1]

# Floors a little under what the method reaches on the 18 development figures
# (benchmarks/layout_eval.py: panel F1 1.00, letter accuracy 1.00, kind accuracy 0.81).
DEV_F1_FLOOR = 0.92
DEV_LETTER_FLOOR = 0.92
DEV_KIND_FLOOR = 0.70


def _font(size: int):
    for path in ("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",):
        if Path(path).is_file():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size)


def _plot(draw: ImageDraw.ImageDraw, box, rng) -> None:
    """A small line chart: axes, ticks, a curve, an axis title."""
    x1, y1, x2, y2 = box
    draw.line([(x1 + 30, y1 + 5), (x1 + 30, y2 - 25), (x2 - 5, y2 - 25)], fill="black", width=2)
    for t in range(x1 + 40, x2 - 5, 30):
        draw.line([(t, y2 - 25), (t, y2 - 20)], fill="black", width=1)
    ys = y2 - 30 - (np.cumsum(rng.normal(0, 4, 40)) + 40).clip(0, y2 - y1 - 40)
    xs = np.linspace(x1 + 32, x2 - 8, 40)
    draw.line(list(zip(xs.tolist(), ys.tolist())), fill=(200, 30, 30), width=2)
    draw.text((x1 + 60, y2 - 16), "time (s)", fill="black", font=_font(11))
    draw.rectangle([x1, y1, x2 - 1, y2 - 1], outline=None)


def _grid_figure(rng, letters="ABCDEF", cols=3, rows=2, pw=220, ph=170, gut=36):
    """A grid figure with letters in the gutter at each panel's top-left; returns (image, truth)."""
    W = cols * pw + (cols + 1) * gut
    H = rows * ph + (rows + 1) * gut
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    truth = []
    for k, ch in enumerate(letters):
        r, c = divmod(k, cols)
        x1 = gut + c * (pw + gut)
        y1 = gut + r * (ph + gut)
        box = (x1, y1, x1 + pw, y1 + ph)
        if k % 2:  # a photo-like panel (noise texture)
            tex = rng.integers(0, 255, (ph // 4, pw // 4, 3), dtype=np.uint8)
            img.paste(Image.fromarray(tex).resize((pw, ph), Image.BILINEAR), box[:2])
        else:
            _plot(d, box, rng)
        truth.append((box, ch))
    # Truth = the ink inside each drawn box (a plot's ink starts at its axis), before the letters.
    a = np.asarray(img).min(axis=2) < 250
    for k, (box, ch) in enumerate(truth):
        sub = a[box[1]:box[3], box[0]:box[2]]
        rows, cols = np.flatnonzero(sub.any(1)), np.flatnonzero(sub.any(0))
        truth[k] = ((box[0] + int(cols[0]), box[1] + int(rows[0]), box[0] + int(cols[-1]) + 1,
                     box[1] + int(rows[-1]) + 1), ch)
        d.text((box[0] - 28, box[1] - 30), ch, fill="black", font=_font(22))
    return img, truth


# ------------------------------------------------------------------------------------------------
# synthetic figures


def test_synthetic_grid_exact_recovery():
    rng = np.random.default_rng(0)
    img, truth = _grid_figure(rng)
    res = parse_figure(img)
    assert res["method"] == "letters"
    assert [p["label"] for p in res["panels"]] == [ch for _, ch in truth]
    for p, (box, ch) in zip(res["panels"], truth):
        assert all(abs(a - b) <= 1 for a, b in zip(p["bbox"], box)), (ch, p["bbox"], box)
        lx1, ly1, lx2, ly2 = p["label_bbox"]
        assert lx2 <= box[0] and ly2 <= box[1]  # the letter stands outside its panel
    kinds = [p["kind"] for p in res["panels"]]
    assert kinds[1] == kinds[3] == kinds[5] == "image"


def test_synthetic_lowercase_letters_in_dark_mosaic():
    """Dark tiles separated by 2 px white lines, white letters inside the tiles (CT-style)."""
    W, H = 600, 200
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    rng = np.random.default_rng(1)
    boxes = [(0, 0, 199, 200), (201, 0, 399, 200), (401, 0, 600, 200)]
    for box, ch in zip(boxes, "abc"):
        tex = (rng.random((box[3] - box[1], box[2] - box[0])) * 60).astype(np.uint8)
        img.paste(Image.fromarray(tex).convert("RGB"), box[:2])
        d.ellipse([box[0] + 50, 50, box[0] + 150, 150], fill=(170, 170, 170))
        d.text((box[0] + 6, 4), ch, fill="white", font=_font(16))
    res = parse_figure(img)
    assert [p["label"] for p in res["panels"]] == ["a", "b", "c"]
    for p, box in zip(res["panels"], boxes):
        assert iou(p["bbox"], box) > 0.95
        assert p["kind"] == "image"


def test_letter_followed_by_a_smaller_title_is_a_label():
    """'h Eco-HAB – sociability': a panel letter with its panel's title set smaller right after it,
    a little over the title's word space away, is read as a label (it was taken for the first
    letter of a word, and the panel merged with its neighbour)."""
    from panel2patch.layout.letters import find_labels
    from panel2patch.layout.split import prepare

    rng = np.random.default_rng(3)
    img = Image.new("RGB", (640, 560), "white")
    d = ImageDraw.Draw(img)
    big, small = _font(24), _font(15)
    for k, ch in enumerate("ABCD"):
        r, c = divmod(k, 2)
        x1, y1 = 20 + c * 310, 20 + r * 270
        d.text((x1, y1), ch, fill="black", font=big)
        ink = np.asarray(img)[y1:y1 + 40, x1:x1 + 40].min(axis=2) < 128
        rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
        gh, gx2, gy2 = rows[-1] - rows[0] + 1, x1 + cols[-1] + 1, y1 + rows[-1] + 1
        # the title's capitals about 0.6 of the letter's height, its ink 0.25 of that height away
        ex1, _, _, ey2 = d.textbbox((0, 0), "E", font=small)
        d.text((gx2 + round(0.25 * gh) - ex1, gy2 - ey2), "Eco-HAB sociability", fill="black", font=small)
        _plot(d, (x1 + 10, y1 + 40, x1 + 290, y1 + 250), rng)
    labels, _ = find_labels(prepare(img))
    assert [lab.text for lab in labels] == list("ABCD")


def test_single_panel_figures():
    rng = np.random.default_rng(2)
    photo = Image.fromarray(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)).resize((640, 480))
    res = parse_figure(photo)
    assert len(res["panels"]) == 1 and res["panels"][0]["bbox"] == [0, 0, 640, 480]
    assert res["panels"][0]["label"] is None and res["panels"][0]["kind"] == "image"
    chart = Image.new("RGB", (500, 360), "white")
    _plot(ImageDraw.Draw(chart), (20, 20, 480, 340), rng)
    res = parse_figure(chart)
    assert len(res["panels"]) == 1
    assert res["panels"][0]["kind"] == "chart"


def test_unlabelled_grid_gives_leaf_panels_in_reading_order():
    rng = np.random.default_rng(3)
    img = Image.new("RGB", (700, 500), "white")
    boxes = [(10, 10, 330, 240), (360, 14, 690, 240), (10, 262, 330, 490), (360, 260, 690, 492)]
    for b in boxes:
        tex = rng.integers(0, 255, ((b[3] - b[1]) // 4, (b[2] - b[0]) // 4, 3), dtype=np.uint8)
        img.paste(Image.fromarray(tex).resize((b[2] - b[0], b[3] - b[1])), b[:2])
    res = parse_figure(img)
    assert res["method"] == "gutters"
    assert [p["bbox"] for p in res["panels"]] == [list(b) for b in boxes]


def test_detector_boxes_cut_touching_lettered_panels():
    """``combined``: two photos that touch (no gutter, clean or soft) under letters A and B. Image
    analysis alone gives the single connected component to one letter; detected panel boxes as
    cut hints separate them at the seam."""
    from panel2patch.layout.split import Anchor, prepare, split_labelled

    rng = np.random.default_rng(6)
    img = Image.new("RGB", (600, 300), "white")
    panels = [(20, 50, 300, 290), (300, 50, 580, 290)]
    for b in panels:
        tex = rng.integers(0, 200, ((b[3] - b[1]) // 4, (b[2] - b[0]) // 4, 3), dtype=np.uint8)
        img.paste(Image.fromarray(tex).resize((b[2] - b[0], b[3] - b[1])), b[:2])
    d = ImageDraw.Draw(img)
    letters = [(20, 12, 38, 38), (300, 12, 318, 38)]
    for lb in letters:
        d.rectangle(lb, fill="black")
    canvas = prepare(img)
    anchors = [Anchor((x1, y1, x2 + 1, y2 + 1), k) for k, (x1, y1, x2, y2) in enumerate(letters)]
    alone = split_labelled(canvas, anchors)
    assert sum(r.box is not None for r in alone) == 1  # the touching photos are one component
    dets = [(22, 48, 303, 288), (297, 52, 579, 291)]  # approximate, overlapping by a few pixels
    regions = split_labelled(canvas, anchors, detections=dets)
    assert [r.anchors[0].key for r in regions] == [0, 1] and all(r.method == "proposals" for r in regions)
    for r, truth in zip(regions, panels):
        assert iou(r.box, truth) > 0.97, (r.box, truth)
    # Hints that do not separate the letters (a box over both panels) change nothing.
    same = split_labelled(canvas, anchors, detections=[(10, 40, 590, 295), (15, 45, 585, 292)])
    assert [r.box for r in same] == [r.box for r in alone]


def test_layout_method_needs_a_detector():
    img = Image.new("RGB", (60, 60), "white")
    with pytest.raises(ValueError, match="needs a detector"):
        parse_figure(img, method="combined")
    with pytest.raises(ValueError, match="unknown layout method"):
        parse_figure(img, method="cnn")


def test_reading_order_robust_to_misalignment():
    boxes = [(300, 12, 400, 100), (0, 0, 100, 100), (150, 5, 250, 95), (0, 130, 100, 230), (160, 120, 260, 220)]
    assert reading_order(boxes) == [1, 2, 0, 3, 4]


def test_tiny_and_blank_images_do_not_crash():
    for size in [(1, 1), (3, 40), (40, 3), (64, 64)]:
        res = parse_figure(Image.new("RGB", size, "white"))
        assert len(res["panels"]) <= 1
    res = parse_figure(Image.new("L", (50, 50), 0))
    assert len(res["panels"]) == 1


# ------------------------------------------------------------------------------------------------
# CLI contract


def test_corrupt_image_gives_error_record(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    rec = process_image(str(bad))
    assert rec["image"] == str(bad) and rec["panels"] == [] and "error" in rec
    rec = process_image(str(tmp_path / "missing.jpg"))
    assert "error" in rec and rec["panels"] == []


def test_cli_jsonl_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    img, truth = _grid_figure(rng, letters="ABCD", cols=2, rows=2)
    good = tmp_path / "grid.png"
    img.save(good)
    jpg = tmp_path / "grid.jpg"
    img.save(jpg, quality=90)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "panel2patch.cli", "panels", str(good), str(bad), "grid.jpg", "--out", str(out)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 1, proc.stderr  # one image failed, the others are written
    assert "3 images" in proc.stderr and "1 errors" in proc.stderr
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["image"] for r in recs] == [str(good), str(bad), "grid.jpg"]  # input order, paths as given
    assert "error" in recs[1] and recs[1]["panels"] == []
    for r in (recs[0], recs[2]):
        assert (r["width"], r["height"]) == img.size
        assert [p["label"] for p in r["panels"]] == ["A", "B", "C", "D"]
        for p in r["panels"]:
            assert set(p) >= {"bbox", "label", "label_bbox", "kind", "score"}
            x1, y1, x2, y2 = p["bbox"]
            assert 0 <= x1 < x2 <= r["width"] and 0 <= y1 < y2 <= r["height"]
            assert all(isinstance(v, int) for v in p["bbox"] + p["label_bbox"])
            assert p["kind"] in {"image", "chart", "diagram", "other"}
            assert 0.0 <= p["score"] <= 1.0


# ------------------------------------------------------------------------------------------------
# the workflow stage


def test_stage_writes_tables_and_crops(tmp_path):
    from panel2patch.layout.stage import PANELS, run_layout_shard

    ingest = tmp_path / "results" / "shard-000" / "ingest"
    (ingest / "images").mkdir(parents=True)
    rng = np.random.default_rng(5)
    img, truth = _grid_figure(rng, letters="AB", cols=2, rows=1)
    img.save(ingest / "images" / "a__f1.png")
    (ingest / "images" / "a__f2.png").write_bytes(b"corrupt")
    figs = pd.DataFrame({"figure_id": ["a__f1", "a__f2", "a__f3"],
                         "image_path": ["images/a__f1.png", "images/a__f2.png", "images/a__f3.png"],
                         "image_sha256": ["x", "y", "z"]})
    figs.to_parquet(ingest / "figures.parquet")
    out = tmp_path / "results" / "shard-000" / "layout"
    stats = run_layout_shard(ingest / "figures.parquet", ingest, out, "shard-000",
                             results_dir=tmp_path / "results", cfg={"crop_format": "jpeg"})
    assert stats["figures"] == 3 and stats["panels"] == 2 and stats["skips"] == 2
    panels = pd.read_parquet(out / "panels.parquet")
    assert list(panels.columns) == PANELS.names
    assert panels["label"].tolist() == ["A", "B"]
    assert panels["panel_index"].tolist() == [0, 1]
    for row in panels.itertuples():
        crop = Image.open(out / row.crop_path)
        assert crop.size == (row.bbox[2] - row.bbox[0], row.bbox[3] - row.bbox[1])
    skips = pd.read_parquet(out / "skips.parquet")
    assert dict(zip(skips["figure_id"], skips["reason"])) == {"a__f2": "unreadable-image", "a__f3": "missing-image"}
    assert (tmp_path / "results" / "mlflow" / "mlflow.db").exists()


# ------------------------------------------------------------------------------------------------
# real figures


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("layout_eval")


def test_dev_panels_letters_kinds_floor(shared_data, bench):
    figs = bench.load_dev(shared_data)
    assert len(figs) == 18
    rep = bench.evaluate(figs, "glyph")
    assert rep["f1"] >= DEV_F1_FLOOR, rep["failures"]
    assert rep["letter_acc"] >= DEV_LETTER_FLOOR, rep["failures"]
    assert rep["kind_acc"] >= DEV_KIND_FLOOR


def test_real_single_panel_and_mosaic(shared_data):
    root = shared_data / "panels-gt" / "hand-labelled-dev" / "images"
    res = parse_figure(root / "elife19405_inf1.png")  # a 3-D rendering on a grey backdrop
    assert [p["bbox"] for p in res["panels"]] == [[0, 0, 661, 624]]
    res = parse_figure(root / "fsy_PMC7003341_fig2.png")  # CT mosaic, 1-2 px white separators
    assert [p["label"] for p in res["panels"]] == ["a", "b", "c", "d"]


# ------------------------------------------------------------------------------------------------
# fast paths: the same numbers as the plain computation


def test_box_counts_equal_slicing_on_real_labels(shared_data):
    """Both ways of counting pixels in boxes (gathering every box's pixels at once, or box by
    box) give the integers plain slicing gives, for masks and for a table over component labels,
    with boxes partly or wholly outside the image and empty ones."""
    import cv2

    from panel2patch.layout import letters
    from panel2patch.layout.split import prepare

    canvas = prepare(shared_data / "panels-gt" / "hand-labelled-dev" / "images" / "fsy_PMC7003341_fig3.png")
    m = canvas.gray < 140
    n, lab, _, _ = cv2.connectedComponentsWithStats(m.view(np.uint8), connectivity=8, ltype=cv2.CV_16U)
    table = (np.random.default_rng(0).random(n) < 0.5).astype(np.uint8)
    H, W = m.shape
    rng = np.random.default_rng(1)
    for side in (4, 40):  # small boxes (gathered) and large ones (box by box)
        x1, y1 = rng.integers(-30, W + 5, 300), rng.integers(-30, H + 5, 300)
        x2, y2 = x1 + rng.integers(-3, side, 300), y1 + rng.integers(-3, side, 300)
        for a, t in ((m, None), (lab, table)):
            got = letters._box_counts(a, x1, y1, x2, y2, t)
            want = []
            for b in zip(x1, y1, x2, y2):
                bx1, by1, bx2, by2 = (int(np.clip(v, 0, lim)) for v, lim in zip(b, (W, H, W, H)))
                sub = a[by1:max(by1, by2), bx1:max(bx1, bx2)]
                want.append(int(np.count_nonzero(t[sub] if t is not None else sub)))
            assert got.tolist() == want


def test_fmean_is_numpy_mean():
    from panel2patch.layout.glyphs import fmean

    rng = np.random.default_rng(0)
    for shape in ((20, 20), (7,), (3, 1001)):
        a = rng.random(shape, dtype=np.float32)
        assert fmean(a) == a.mean() and fmean(a).dtype == a.mean().dtype


def test_projected_glyph_scores_match_exact_on_real_candidates(shared_data):
    """The glyph classifier compares in a rank-128 template subspace: on the label candidates of
    real figures its best similarity per class stays within 0.002 of the full 402-dimensional
    one and every candidate gets the same best class; exact mode gives plain dot products."""
    from panel2patch.layout.glyphs import CLASSES, GlyphClassifier, glyph_vectors
    from panel2patch.layout.letters import find_candidates
    from panel2patch.layout.split import prepare

    root = shared_data / "panels-gt" / "hand-labelled-dev" / "images"
    vecs = glyph_vectors([c.mask for name in ("elife32671_fig1.png", "fsy_PMC7003341_fig1.png")
                          for c in find_candidates(prepare(root / name))])
    assert len(vecs) >= 100
    exact, fast = GlyphClassifier(rank=None), GlyphClassifier()
    want = (vecs @ exact.feats.T).reshape(len(vecs), len(CLASSES), -1).max(axis=2)  # class-major templates
    np.testing.assert_allclose(exact.class_scores(vecs), want, rtol=0, atol=1e-5)
    got = fast.class_scores(vecs)
    assert fast.basis.shape == (vecs.shape[1], 128)
    assert np.abs(got - want).max() < 0.002
    assert (got.argmax(axis=1) == want.argmax(axis=1)).all()


def test_area_resize_is_an_area_average(shared_data):
    """The kind features' fast downscale: the requested size, OpenCV's INTER_AREA exactly for
    whole factors, and otherwise an area average on a slightly different grid: the same mean
    grey, every pixel within the range of the pixels it averages, a 1 px line kept."""
    import cv2

    from panel2patch.layout.kind import area_resize
    from panel2patch.layout.split import prepare

    gray = prepare(shared_data / "panels-gt" / "hand-labelled-dev" / "images" / "elife32671_fig1.png").gray
    for h, w, size in ((250, 197, (151, 192)), (768, 576, (144, 192)), (891, 1000, (192, 171)), (600, 451, (144, 192))):
        sub = gray[:h, :w]
        got = area_resize(sub, size)
        want = cv2.resize(sub, size, interpolation=cv2.INTER_AREA)
        assert got.shape == want.shape == (size[1], size[0])
        if h % size[1] == 0 and w % size[0] == 0:
            assert np.array_equal(got, want)
        else:
            assert abs(float(got.mean()) - float(want.mean())) < 0.5
        assert got.min() >= sub.min() and got.max() <= sub.max()
    lines = np.full((300, 300), 255, np.uint8)
    lines[::7] = 0  # 1 px lines, 7 px apart: every one of them darkens its output row
    small = area_resize(lines, (192, 192))
    assert (small.min(axis=1) < 200).sum() >= 300 // 7


def test_batched_glyph_blur_is_opencvs_gaussian_blur():
    """glyph_vectors blurs all glyphs at once with a matrix: the same as OpenCV's GaussianBlur
    (its kernel size and reflect-101 border) on each grid, to float32 rounding."""
    import cv2

    from panel2patch.layout.glyphs import _BLUR, BLUR, GRID

    grids = np.random.default_rng(0).random((5, GRID, GRID), dtype=np.float32)
    grids[1] = 0
    grids[2, :, :3] = 1.0  # ink at the border
    got = _BLUR @ grids @ _BLUR.T
    for g, want in zip(got, grids):
        np.testing.assert_allclose(g, cv2.GaussianBlur(want, (0, 0), BLUR), rtol=0, atol=1e-6)


def test_light_ink_pass_needs_dark_ground(shared_data):
    """Light-on-dark letters are looked for only where the figure has dark ground: a figure of
    line charts (dark text and axes only) has almost no dark 4 x 4 blocks, a CT mosaic half."""
    from panel2patch.layout.letters import _dark_ground_share
    from panel2patch.layout.split import prepare

    root = shared_data / "panels-gt" / "hand-labelled-dev" / "images"
    assert _dark_ground_share(prepare(root / "elife32671_fig2.png").gray) < 0.005
    assert _dark_ground_share(prepare(root / "fsy_PMC7003341_fig2.png").gray) > 0.3
    assert _dark_ground_share(np.zeros((3, 3), np.uint8)) == 1.0


def _picture(h: int, w: int, seed: int) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(seed)
    g = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 18)
    g = 120 + 50 * g / (g.std() + 1e-6) + rng.normal(0, 2, (h, w))
    return np.repeat(np.clip(g, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def test_flat_columns_of_one_picture_are_not_separators(shared_data):
    """Radiographs on black ground (VQA-RAD, tune articles; the thin-separator test alone cut them
    into 2-13 panels along even columns of one picture) stay one panel; two pictures with a drawn
    white line between them are two."""
    for name in ("synpic52988", "synpic31394", "synpic33331"):
        res = parse_figure(shared_data / "vqa-rad" / "data_RAD" / "images" / f"{name}.jpg")
        assert len(res["panels"]) == 1, name
    two = np.zeros((360, 846, 3), np.uint8)
    two[:, :420] = _picture(360, 420, 4)
    two[:, 422:424] = 255
    two[:, 426:] = _picture(360, 420, 5)
    boxes = [p["bbox"] for p in parse_figure(Image.fromarray(two))["panels"]]
    assert len(boxes) == 2 and boxes[0][2] <= 424 <= boxes[1][0]


def test_diagram_figures_and_partial_frames_on_real_pdf_figures(shared_data, tmp_path):
    """Three tune figures of the evaluation set (eLife PDFs, rendered as ingest renders them):
    a figure frame whose outermost column is only the anti-aliased edge of the line (it hid every
    horizontal gutter, so letter C's two plots were cut apart), a circuit diagram whose box edges
    crossed by wires were taken for separator lines, and a flow chart whose framed text box was
    taken for a panel of its own."""
    from conftest import load_benchmark

    from panel2patch.layout.cli import process_image

    ev = load_benchmark("evalset")
    recs = {r["id"]: r for r in ev.load(shared_data)}
    got = {}
    for rid in ("elife_15600_Figure_1", "elife_19532_p44", "elife_19532_p35"):
        path = tmp_path / f"{rid}.png"
        ev.render(recs[rid]["image"], shared_data).save(path)
        got[rid] = process_image(str(path))["panels"]
    assert [p["label"] for p in got["elife_15600_Figure_1"]] == ["A", "B", "C", "D"]
    c = got["elife_15600_Figure_1"][2]["bbox"]
    assert c[0] < 40 and c[2] > 720  # C holds both of its plots
    for rid in ("elife_19532_p44", "elife_19532_p35"):
        assert len(got[rid]) == 1, rid
