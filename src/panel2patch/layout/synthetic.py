"""Synthetic compound figures composed from real single-panel images, to train the panel detector.

A figure is drawn by :func:`make_figure` from a :class:`Sources` bank:

* **real single-panel images**: VQA-RAD radiology images (CC0), panels cut from the EXSCLAIM
  Nature Communications figures (CC-BY, panel polygons from ``nature_closed_expected.json``;
  printed letters inside a crop are painted over), and optionally panels cut from other
  hand-labelled figure sets (``annotations.json`` in the hand-labelled-dev schema);
* **rendered panels**: matplotlib charts (bar, line, scatter, box, histogram, heat map, ROC,
  survival curves), simple diagrams (boxes, arrows, text, cartoon cells) and procedural
  "micrographs" (fluorescence, H&E-like stains, greyscale EM-like texture, western blots).

The hand-labelled dev figures are the evaluation set, so by default nothing is cut from them
(nor from the articles they come from: elife-32671, the SciELO BJMBR article, the elife-bot
packages): pass their ``annotations.json`` in ``panel_gt`` only for a production model that is
not evaluated on them.

Layouts: uniform grids, rows with their own column counts and widths, recursive (guillotine)
splits that give spanning panels, single panels; gutters white, black, none (panels abut) or thin
separator lines; panel borders, insets, scale bars and arrows inside panels; column headers and
figure frames outside them; printed panel letters ("A", "a", "(a)", "A.", "a)" ...) in DejaVu
Sans/Serif, normal or bold, of varied size and colour, inside a panel corner or outside it (above
or left). Several images under one letter form one panel (its leaf boxes are ``subpanels``), as in
the hand-labelled convention; without letters every image is a panel.

Targets follow the hand-labelled convention: boxes ``[x1, y1, x2, y2]`` in pixels, x2/y2
exclusive; a panel box is tight around the panel's content and excludes a letter printed outside
it; a letter box is tight around the letter's ink, brackets included. Everything is a pure
function of the ``numpy.random.Generator`` passed in (and of the sources), so a seed gives the
same figure on every machine.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

log = logging.getLogger(__name__)

FONT_DIR = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
FONTS = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf")
LETTER_STYLES = ("{}", "{}", "{}", "({})", "{}.", "{})", "{},")
# class ids of the detector targets (0 is background)
PANEL, LABEL = 1, 2
KINDS = ("radiology", "micrograph", "chart", "diagram", "blot")

DEFAULT_SOURCES = {
    "vqa_rad": None,          # folder of VQA-RAD (holds data_RAD/images or the images themselves)
    "exsclaim": None,         # folder holding nature_closed_expected.json and images/
    "panel_gt": [],           # annotations.json files (hand-labelled schema) to cut panels from
    "charts": 120,            # matplotlib charts rendered into the bank
    "diagrams": 40,
    "textures": 80,           # procedural micrographs and blots
    "max_side": 480,          # bank images are downscaled to this long side
    "limit": None,            # at most this many real images per source (None: all)
}


# ----------------------------------------------------------------------------- sources


@dataclass
class Source:
    image: Image.Image        # RGB
    kind: str                 # one of KINDS
    origin: str               # "vqa-rad", "exsclaim", "chart", ... (for the sidecar's summary)
    dark: bool = False        # mostly dark pixels (letters drawn on it are light)


@dataclass
class Sources:
    items: list[Source] = field(default_factory=list)

    def __post_init__(self):
        self._by_kind: dict[str, list[int]] = {}
        for i, s in enumerate(self.items):
            self._by_kind.setdefault(s.kind, []).append(i)

    def kinds(self) -> list[str]:
        return sorted(self._by_kind)

    def pick(self, rng: np.random.Generator, kind: str | None = None) -> Source:
        pool = self._by_kind.get(kind) if kind else None
        if not pool:
            return self.items[int(rng.integers(len(self.items)))]
        return self.items[pool[int(rng.integers(len(pool)))]]

    def fingerprint(self) -> str:
        """sha256 over every bank image's pixels, kind and origin, in order (the training data's identity)."""
        h = hashlib.sha256()
        for s in self.items:
            h.update(f"{s.kind}|{s.origin}|{s.image.width}x{s.image.height}|".encode())
            h.update(s.image.tobytes())
        return h.hexdigest()

    def summary(self) -> dict:
        out: dict[str, int] = {}
        for s in self.items:
            out[s.origin] = out.get(s.origin, 0) + 1
        return dict(sorted(out.items()))


def _is_dark(im: Image.Image) -> bool:
    return float(np.asarray(im.convert("L").resize((32, 32))).mean()) < 90


def _shrink(im: Image.Image, max_side: int) -> Image.Image:
    im = im.convert("RGB")
    if max(im.size) > max_side:
        s = max_side / max(im.size)
        im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.LANCZOS)
    return im


def _tight(im: Image.Image, thr: int = 245) -> Image.Image:
    """Crop to the non-white content (rendered charts and diagrams)."""
    a = np.asarray(im.convert("L")) < thr
    ys, xs = np.nonzero(a)
    if len(xs) == 0:
        return im
    return im.crop((int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1))


def load_vqa_rad(folder: str | Path, max_side: int = 480, limit: int | None = None,
                 keep: Callable[[str], bool] | None = None) -> list[Source]:
    """VQA-RAD images (``keep(file name)`` selects a subset, e.g. one split)."""
    folder = Path(folder)
    img_dir = folder / "data_RAD" / "images" if (folder / "data_RAD" / "images").is_dir() else folder
    files = sorted(p for p in img_dir.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"}
                   and (keep is None or keep(p.name)))[:limit]
    out = []
    for p in files:
        with Image.open(p) as im:
            im.draft("RGB", (max_side, max_side))  # JPEG: decode at reduced size
            im = _shrink(im, max_side)
        out.append(Source(im, "radiology", "vqa-rad", _is_dark(im)))
    return out


def _poly_box(geom) -> tuple[int, int, int, int]:
    xs = [p["x"] for p in geom]
    ys = [p["y"] for p in geom]
    return int(min(xs)), int(min(ys)), int(max(xs)) + 1, int(max(ys)) + 1


def _paint_over(crop: Image.Image, box: tuple[int, int, int, int]) -> None:
    """Fill ``box`` (crop coordinates) with the median colour of a ring around it."""
    x1, y1, x2, y2 = (max(0, box[0]), max(0, box[1]), min(crop.width, box[2]), min(crop.height, box[3]))
    if x2 <= x1 or y2 <= y1:
        return
    a = np.asarray(crop)
    r = 3
    ring = a[max(0, y1 - r):min(a.shape[0], y2 + r), max(0, x1 - r):min(a.shape[1], x2 + r)].reshape(-1, 3)
    ImageDraw.Draw(crop).rectangle((x1, y1, x2 - 1, y2 - 1), fill=tuple(int(v) for v in np.median(ring, 0)))


def load_exsclaim(folder: str | Path, max_side: int = 480, limit: int | None = None) -> list[Source]:
    """Panels ("master images") of the EXSCLAIM Nature Communications figures, letters painted over."""
    folder = Path(folder)
    data = json.loads((folder / "nature_closed_expected.json").read_text())
    kind_of = {"microscopy": "micrograph", "graph": "chart", "illustration": "diagram", "parent": "diagram"}
    out = []
    for name in sorted(data):
        rec = data[name]
        path = folder / "images" / name
        if not path.exists():
            continue
        with Image.open(path) as fig:
            fig = fig.convert("RGB")
            labels = [_poly_box(m["subfigure_label"]["geometry"]) for m in rec["master_images"]
                      if (m.get("subfigure_label") or {}).get("geometry")]
            for m in rec["master_images"]:
                box = _poly_box(m["geometry"])
                if box[2] - box[0] < 24 or box[3] - box[1] < 24:
                    continue
                crop = fig.crop(box)
                for lb in labels:
                    _paint_over(crop, (lb[0] - box[0] - 1, lb[1] - box[1] - 1, lb[2] - box[0] + 1, lb[3] - box[1] + 1))
                crop = _shrink(crop, max_side)
                out.append(Source(crop, kind_of.get(m.get("classification"), "micrograph"), "exsclaim", _is_dark(crop)))
    return out[:limit]


def load_panel_gt(annotations: str | Path, max_side: int = 480, limit: int | None = None) -> list[Source]:
    """Leaf panels (``subpanels`` where present, else the panel box) of a hand-labelled set."""
    annotations = Path(annotations)
    out = []
    for rec in json.loads(annotations.read_text()):
        path = annotations.parent / "images" / rec["image"]
        with Image.open(path) as fig:
            fig = fig.convert("RGB")
            labels = [p["label_bbox"] for p in rec["panels"] if p.get("label_bbox")]
            for p in rec["panels"]:
                for box in p.get("subpanels") or [p["bbox"]]:
                    if box[2] - box[0] < 24 or box[3] - box[1] < 24:
                        continue
                    crop = fig.crop(tuple(box))
                    for lb in labels:
                        _paint_over(crop, (lb[0] - box[0] - 1, lb[1] - box[1] - 1, lb[2] - box[0] + 1, lb[3] - box[1] + 1))
                    crop = _shrink(crop, max_side)
                    dark = _is_dark(crop)
                    out.append(Source(crop, "micrograph" if dark else "chart", f"panel-gt:{annotations.parent.name}", dark))
    return out[:limit]


# ----------------------------------------------------------------------------- rendered panels

_PALETTES = ("tab10", "Set1", "Dark2", "viridis", "tab20", "Paired")
_WORDS = ("Control", "WT", "KO", "Treated", "Vehicle", "Day", "Time (h)", "Expression", "Density", "Intensity",
          "Relative level", "Cells (%)", "Dose (mg/kg)", "Survival", "mRNA", "Area (µm²)", "Score", "Group",
          "Fold change", "p-value", "Input", "Output", "Signal", "Count", "Frequency", "Sham", "Tumour", "Normal")


def _fig_to_image(fig) -> Image.Image:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    im = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert("RGB")
    return _tight(im)


def render_chart(rng: np.random.Generator) -> Image.Image:
    from matplotlib.figure import Figure

    w, h = float(rng.uniform(1.8, 4.2)), float(rng.uniform(1.5, 3.5))
    fig = Figure(figsize=(w, h), dpi=int(rng.integers(70, 120)))
    font = str(rng.choice(["DejaVu Sans", "DejaVu Serif"]))
    fs = float(rng.uniform(6, 11))
    ax = fig.add_subplot(111)
    cmap = matplotlib.colormaps[str(rng.choice(_PALETTES))]
    cols = [cmap(float(v)) for v in rng.uniform(0, 1, 6)] if cmap.N > 20 else [cmap(i % cmap.N) for i in rng.permutation(cmap.N)[:6]]
    kind = str(rng.choice(["bar", "line", "scatter", "box", "hist", "heat", "roc", "km"]))
    n = int(rng.integers(2, 7))
    if kind == "bar":
        vals = rng.uniform(0.2, 1.0, n) * 10 ** rng.uniform(-1, 3)
        ax.bar(range(n), vals, yerr=vals * rng.uniform(0, 0.3, n) if rng.random() < 0.7 else None,
               color=cols[:1] * n if rng.random() < 0.5 else [cols[i % len(cols)] for i in range(n)],
               edgecolor="black" if rng.random() < 0.5 else None, capsize=3)
        ax.set_xticks(range(n), [str(rng.choice(_WORDS))[:8] for _ in range(n)], rotation=int(rng.choice([0, 45, 90])))
    elif kind == "line":
        x = np.linspace(0, rng.uniform(5, 100), int(rng.integers(5, 40)))
        for i in range(int(rng.integers(1, 4))):
            y = np.cumsum(rng.normal(rng.uniform(-0.5, 1), 1, len(x)))
            ax.plot(x, y, marker=str(rng.choice(["o", "s", "^", ""])), color=cols[i], ms=3, label=str(rng.choice(_WORDS)))
        if rng.random() < 0.5:
            ax.legend(fontsize=fs * 0.8, frameon=bool(rng.random() < 0.5))
    elif kind == "scatter":
        for i in range(int(rng.integers(1, 4))):
            m = int(rng.integers(10, 200))
            ax.scatter(rng.normal(i, 1, m), rng.normal(0, 1, m), s=float(rng.uniform(2, 20)), color=cols[i], alpha=0.7)
    elif kind == "box":
        ax.boxplot([rng.normal(rng.uniform(0, 3), 1, 30) for _ in range(n)])
        if rng.random() < 0.5:
            for i in range(n):
                ax.scatter(i + 1 + rng.normal(0, 0.05, 30), rng.normal(1.5, 1, 30), s=4, color=cols[i % len(cols)])
    elif kind == "hist":
        ax.hist(rng.normal(0, 1, 500), bins=int(rng.integers(8, 40)), color=cols[0], edgecolor="white")
    elif kind == "heat":
        im = ax.imshow(rng.normal(0, 1, (int(rng.integers(4, 20)), int(rng.integers(4, 20)))),
                       cmap=str(rng.choice(["viridis", "RdBu_r", "magma", "coolwarm"])), aspect="auto")
        if rng.random() < 0.6:
            fig.colorbar(im, ax=ax)
    elif kind == "roc":
        x = np.sort(rng.uniform(0, 1, 20))
        ax.step(np.r_[0, x, 1], np.r_[0, np.sqrt(x) ** rng.uniform(0.3, 1), 1], color=cols[0])
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set_xlabel("1 - Specificity", fontsize=fs, family=font)
        ax.set_ylabel("Sensitivity", fontsize=fs, family=font)
    else:  # Kaplan-Meier
        for i in range(int(rng.integers(1, 4))):
            t = np.sort(rng.exponential(10, 30))
            ax.step(np.r_[0, t], np.r_[1, 1 - np.arange(1, 31) / 30 * rng.uniform(0.5, 1)], color=cols[i], where="post")
    if kind not in ("roc",):
        if rng.random() < 0.8:
            ax.set_ylabel(str(rng.choice(_WORDS)), fontsize=fs, family=font)
        if rng.random() < 0.6:
            ax.set_xlabel(str(rng.choice(_WORDS)), fontsize=fs, family=font)
    if rng.random() < 0.4:
        ax.set_title(" ".join(rng.choice(_WORDS, int(rng.integers(1, 4)))), fontsize=fs * 1.1, family=font)
    if rng.random() < 0.6:
        ax.spines[["top", "right"]].set_visible(False)
    ax.tick_params(labelsize=fs * 0.9)
    if rng.random() < 0.3 and kind in ("bar", "box"):
        ax.text(0.5, 0.95, str(rng.choice(["*", "**", "***", "n.s."])), transform=ax.transAxes, ha="center", fontsize=fs)
    fig.tight_layout(pad=0.3)
    return _fig_to_image(fig)


def render_diagram(rng: np.random.Generator) -> Image.Image:
    from matplotlib.figure import Figure
    from matplotlib.patches import Ellipse, FancyArrowPatch, FancyBboxPatch

    fig = Figure(figsize=(float(rng.uniform(2, 4.5)), float(rng.uniform(1.5, 3.5))), dpi=int(rng.integers(70, 110)))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 10)
    ax.set_ylim(0, 10)
    ax.axis("off")
    cmap = matplotlib.colormaps[str(rng.choice(["Pastel1", "Set3", "Pastel2", "tab10"]))]
    pts = []
    for _ in range(int(rng.integers(2, 7))):
        x, y = rng.uniform(1, 8), rng.uniform(1, 8.5)
        w, h = rng.uniform(1.2, 3), rng.uniform(0.8, 2)
        c = cmap(int(rng.integers(cmap.N)))
        if rng.random() < 0.3:
            ax.add_patch(Ellipse((x + w / 2, y + h / 2), w, h, fc=c, ec="black", lw=1))
        else:
            ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle=f"round,pad=0.1,rounding_size={rng.uniform(0, 0.5):.2f}",
                                        fc=c, ec="black", lw=float(rng.uniform(0.5, 2))))
        ax.text(x + w / 2, y + h / 2, str(rng.choice(_WORDS))[:10], ha="center", va="center", fontsize=float(rng.uniform(6, 11)))
        pts.append((x + w / 2, y + h / 2))
    for a, b in zip(pts[:-1], pts[1:]):
        ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=10, color="black", lw=1))
    return _fig_to_image(fig)


def _blobs(rng, size, n, r_range, colour, canvas: Image.Image, blur: float) -> Image.Image:
    layer = Image.new("RGB", size, (0, 0, 0))
    d = ImageDraw.Draw(layer)
    for _ in range(n):
        x, y = rng.uniform(0, size[0]), rng.uniform(0, size[1])
        rx, ry = rng.uniform(*r_range), rng.uniform(*r_range)
        d.ellipse((x - rx, y - ry, x + rx, y + ry), fill=tuple(int(c * rng.uniform(0.5, 1)) for c in colour))
    layer = layer.filter(ImageFilter.GaussianBlur(blur))
    return Image.fromarray(np.clip(np.asarray(canvas, np.int16) + np.asarray(layer, np.int16), 0, 255).astype(np.uint8))


def _smooth_noise(rng, size, scale) -> np.ndarray:
    small = rng.uniform(0, 1, (max(2, size[1] // scale), max(2, size[0] // scale))).astype(np.float32)
    return np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize(size, Image.BICUBIC), np.float32) / 255


def render_texture(rng: np.random.Generator) -> tuple[Image.Image, str]:
    """A procedural micrograph (fluorescence, stained tissue, EM-like) or a western blot."""
    w, h = int(rng.integers(120, 360)), int(rng.integers(100, 360))
    kind = str(rng.choice(["fluo", "stain", "em", "blot"], p=[0.35, 0.25, 0.25, 0.15]))
    if kind == "fluo":
        im = Image.new("RGB", (w, h), (0, 0, 0))
        for c in rng.permutation([(0, 255, 0), (255, 0, 255), (0, 120, 255), (255, 0, 0), (255, 255, 255)])[: int(rng.integers(1, 4))]:
            im = _blobs(rng, (w, h), int(rng.integers(5, 60)), (2, 14), tuple(int(v) for v in c), im, float(rng.uniform(1, 4)))
        a = np.asarray(im, np.float32) + rng.normal(0, 6, (h, w, 1))
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)), "micrograph"
    if kind == "stain":
        base = np.array([rng.uniform(200, 250), rng.uniform(150, 210), rng.uniform(180, 230)], np.float32)
        a = base[None, None] * (0.8 + 0.25 * _smooth_noise(rng, (w, h), 12)[..., None])
        im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
        nuc = Image.new("RGB", (w, h), (0, 0, 0))
        d = ImageDraw.Draw(nuc)
        for _ in range(int(rng.integers(20, 150))):
            x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(2, 6)
            d.ellipse((x - r, y - r * 0.8, x + r, y + r * 0.8), fill=(120, 150, 90))
        a = np.asarray(im, np.int16) - np.asarray(nuc.filter(ImageFilter.GaussianBlur(1)), np.int16)
        return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8)), "micrograph"
    if kind == "em":
        g = 60 + 140 * _smooth_noise(rng, (w, h), int(rng.integers(4, 30))) + rng.normal(0, 12, (h, w))
        im = Image.fromarray(np.clip(g, 0, 255).astype(np.uint8)).convert("RGB")
        d = ImageDraw.Draw(im)
        for _ in range(int(rng.integers(0, 12))):
            x, y, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(3, 20)
            d.ellipse((x - r, y - r, x + r, y + r), outline=(20, 20, 20), width=int(rng.integers(1, 4)))
        return im, "micrograph"
    # blot: lanes of dark bands on a light background
    im = Image.new("L", (w, max(30, h // 3)), int(rng.integers(200, 250)))
    d = ImageDraw.Draw(im)
    lanes = int(rng.integers(3, 12))
    for i in range(lanes):
        cx = (i + 0.5) * im.width / lanes
        for _ in range(int(rng.integers(1, 3))):
            y = rng.uniform(0.2, 0.8) * im.height
            d.ellipse((cx - im.width / lanes * 0.4, y - 3, cx + im.width / lanes * 0.4, y + 3), fill=int(rng.integers(0, 150)))
    return im.filter(ImageFilter.GaussianBlur(1.5)).convert("RGB"), "blot"


def build_sources(cfg: dict | None = None, seed: int = 0) -> Sources:
    """The source bank: real images named in ``cfg`` plus rendered charts, diagrams and textures."""
    cfg = {**DEFAULT_SOURCES, **(cfg or {})}
    ms, lim = int(cfg["max_side"]), cfg.get("limit")
    items: list[Source] = []
    for key, loader in (("vqa_rad", load_vqa_rad), ("exsclaim", load_exsclaim)):
        if cfg.get(key):
            if not Path(cfg[key]).exists():
                raise FileNotFoundError(f"detector source {key}: {cfg[key]} does not exist")
            items += loader(cfg[key], ms, lim)
    for ann in cfg.get("panel_gt") or []:
        if "hand-labelled-dev" in str(ann):
            log.warning("cutting training panels from %s: that set is the detector's evaluation set", ann)
        items += load_panel_gt(ann, ms, lim)
    rng = np.random.default_rng([seed, 7919])
    with matplotlib.rc_context({"font.family": "DejaVu Sans"}):
        items += [Source(im := render_chart(rng), "chart", "chart", _is_dark(im)) for _ in range(int(cfg["charts"]))]
        items += [Source(im := render_diagram(rng), "diagram", "diagram", False) for _ in range(int(cfg["diagrams"]))]
    for _ in range(int(cfg["textures"])):
        im, kind = render_texture(rng)
        items.append(Source(im, kind, f"texture-{kind}", _is_dark(im)))
    if not items:
        raise ValueError("no detector sources: configure real images or rendered panels")
    return Sources(items)


# ----------------------------------------------------------------------------- layouts


def _split(total: int, n: int, gap: int, weights) -> list[tuple[int, int]]:
    """Cut ``total`` pixels into ``n`` spans separated by ``gap`` pixels, sized by ``weights``."""
    avail = total - gap * (n - 1)
    w = np.asarray(weights, float)
    edges = np.round(np.concatenate([[0], np.cumsum(w / w.sum())]) * avail).astype(int)
    return [(int(edges[i] + i * gap), int(edges[i + 1] + i * gap)) for i in range(n)]


def _layout(rng, x1, y1, x2, y2, n, gap, mode) -> list[tuple[int, int, int, int]]:
    W, H = x2 - x1, y2 - y1
    if n == 1:
        return [(x1, y1, x2, y2)]
    if mode == "grid":
        cols = int(np.clip(round(math.sqrt(n * W / max(H, 1))), 1, n))
        rows = math.ceil(n / cols)
        ys = _split(H, rows, gap, np.ones(rows))
        xs = _split(W, cols, gap, np.ones(cols))
        cells = [(x1 + a, y1 + b, x1 + c, y1 + d) for b, d in ys for a, c in xs]
        return cells[:n] if rng.random() < 0.5 or len(cells) == n else cells
    if mode == "rows":
        rows = int(np.clip(round(math.sqrt(n * H / max(W, 1))), 1, n))
        per = np.full(rows, n // rows) + (np.arange(rows) < n % rows)
        rng.shuffle(per)
        ys = _split(H, rows, gap, rng.uniform(0.6, 1.4, rows))
        cells = []
        for (b, d), k in zip(ys, per):
            xs = _split(W, int(k), gap, rng.uniform(0.5, 1.5, int(k)))
            cells += [(x1 + a, y1 + b, x1 + c, y1 + d) for a, c in xs]
        return cells
    # guillotine: split the largest rectangle along its long side until n leaves
    rects = [(x1, y1, x2, y2)]
    while len(rects) < n:
        rects.sort(key=lambda r: (r[2] - r[0]) * (r[3] - r[1]))
        r = rects.pop()
        w, h = r[2] - r[0], r[3] - r[1]
        f = rng.uniform(0.3, 0.7)
        if (w > h) ^ (rng.random() < 0.2):
            c = r[0] + int(round((w - gap) * f))
            a, b = (r[0], r[1], c, r[3]), (c + gap, r[1], r[2], r[3])
        else:
            c = r[1] + int(round((h - gap) * f))
            a, b = (r[0], r[1], r[2], c), (r[0], c + gap, r[2], r[3])
        rects += [a, b]
    return rects


def _reading_order(cells):
    if not cells:
        return cells
    tol = max(8, int(np.median([c[3] - c[1] for c in cells]) * 0.3))
    return sorted(cells, key=lambda c: (c[1] // tol, c[0]))


# ----------------------------------------------------------------------------- composition


def _font(name: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(FONT_DIR / name), size)


def _ink_box(text: str, font, xy) -> tuple[int, int, int, int] | None:
    """Tight ink box of ``text`` drawn with its origin at ``xy``."""
    l, t, r, b = font.getbbox(text)
    pad = 4
    mask = Image.new("L", (r - l + 2 * pad, b - t + 2 * pad), 0)
    ImageDraw.Draw(mask).text((pad - l, pad - t), text, font=font, fill=255)
    bb = mask.getbbox()
    if bb is None:
        return None
    ox, oy = xy[0] + l - pad, xy[1] + t - pad
    return ox + bb[0], oy + bb[1], ox + bb[2], oy + bb[3]


def _fit(rng, src: Image.Image, w: int, h: int, kind: str) -> Image.Image:
    """Resize ``src`` into a w x h cell: fill it (crop or mild stretch) or keep the aspect ratio."""
    sa, ca = src.width / src.height, w / h
    if abs(math.log(sa / ca)) < 0.2 or (kind in ("radiology", "micrograph") and rng.random() < 0.6):
        if kind in ("radiology", "micrograph") and abs(math.log(sa / ca)) >= 0.2:  # crop to the cell's aspect
            if sa > ca:
                cw = int(src.height * ca)
                x = int(rng.integers(0, src.width - cw + 1))
                src = src.crop((x, 0, x + cw, src.height))
            else:
                ch = int(src.width / ca)
                y = int(rng.integers(0, src.height - ch + 1))
                src = src.crop((0, y, src.width, y + ch))
        return src.resize((w, h), Image.BILINEAR)
    s = min(w / src.width, h / src.height)
    if min(src.width * s, src.height * s) < 24:  # would be a sliver: fill the cell instead
        return src.resize((w, h), Image.BILINEAR)
    return src.resize((int(src.width * s), int(src.height * s)), Image.BILINEAR)


def _draw_arrow(d: ImageDraw.ImageDraw, rng, box, colour):
    x1, y1, x2, y2 = box
    size = max(6, int(min(x2 - x1, y2 - y1) * rng.uniform(0.06, 0.15)))
    if min(x2 - x1, y2 - y1) < 6 * size + 2:
        return
    tx, ty = rng.uniform(x1 + 3 * size, x2 - 3 * size), rng.uniform(y1 + 3 * size, y2 - 3 * size)  # tail stays inside
    ang = rng.uniform(0, 2 * math.pi)
    ux, uy = math.cos(ang), math.sin(ang)
    px, py = -uy, ux
    tail = (tx + ux * size * 2, ty + uy * size * 2)
    d.line([(tx + ux * size * 0.8, ty + uy * size * 0.8), tail], fill=colour, width=max(1, size // 4))
    d.polygon([(tx, ty), (tx + ux * size + px * size * 0.5, ty + uy * size + py * size * 0.5),
               (tx + ux * size - px * size * 0.5, ty + uy * size - py * size * 0.5)], fill=colour)


def make_figure(rng: np.random.Generator, sources: Sources) -> tuple[Image.Image, dict]:
    """One synthetic compound figure and its targets.

    Returns ``(image, {"panels": [...], "labels": [...], "other": [...], "style": {...}})``:
    panels ``{"bbox", "label" (letter or None), "kind", "origin", "subpanels"}`` in reading order,
    labels ``{"bbox", "text" (as printed), "char" (the letter), "panel" (index)}``, and ``other``
    the boxes of things drawn outside panels (headers, frames) that are neither panels nor letters.
    """
    W = int(rng.integers(480, 1300))
    H = int(np.clip(W * math.exp(rng.normal(-0.35, 0.45)), 140, 1600))
    n = int(rng.choice([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 16], p=[.08, .14, .14, .15, .08, .14, .04, .08, .05, .04, .04, .02]))
    n = max(1, min(n, (W // 70) * (H // 70)))
    gutter = str(rng.choice(["white", "black", "none", "line"], p=[0.6, 0.12, 0.16, 0.12]))
    bg = (0, 0, 0) if gutter == "black" else tuple([int(rng.integers(246, 256))] * 3)
    gap = {"white": int(rng.integers(4, 36)), "black": int(rng.integers(2, 14)), "none": 0, "line": int(rng.integers(6, 20))}[gutter]
    margin = 0 if rng.random() < 0.3 else int(rng.integers(2, 30))
    lettered = n > 1 and rng.random() < 0.82
    case = str.upper if rng.random() < 0.6 else str.lower
    style = str(rng.choice(LETTER_STYLES))
    fs = int(np.clip(W * rng.uniform(0.016, 0.04), 10, 56))
    font_name = str(rng.choice(FONTS))
    place = str(rng.choice(["in-tl", "out-top", "out-left", "in-tr", "in-bl"], p=[0.45, 0.25, 0.14, 0.08, 0.08]))
    if gutter in ("none", "black") and place.startswith("out"):
        place = "in-tl"
    letter_colour = None if rng.random() < 0.85 else tuple(int(v) for v in rng.choice([(200, 0, 0), (0, 0, 200), (230, 200, 0), (0, 140, 0)]))
    mode = str(rng.choice(["grid", "rows", "guillotine"], p=[0.35, 0.35, 0.3]))
    main_kind = str(rng.choice(sources.kinds())) if rng.random() < 0.55 else None

    img = Image.new("RGB", (W, H), bg)
    d = ImageDraw.Draw(img)
    other = []
    top = margin
    if n > 1 and gutter == "white" and rng.random() < 0.12:  # a band of column headers above the panels
        top += int(fs * 1.6)
    cells = _reading_order(_layout(rng, margin, top, W - margin, H - margin, n, gap, mode))
    if top > margin:
        hf = _font(str(rng.choice(FONTS)), max(8, int(fs * 0.8)))
        for c in cells:
            if c[1] == top and c[2] - c[0] > 60:
                text = " ".join(rng.choice(_WORDS, int(rng.integers(1, 3))))
                bb = _ink_box(text, hf, (c[0] + 4, margin + 2))
                if bb and bb[2] <= c[2]:
                    d.text((c[0] + 4, margin + 2), text, font=hf, fill=(0, 0, 0))
                    other.append({"bbox": list(bb), "type": "header"})
    font = _font(font_name, fs)
    panels, labels = [], []
    for idx, (cx1, cy1, cx2, cy2) in enumerate(cells):
        letter = case(chr(ord("a") + idx)) if lettered and idx < 26 else None
        text = style.format(letter) if letter else None
        tb = font.getbbox(text) if text else (0, 0, 0, 0)
        tw, th = tb[2] - tb[0], tb[3] - tb[1]
        rx1, ry1, rx2, ry2 = cx1, cy1, cx2, cy2
        if text and place == "out-top":
            ry1 += th + 4
        elif text and place == "out-left":
            rx1 += tw + 4
        if rx2 - rx1 < 24 or ry2 - ry1 < 24:
            continue
        src = sources.pick(rng, main_kind if main_kind and rng.random() < 0.8 else None)
        subpanels = []
        if letter and rng.random() < 0.12 and rx2 - rx1 > 160 and ry2 - ry1 > 100:  # several images under one letter
            sr, sc = int(rng.integers(1, 3)), int(rng.integers(2, 4))
            sg = int(rng.integers(2, 7))
            for b, e in _split(ry2 - ry1, sr, sg, np.ones(sr)):
                for a, c in _split(rx2 - rx1, sc, sg, np.ones(sc)):
                    s2 = sources.pick(rng, src.kind)
                    tile = _fit(rng, s2.image, c - a, e - b, s2.kind)
                    img.paste(tile, (rx1 + a, ry1 + b))
                    subpanels.append([rx1 + a, ry1 + b, rx1 + a + tile.width, ry1 + b + tile.height])
            box = [min(s[0] for s in subpanels), min(s[1] for s in subpanels), max(s[2] for s in subpanels), max(s[3] for s in subpanels)]
        else:
            tile = _fit(rng, src.image, rx2 - rx1, ry2 - ry1, src.kind)
            ax = int(rng.integers(0, rx2 - rx1 - tile.width + 1)) if rng.random() < 0.5 else (rx2 - rx1 - tile.width) // 2
            ay = 0 if rng.random() < 0.6 else (ry2 - ry1 - tile.height) // 2
            px, py = rx1 + ax, ry1 + ay
            img.paste(tile, (px, py))
            box = [px, py, px + tile.width, py + tile.height]
            image_like = src.kind in ("radiology", "micrograph")
            if image_like and rng.random() < 0.08 and tile.width > 120 and tile.height > 120:  # inset
                ins = _fit(rng, sources.pick(rng, src.kind).image, tile.width // 3, tile.height // 3, "micrograph")
                ix = box[2] - ins.width - 2 if rng.random() < 0.5 else box[0] + 2
                img.paste(ins, (ix, box[1] + 2))
                d.rectangle((ix, box[1] + 2, ix + ins.width - 1, box[1] + 1 + ins.height), outline=(255, 255, 255), width=1)
            if image_like and rng.random() < 0.3:  # scale bar
                bw = int(tile.width * rng.uniform(0.1, 0.25))
                bx, by = box[2] - bw - 6, box[3] - 8
                d.rectangle((bx, by, bx + bw, by + 2), fill=(255, 255, 255) if src.dark else (0, 0, 0))
            if image_like and rng.random() < 0.12 and tile.width > 60 and tile.height > 60:
                for _ in range(int(rng.integers(1, 4))):
                    _draw_arrow(d, rng, box, (255, 255, 255) if rng.random() < 0.5 else (255, 255, 0))
        if gutter != "none" and rng.random() < 0.12:  # panel border
            d.rectangle((box[0], box[1], box[2] - 1, box[3] - 1), outline=(0, 0, 0) if bg[0] > 128 else (255, 255, 255),
                        width=int(rng.integers(1, 3)))
        panels.append({"bbox": box, "label": letter, "kind": src.kind, "origin": src.origin, "subpanels": subpanels})
        if not text:
            continue
        pad = int(rng.integers(1, 8))
        if place == "out-top":
            xy = (box[0] + int(rng.integers(-2, 4)) - tb[0], box[1] - th - 3 - tb[1])
        elif place == "out-left":
            xy = (box[0] - tw - 3 - tb[0], box[1] - tb[1])
        elif place == "in-tr":
            xy = (box[2] - tw - pad - tb[0], box[1] + pad - tb[1])
        elif place == "in-bl":
            xy = (box[0] + pad - tb[0], box[3] - th - pad - tb[1])
        else:
            xy = (box[0] + pad - tb[0], box[1] + pad - tb[1])
        if place.startswith("in"):
            region = img.crop((max(0, xy[0] + tb[0]), max(0, xy[1] + tb[1]), xy[0] + tb[2], xy[1] + tb[3])).convert("L")
            dark_under = float(np.asarray(region).mean()) < 110 if region.width and region.height else False
        else:
            dark_under = bg[0] < 128
        colour = letter_colour or ((255, 255, 255) if dark_under else (0, 0, 0))
        ink = _ink_box(text, font, xy)
        if ink is None or ink[0] < 0 or ink[1] < 0 or ink[2] > W or ink[3] > H:
            continue
        inside = box[0] <= ink[0] and box[1] <= ink[1] and ink[2] <= box[2] and ink[3] <= box[3]
        if place.startswith("in") and (not inside or (ink[2] - ink[0]) * (ink[3] - ink[1]) > 0.25 * (box[2] - box[0]) * (box[3] - box[1])):
            continue  # the letter would not fit in its panel
        d.text(xy, text, font=font, fill=colour)
        labels.append({"bbox": list(ink), "text": text, "char": letter, "panel": len(panels) - 1})
    if gutter == "line" and len(panels) > 1:  # thin separator lines in the middle of the gutters
        col = tuple([int(rng.integers(0, 120))] * 3)
        for c in cells:
            if c[2] + gap < W - margin:
                x = c[2] + gap // 2
                d.line([(x, c[1]), (x, c[3] - 1)], fill=col, width=1)
                other.append({"bbox": [x, c[1], x + 1, c[3]], "type": "separator"})
            if c[3] + gap < H - margin:
                y = c[3] + gap // 2
                d.line([(c[0], y), (c[2] - 1, y)], fill=col, width=1)
                other.append({"bbox": [c[0], y, c[2], y + 1], "type": "separator"})
    if margin >= 3 and rng.random() < 0.05:
        d.rectangle((0, 0, W - 1, H - 1), outline=(0, 0, 0), width=1)
        other.append({"bbox": [0, 0, W, H], "type": "frame"})
    styl = {"gutter": gutter, "background": list(bg), "gap": gap, "layout": mode, "lettered": lettered, "letter_place": place,
            "letter_style": style, "font": font_name, "font_size": fs}
    if rng.random() < 0.4:  # real figures are mostly JPEGs
        buf = io.BytesIO()
        q = int(rng.integers(45, 95))
        img.save(buf, "JPEG", quality=q)
        img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
        styl["jpeg_quality"] = q
    return img, {"panels": panels, "labels": labels, "other": other, "style": styl}


# ----------------------------------------------------------------------------- datasets


def figure_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed), int(index)])


def to_target(tgt: dict, scale: float = 1.0, letters: bool = True) -> dict:
    """Targets of one figure as torchvision detection tensors (boxes scaled by ``scale``)."""
    import torch

    boxes = [p["bbox"] for p in tgt["panels"]]
    cls = [PANEL] * len(boxes)
    if letters:
        boxes += [lb["bbox"] for lb in tgt["labels"]]
        cls += [LABEL] * len(tgt["labels"])
    b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4) * scale
    return {"boxes": b, "labels": torch.tensor(cls, dtype=torch.int64)}


class SyntheticFigures:
    """A map-style torch dataset of synthetic figures: item ``i`` is ``make_figure(figure_rng(seed, i))``.

    ``__getitem__`` returns ``(image tensor 3xHxW in [0, 1], target dict)`` with the image
    downscaled so its long side is at most ``max_side`` (boxes scaled alike); ``figure(i)`` gives the
    PIL image and the full targets.
    """

    def __init__(self, sources: Sources, n: int, seed: int = 0, max_side: int | None = None, letters: bool = True):
        self.sources, self.n, self.seed, self.max_side, self.letters = sources, int(n), int(seed), max_side, letters

    def __len__(self) -> int:
        return self.n

    def figure(self, i: int) -> tuple[Image.Image, dict]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        return make_figure(figure_rng(self.seed, i), self.sources)

    def __getitem__(self, i: int):
        import torch

        img, tgt = self.figure(i)
        s = 1.0
        if self.max_side and max(img.size) > self.max_side:
            s = self.max_side / max(img.size)
            img = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255)
        t = to_target(tgt, s, self.letters)
        t["image_id"] = i
        return x, t


def write_coco(out_dir: str | Path, sources: Sources, n: int, seed: int = 0) -> Path:
    """Write ``n`` figures as PNGs plus a COCO ``annotations.json`` (categories panel and label;
    a label annotation carries its letter in ``attributes.char``)."""
    out_dir = Path(out_dir)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    coco = {"info": {"description": "panel2patch synthetic compound figures", "seed": seed, "sources": sources.summary()},
            "categories": [{"id": PANEL, "name": "panel"}, {"id": LABEL, "name": "label"}], "images": [], "annotations": []}
    ds = SyntheticFigures(sources, n, seed)
    for i in range(n):
        img, tgt = ds.figure(i)
        name = f"synthetic_{seed}_{i:06d}.png"
        img.save(out_dir / "images" / name)
        coco["images"].append({"id": i, "file_name": f"images/{name}", "width": img.width, "height": img.height, "style": tgt["style"]})
        for cat, items in ((PANEL, tgt["panels"]), (LABEL, tgt["labels"])):
            for it in items:
                x1, y1, x2, y2 = it["bbox"]
                attrs = {"char": it["char"], "text": it["text"], "panel": it["panel"]} if cat == LABEL else \
                        {"label": it["label"], "kind": it["kind"], "subpanels": it["subpanels"]}
                coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": i, "category_id": cat,
                                            "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                            "iscrowd": 0, "attributes": attrs})
    path = out_dir / "annotations.json"
    path.write_text(json.dumps(coco))
    return path


if __name__ == "__main__":  # python -m panel2patch.layout.synthetic OUT_DIR [N] [--vqa-rad DIR] [--exsclaim DIR]
    import argparse

    ap = argparse.ArgumentParser(description="write synthetic compound figures with COCO targets")
    ap.add_argument("out")
    ap.add_argument("n", type=int, nargs="?", default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vqa-rad")
    ap.add_argument("--exsclaim")
    a = ap.parse_args()
    print(write_coco(a.out, build_sources({"vqa_rad": a.vqa_rad, "exsclaim": a.exsclaim}, a.seed), a.n, a.seed))
