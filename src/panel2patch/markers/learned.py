"""The learned marker detector: a torchvision Faster R-CNN, trained from scratch on real image
panels with drawn marker overlays; and its use as the ``"learned"`` proposal source.

Classes: arrow, arrowhead, asterisk (asterisks and stars), other (chevrons / open arrowheads).

Training data (:class:`MarkerPanels`): a bank of real image panels - VQA-RAD radiology images
(CC0; only the ``tune`` half of :func:`~panel2patch.markers.synthetic.split_of`, so the
benchmark's ``held-back`` images are never trained on), EXSCLAIM micrograph panels (letters
painted over) and the procedural micrographs and blots of :mod:`panel2patch.layout.synthetic` -
each item a random crop at a random size, sometimes grey-scaled or JPEG-compressed, with 0-6
markers drawn by ``synthetic.overlay(varied=True)`` (many arrow styles, widths, heads, outlines,
colours incl. white/black/grey, sizes, rotations, partial occlusion) plus text and scale-bar
distractors. Item ``i`` of a seed is always the same image.

Network, training loop, checkpoints/resume and the versioned artifact (``.pt`` + ``.json``
sidecar with sha256, MLflow run ``train_marker_detector:<name>``) are the panel detector's
(:mod:`panel2patch.torchdet`), with FPN levels at strides 8/16/32 (torchvision's MobileNet
default has stride 32 only, too coarse for 10-60 px markers) and anchors of 12-192 px at aspect
1:2 to 2:1; the network sees the panel at long side ``image_size``.

Sizes on one shared CPU thread (``benchmarks/markers_eval.py --weights ...``; recall /
precision at IoU >= 0.3, type-agnostic matching; dev = the 18 hand-labelled dev figures, 8 arrows):

* ``PRESETS["demo"]`` (the defaults: 160 panels, 40 steps of 4 at 384 px): a smoke-test model
  (~2 min), detects little.
* ``PRESETS["cpu20"]`` (2,000 panels, 500 steps of 4 at 320 px, ~12 CPU min / 20 min wall on a
  shared machine; loss 1.41 -> 0.83): at ``learned_score`` 0.5 (chosen on the synthetic tune
  split) synthetic held-back R 0.62 / P 0.39, dev R 0.88 / P 0.18 (7 of 8 arrows; false
  positives on unmarked radiographs), 130-330 ms per panel. WORSE than the heuristic (held-back
  R 0.92 / P 0.99, dev R 1.0 / P 0.89): the box classifier has not learned the types yet (type
  accuracy 0.26, almost every box "arrow", scores <= ~0.58), while the RPN localises most
  markers. ``both`` raises recall (held-back 0.96, dev 1.0) at a large precision cost (0.53,
  0.21). Needs a much longer run (``PRESETS["large"]``, a GPU) before it helps.

Inference (:func:`proposals`): boxes of score >= ``learned_score``; the glyph inside each box is
segmented with the image-analysis cues (colour / white / black masks of
:mod:`panel2patch.markers.detect`) to name its colour and, for arrows, arrowheads and chevrons,
to find the tip and pointing direction with the same shape code as the heuristic detector.
"""

from __future__ import annotations

import io
import logging
import math
import time
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from .. import torchdet
from . import synthetic

log = logging.getLogger(__name__)

FORMAT = "panel2patch-marker-detector/1"
CLASSES = ("__background__", "arrow", "arrowhead", "asterisk", "other")

MODEL_KEYS = {
    **torchdet.MODEL_KEYS,
    "image_size": 384,
    "returned_layers": [2, 3, 5],      # FPN on strides 8, 16, 32 (+ pool): markers are 10-60 px
    "anchor_sizes": [[12, 20], [32, 48], [64, 96], [128, 192]],   # per FPN level
    "aspect_ratios": [0.5, 1.0, 2.0],
    "box_detections_per_img": 50,
}
DEFAULTS = {
    **MODEL_KEYS,
    "n_images": 160,                   # synthetic marker panels drawn for training
    **torchdet.TRAIN_KEYS,
    "sources": {
        "vqa_rad": None,               # VQA-RAD folder (its "tune" half only)
        "exsclaim": None,              # EXSCLAIM folder: micrograph panels
        "textures": 60,                # procedural micrographs and blots
        "max_side": 640,               # bank images are downscaled to this long side
        "limit": None,                 # at most this many real images per source
    },
    "max_markers": 8,                  # markers per panel: 0..max_markers
}
PRESETS = {
    "demo": {},
    # ~15-20 CPU min on one shared thread: 500 steps x 4 panels at 320 px
    "cpu20": {"n_images": 2000, "image_size": 320, "warmup_steps": 30, "checkpoint_every": 100,
              "sources": {"textures": 200}},
    # for a GPU or a long CPU job (not measured here)
    "large": {"n_images": 20000, "epochs": 2, "image_size": 512, "sources": {"textures": 400}},
}


def resolve_config(cfg: dict | None = None, preset: str | None = None) -> dict:
    """DEFAULTS, then a preset, then ``cfg``; unknown keys are an error."""
    return torchdet.resolve_config(DEFAULTS, PRESETS, cfg, preset, what="marker detector")


def model_config(cfg: dict) -> dict:
    return {k: cfg[k] for k in MODEL_KEYS}


def build_model(model_cfg: dict, classes=CLASSES) -> torch.nn.Module:
    """The network of ``model_cfg`` (a full :func:`model_config`, as stored in an artifact)."""
    return torchdet.build_model(model_cfg, len(classes))


# ----------------------------------------------------------------------------- training data


def build_bank(src: dict, seed: int = 0, keep=None) -> list:
    """Real and procedural image panels (``layout.synthetic.Source``) that markers are drawn on;
    ``keep(file name)`` picks the VQA-RAD images (default: the ``tune`` half of
    :func:`~panel2patch.markers.synthetic.split_of`)."""
    from ..layout import synthetic as fig

    ms, lim = int(src["max_side"]), src.get("limit")
    items = []
    if src.get("vqa_rad"):
        keep = keep or (lambda name: synthetic.split_of(name) == "tune")
        items += fig.load_vqa_rad(src["vqa_rad"], ms, lim, keep=keep)
    if src.get("exsclaim"):
        items += [s for s in fig.load_exsclaim(src["exsclaim"], ms, lim) if s.kind == "micrograph"]
    rng = np.random.default_rng([seed, 104729])
    for _ in range(int(src["textures"])):
        im, kind = fig.render_texture(rng)
        items.append(fig.Source(im, kind, f"texture-{kind}"))
    if not items:
        raise ValueError("no marker detector sources: configure real images or textures")
    return items


class MarkerPanels:
    """``n`` synthetic marker panels; ``ds[i]`` -> (CHW float tensor at long side ``image_size``,
    ``{"boxes", "labels"}``); ``ds.panel(i)`` -> (HxWx3 uint8 at drawing size, markers)."""

    def __init__(self, bank: list, n: int, seed: int = 0, image_size: int = 384, max_markers: int = 6):
        self.bank, self.n, self.seed, self.image_size, self.max_markers = bank, int(n), int(seed), int(image_size), int(max_markers)

    def __len__(self) -> int:
        return self.n

    def panel(self, i: int):
        rng = np.random.default_rng([self.seed, 31337, i])
        src = self.bank[int(rng.integers(len(self.bank)))].image
        a = np.asarray(src.convert("RGB"))
        H, W = a.shape[:2]
        if rng.random() < 0.5:  # a random crop (panels are often parts of larger images)
            h, w = int(H * rng.uniform(0.5, 1.0)), int(W * rng.uniform(0.5, 1.0))
            y, x = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
            a = a[y:y + h, x:x + w]
        long_side = int(rng.integers(int(0.7 * self.image_size), int(1.7 * self.image_size)))
        s = long_side / max(a.shape[:2])
        a = cv2.resize(a, (max(24, round(a.shape[1] * s)), max(24, round(a.shape[0] * s))),
                       interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        if rng.random() < 0.25:
            a = np.repeat(cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
        img, markers = synthetic.overlay(a, rng, n=(0, self.max_markers), types=CLASSES[1:], varied=True)
        if rng.random() < 0.2:  # figures are often JPEG
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, "JPEG", quality=int(rng.integers(60, 95)))
            img = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
        return img, markers

    def __getitem__(self, i: int):
        img, markers = self.panel(i)
        s = self.image_size / max(img.shape[:2])
        img = cv2.resize(img, (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))),
                         interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
        boxes = torch.tensor([m["bbox"] for m in markers], dtype=torch.float32).reshape(-1, 4) * s
        labels = torch.tensor([CLASSES.index(m["type"]) for m in markers], dtype=torch.int64)
        return torchdet.to_tensor(img), {"boxes": boxes, "labels": labels}


def train_marker_detector(cfg: dict | None, out_path: str | Path, progress: bool = True,
                          results_dir: str | Path = "results", tracking_cfg: dict | None = None,
                          resume: bool = True) -> dict:
    """Train the marker detector described by ``cfg`` (see :func:`resolve_config`); write
    ``out_path`` plus its JSON sidecar; return the sidecar's content."""
    cfg = resolve_config(cfg)
    torch.set_num_threads(int(cfg["threads"]))
    cv2.setNumThreads(1)
    seed = int(cfg["seed"])
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    bank = build_bank(cfg["sources"], seed)
    t_bank = time.perf_counter() - t0
    used: dict[str, int] = {}
    for s in bank:
        used[s.origin] = used.get(s.origin, 0) + 1
    from ..layout.synthetic import Sources

    ds = MarkerPanels(bank, cfg["n_images"], seed, cfg["image_size"], cfg["max_markers"])
    return torchdet.train(
        build_model(model_config(cfg)), ds, cfg, out_path, stage="train_marker_detector", fmt=FORMAT,
        model_cfg=model_config(cfg), classes=list(CLASSES), progress=progress, results_dir=results_dir,
        tracking_cfg=tracking_cfg, resume=resume,
        meta_extra={"sources_used": dict(sorted(used.items())), "sources_sha256": Sources(bank).fingerprint(),
                    "sources_seconds": round(t_bank, 2), "held_back_excluded": "vqa-rad split_of == held-back"})


# ----------------------------------------------------------------------------- inference


def _marker_postprocess(self, class_logits, box_regression, proposals, image_shapes):
    """RoIHeads.postprocess_detections, one detection per box: score = 1 - P(background) (is it a
    marker at all), type = the likeliest marker class. torchvision's default scores each class
    apart, which splits an unsure box's probability over the four marker types."""
    from torchvision.ops import boxes as box_ops

    pred_boxes = self.box_coder.decode(box_regression, proposals)
    pred_scores = torch.nn.functional.softmax(class_logits, -1)
    per_image = [len(b) for b in proposals]
    out_boxes, out_scores, out_labels = [], [], []
    for boxes, scores, shape in zip(pred_boxes.split(per_image), pred_scores.split(per_image), image_shapes):
        boxes = box_ops.clip_boxes_to_image(boxes, shape)
        labels = scores[:, 1:].argmax(1) + 1
        score = 1 - scores[:, 0]
        boxes = boxes[torch.arange(len(labels)), labels]
        keep = torch.where(score > self.score_thresh)[0]
        keep = keep[box_ops.remove_small_boxes(boxes[keep], 1e-2)]
        keep = keep[box_ops.nms(boxes[keep], score[keep], self.nms_thresh)][: self.detections_per_img]
        out_boxes.append(boxes[keep])
        out_scores.append(score[keep])
        out_labels.append(labels[keep])
    return out_boxes, out_scores, out_labels


def load_marker_detector(path: str | Path, verify: bool = True) -> torch.nn.Module:
    """A model written by :func:`train_marker_detector`, in eval mode (sha256 checked), scoring
    each box once as 1 - P(background) (:func:`_marker_postprocess`)."""
    import types

    model = torchdet.load(path, FORMAT, build_model, verify, what="marker detector")
    model.roi_heads.postprocess_detections = types.MethodType(_marker_postprocess, model.roi_heads)
    return model


@lru_cache(maxsize=4)
def _cached(path: str, mtime: float) -> torch.nn.Module:
    return load_marker_detector(path)


def get_model(path: str | Path) -> torch.nn.Module:
    """The model at ``path``, loaded once per process (reloaded when the file changes)."""
    path = Path(path)
    return _cached(str(path.resolve()), path.stat().st_mtime)


def _tip_from_mask(comp: np.ndarray):
    """Tip and direction of a glyph mask that the shape rules did not accept: along the principal
    axis, the head is the wider end; the tip is the farthest point of that end."""
    from .detect import _principal

    ys, xs = np.nonzero(comp)
    if len(xs) < 6:
        return None, None
    pts = np.stack([xs, ys], 1).astype(np.float64)
    c, ax, nrm = _principal(pts)
    t, s = (pts - c) @ ax, (pts - c) @ nrm
    lo, hi = np.quantile(t, 0.35), np.quantile(t, 0.65)
    w_lo = np.ptp(s[t <= lo]) if (t <= lo).sum() > 1 else 0.0
    w_hi = np.ptp(s[t >= hi]) if (t >= hi).sum() > 1 else 0.0
    d = ax if w_hi >= w_lo else -ax
    proj = (pts - c) @ d
    return pts[proj >= proj.max() - 1.0].mean(axis=0), d


def refine(rgb: np.ndarray, m: dict, params: dict) -> dict:
    """Colour, tip and direction of a learned box from the glyph inside it (image-analysis cues)."""
    from .detect import _classify, colour_name

    H, W = rgb.shape[:2]
    x1, y1, x2, y2 = m["bbox"]
    pad = max(2, int(0.15 * max(x2 - x1, y2 - y1)))
    X1, Y1, X2, Y2 = max(0, x1 - pad), max(0, y1 - pad), min(W, x2 + pad), min(H, y2 + pad)
    crop = rgb[Y1:Y2, X1:X2]
    if crop.size == 0:
        return m
    gray = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
    chroma = crop.max(axis=2).astype(np.int16) - crop.min(axis=2).astype(np.int16)
    masks = [("colour", chroma >= params["chroma_lo"]), ("white", (gray >= params["white_level"] - 15) & (chroma < 40)),
             ("black", gray <= params["black_level"] + 15)]
    box = [x1 - X1, y1 - Y1, x2 - X1, y2 - Y1]
    best = None
    from .detect import iou

    for name, mk in masks:
        if not mk.any():
            continue
        n, lab, stats, _ = cv2.connectedComponentsWithStats(mk.astype(np.uint8), connectivity=8)
        for i in range(1, n):
            x, y, w, h, a = stats[i]
            if a < 6:
                continue
            q = iou([x, y, x + w, y + h], box)
            if best is None or q > best[0]:
                best = (q, name, (lab[y:y + h, x:x + w] == i).astype(np.uint8), x, y)
    if best is None or best[0] < 0.4:
        return m
    _, name, comp, x, y = best
    pix = crop[y:y + comp.shape[0], x:x + comp.shape[1]][comp > 0]
    out = {**m, "colour": colour_name(pix.mean(axis=0)) if name == "colour" else name}
    if m["type"] in ("arrow", "arrowhead", "other"):
        r = _classify(comp, allow_other=True, tri_fill=0.0)
        tip, d = (r[2], r[3]) if r is not None and r[2] is not None else _tip_from_mask(comp)
        if tip is not None:
            out["tip"] = [float(tip[0] + x + X1), float(tip[1] + y + Y1)]
            out["direction"] = [float(d[0]), float(d[1])]
    return out


def proposals(rgb: np.ndarray, params: dict) -> list[dict]:
    """The ``"learned"`` source: boxes of the model at ``params["weights"]`` with score >=
    ``params["learned_score"]``, refined by :func:`refine`; markers in ``rgb``'s pixels."""
    model = get_model(params["weights"])
    model.roi_heads.score_thresh = min(0.05, float(params["learned_score"]))  # torchvision drops < 0.05 itself
    out = torchdet.predict(model, rgb)
    classes = model.p2p_classes or CLASSES
    found = []
    for box, lab, score in zip(out["boxes"], out["labels"], out["scores"]):
        if score < params["learned_score"]:
            continue
        b = [int(math.floor(box[0])), int(math.floor(box[1])), int(math.ceil(box[2])), int(math.ceil(box[3]))]
        m = {"type": classes[lab], "bbox": b, "colour": None, "tip": None, "direction": None,
             "score": round(float(score), 4), "source": "learned"}
        found.append(refine(rgb, m, params))
    return found
