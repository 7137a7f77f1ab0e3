"""The real evaluation set for parsing (panels, letters, markers, tips, patches), split by article.

    .venv/bin/python benchmarks/evalset.py list                      # figures per source and split
    .venv/bin/python benchmarks/evalset.py images [--split check]    # materialise images -> results/evalset/images/
    .venv/bin/python benchmarks/evalset.py overlay ID [ID ...] [--labels FILE] [--out DIR] [--max-side 1400]
    .venv/bin/python benchmarks/evalset.py propose --labels FILE ID ...   # draft panels/markers from the parser
    .venv/bin/python benchmarks/evalset.py zoom ID --box x1,y1,x2,y2 [--scale 3]   # ruler crop to read pixels

Records (one JSON list per file) follow the hand-labelled set's schema and conventions
(``../shared/data/panels-gt/hand-labelled-dev/README.md``): ``id``, ``source``, ``article`` (the
unit of the tune/check split), ``license``, ``image`` (how to get the pixels, below), ``width``,
``height``, ``panels`` (``bbox``, ``label``, ``label_bbox``, optional ``subpanels``), ``markers``
(``type``, ``bbox``, ``tip`` where known), ``markers_non_image`` (``null`` = present but not
annotated), ``scope`` (what was labelled: ``["panels", "markers"]``; a set without ``panels``
is scored for markers only), ``checked`` (how every box was checked), ``notes``.

``image`` is a recipe relative to the shared data folder (``$P2P_SHARED_DATA`` or
``<repo>/../shared/data``), so that no image of a source whose licence forbids it enters the repo:
``{"file": "vqa-rad/data_RAD/images/x.jpg"}`` (optional ``"crop": [x1, y1, x2, y2]``), or
``{"pdf": "pdfs/elife/.../x.pdf", "page": 3, "clip": [x0, y0, x1, y1], "dpi": 150}`` (a page
region rendered by PyMuPDF, as ``panel2patch ingest`` renders PDF figures; ``clip`` in PDF points).

Sources: the label files under ``benchmarks/labels/`` (labels made for this set; CC-BY / CC0
sources) plus two sets read in place from the shared data: the hand-labelled dev figures and the
radiology marker set (no licence stated: its labels never enter the repo).

Split: by article, ``check`` when sha1("p2p-evalset:" + article) mod 10 < 6, else ``tune``; but
every figure in ``LOOKED_AT`` (figures that earlier work tuned on, and any figure looked at while
tuning from now on: ``benchmarks/labels/looked_at.txt``) is ``tune``, whatever its article. Only
``check`` numbers are results.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from panel2patch.evaluate.split import split_of  # noqa: E402
LABELS = REPO / "benchmarks" / "labels"
CACHE = REPO / "results" / "evalset" / "images"


def data_dir() -> Path:
    env = os.environ.get("P2P_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def looked_at() -> set[str]:
    f = LABELS / "looked_at.txt"
    if not f.exists():
        return set()
    return {ln.split("#")[0].strip() for ln in f.read_text().splitlines() if ln.split("#")[0].strip()}




# --------------------------------------------------------------------------- sources

def _hand_labelled(data: Path) -> list[dict]:
    root = data / "panels-gt" / "hand-labelled-dev"
    f = root / "annotations.json"
    if not f.exists():
        return []
    out = []
    for r in json.loads(f.read_text()):
        art = r["id"].split("_fig")[0].split("_inf")[0]
        if r["id"].startswith("scielo"):
            art = "scielo_bjmbr"
        out.append({"id": r["id"], "source": "hand-labelled-dev", "article": art, "license": r.get("license"),
                    "image": {"file": f"panels-gt/hand-labelled-dev/images/{r['image']}"},
                    "width": r["width"], "height": r["height"],
                    "panels": [{"bbox": p["bbox"], "label": p.get("label"), "label_bbox": p.get("label_bbox"),
                                **({"subpanels": p["subpanels"]} if p.get("subpanels") else {})} for p in r["panels"]],
                    "markers": [{"type": m["type"], "bbox": m["bbox"], "tip": m.get("tip")} for m in r.get("markers") or []],
                    "markers_non_image": r.get("markers_non_image"), "scope": ["panels", "markers"],
                    "caption": r.get("caption"), "subcaptions": r.get("subcaptions"),
                    "checked": "hand-labelled set (its README)"})
    return out


def _radiology(data: Path) -> list[dict]:
    root = data / "markers-radiology-dev"
    f = root / "annotations.json"
    if not f.exists():
        return []
    out = []
    for r in json.loads(f.read_text()):
        out.append({"id": "rad_" + r["id"], "source": "radiology-dev", "article": "rad_" + r["id"].removesuffix("_ro"),
                    "license": "none stated (dev only)", "image": {"file": f"markers-radiology-dev/{r['annotated']}"},
                    "width": r["width"], "height": r["height"], "panels": None,
                    "markers": [{"type": m["type"], "bbox": m["bbox"], "tip": m.get("tip"), "tip2": m.get("tip2"),
                                 "uncertain": m.get("uncertain", False)} for m in r["markers"]],
                    "markers_non_image": [], "scope": ["markers"], "checked": "radiology set (its README)"})
    return out


def load(data: Path | None = None, files: list[Path] | None = None) -> list[dict]:
    """Every record, with ``split`` and ``looked_at`` set."""
    data = data or data_dir()
    recs = _hand_labelled(data) + _radiology(data)
    for f in files if files is not None else sorted(LABELS.glob("*.json")):
        if Path(f).exists():
            recs.extend(json.loads(Path(f).read_text()))
    seen = looked_at()
    ids = set()
    for r in recs:
        if r["id"] in ids:
            raise ValueError(f"duplicate evaluation id {r['id']}")
        ids.add(r["id"])
        r["looked_at"] = r["id"] in seen or r["source"] == "hand-labelled-dev"
        r["split"] = "tune" if r["looked_at"] else split_of(r["article"])
    return recs


# --------------------------------------------------------------------------- images

def render(spec: dict, data: Path | None = None):
    """The record's image recipe -> RGB PIL image."""
    from PIL import Image

    data = data or data_dir()
    if "pdf" in spec:
        import pymupdf

        with pymupdf.open(data / spec["pdf"]) as doc:
            page = doc[spec["page"]]
            pix = page.get_pixmap(clip=pymupdf.Rect(*spec["clip"]), dpi=spec.get("dpi", 150), alpha=False,
                                  colorspace=pymupdf.csRGB)
            img = Image.frombytes("RGB", (pix.width, pix.height), pix.samples)
    else:
        img = Image.open(data / spec["file"])
        img.load()
        if img.mode in ("RGBA", "LA", "P"):
            img = img.convert("RGBA")
            bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
            img = Image.alpha_composite(bg, img)
        img = img.convert("RGB")
    if spec.get("crop"):
        img = img.crop(tuple(spec["crop"]))
    return img


def image_path(rec: dict, data: Path | None = None, cache: Path = CACHE) -> Path:
    """The record's image as a PNG in the cache (made once); JPEG/PNG files without crop are used in place."""
    spec = rec["image"]
    data = data or data_dir()
    if "file" in spec and not spec.get("crop") and Path(spec["file"]).suffix.lower() in (".png", ".jpg", ".jpeg"):
        return data / spec["file"]
    out = cache / f"{rec['id']}.png"
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        img = render(spec, data)
        tmp = out.with_suffix(".tmp.png")
        img.save(tmp)
        tmp.replace(out)
    return out


# --------------------------------------------------------------------------- drawing for checking

COLOURS = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
           (240, 50, 230), (128, 128, 0), (0, 128, 128), (170, 110, 40)]


def draw(rec: dict, img, max_side: int = 1400):
    """Overlay: panels (thick, colour per panel, ``index:label``), subpanels thin, label boxes
    magenta, markers (cyan arrow, yellow arrowhead, orange other) with the tip as a red dot, non-image
    markers grey."""
    from PIL import ImageDraw, ImageFont

    img = img.convert("RGB").copy()
    s = min(1.0, max_side / max(img.size))
    if s < 1:
        img = img.resize((round(img.width * s), round(img.height * s)))
    d = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=max(12, round(14)))
    except TypeError:
        font = ImageFont.load_default()

    def box(b, col, w):
        d.rectangle([b[0] * s, b[1] * s, b[2] * s - 1, b[3] * s - 1], outline=col, width=w)

    for i, p in enumerate(rec.get("panels") or []):
        col = COLOURS[i % len(COLOURS)]
        box(p["bbox"], col, 3)
        for sp in p.get("subpanels") or []:
            box(sp, col, 1)
        if p.get("label_bbox"):
            box(p["label_bbox"], (255, 0, 255), 2)
        d.text((p["bbox"][0] * s + 4, p["bbox"][1] * s + 3), f"{i}:{p.get('label') or '-'}", fill=col, font=font,
               stroke_width=2, stroke_fill=(255, 255, 255))
    mcol = {"arrow": (0, 255, 255), "arrowhead": (255, 255, 0), "asterisk": (0, 255, 0), "other": (255, 140, 0)}
    for i, m in enumerate(rec.get("markers") or []):
        box(m["bbox"], mcol.get(m["type"], (255, 140, 0)), 2)
        d.text((m["bbox"][0] * s, max(0, m["bbox"][1] * s - 14)), f"m{i}", fill=mcol.get(m["type"]), font=font,
               stroke_width=2, stroke_fill=(0, 0, 0))
        for t in (m.get("tip"), m.get("tip2")):
            if t:
                d.ellipse([t[0] * s - 3, t[1] * s - 3, t[0] * s + 3, t[1] * s + 3], fill=(255, 0, 0))
    for m in rec.get("markers_non_image") or []:
        box(m["bbox"], (128, 128, 128), 2)
    return img


def zoom(img, box, scale: int = 3, step: int = 10):
    """A crop enlarged ``scale`` times with a pixel ruler (a thin line every ``step`` px, labelled
    every 5th) so coordinates can be read off by eye."""
    from PIL import Image, ImageDraw

    x1, y1, x2, y2 = box
    crop = img.convert("RGB").crop((x1, y1, x2, y2)).resize(((x2 - x1) * scale, (y2 - y1) * scale), Image.NEAREST)
    pad = 40
    out = Image.new("RGB", (crop.width + pad, crop.height + pad), (255, 255, 255))
    out.paste(crop, (pad, pad))
    d = ImageDraw.Draw(out)
    for x in range((x1 // step + 1) * step, x2, step):
        X = pad + (x - x1) * scale
        major = x % (5 * step) == 0
        d.line([X, pad if not major else 0, X, out.height], fill=(255, 0, 0) if major else (255, 160, 160), width=1)
        if major:
            d.text((X + 2, 2), str(x), fill=(0, 0, 0))
    for y in range((y1 // step + 1) * step, y2, step):
        Y = pad + (y - y1) * scale
        major = y % (5 * step) == 0
        d.line([pad if not major else 0, Y, out.width, Y], fill=(0, 0, 255) if major else (160, 160, 255), width=1)
        if major:
            d.text((2, Y + 2), str(y), fill=(0, 0, 0))
    return out


def propose(rec: dict) -> dict:
    """Fill ``panels`` and ``markers`` of a draft record from the parser (to be corrected by eye)."""
    sys.path.insert(0, str(REPO / "src"))
    from PIL import Image

    from panel2patch.layout.parse import parse_figure
    from panel2patch.markers.detect import figure_markers

    img = Image.open(image_path(rec)).convert("RGB")
    lay = parse_figure(img)
    mk = figure_markers(img, layout=lay)
    rec = dict(rec)
    rec["width"], rec["height"] = img.size
    rec["panels"] = [{"bbox": p["bbox"], "label": p["label"], "label_bbox": p["label_bbox"]} for p in lay["panels"]]
    rec["markers"] = [{"type": m["type"], "bbox": m["bbox"], "tip": [round(v) for v in m["tip"]] if m.get("tip") else None}
                      for m in mk["markers"]]
    rec.setdefault("markers_non_image", [])
    return rec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("list")
    a = sub.add_parser("images")
    a.add_argument("--split", default=None)
    a = sub.add_parser("overlay")
    a.add_argument("ids", nargs="+")
    a.add_argument("--labels", type=Path, default=None, help="only this label file (default: all sources)")
    a.add_argument("--out", type=Path, default=REPO / "results" / "evalset" / "overlays")
    a.add_argument("--max-side", type=int, default=1400)
    a = sub.add_parser("propose")
    a.add_argument("--labels", type=Path, required=True, help="label file whose records get parser drafts")
    a.add_argument("ids", nargs="+")
    a = sub.add_parser("add", help="append draft records (parser proposals) for a PDF's figures or image files")
    a.add_argument("--labels", type=Path, required=True)
    a.add_argument("--source", required=True)
    a.add_argument("--article", default=None, help="article id (default: the PDF / file stem)")
    a.add_argument("--license", required=True)
    a.add_argument("inputs", nargs="+", help="PDFs or image files under the shared data folder")
    a = sub.add_parser("zoom")
    a.add_argument("id")
    a.add_argument("--box", required=True)
    a.add_argument("--scale", type=int, default=3)
    a.add_argument("--labels", type=Path, default=None)
    a.add_argument("--out", type=Path, default=REPO / "results" / "evalset" / "zoom")
    args = ap.parse_args(argv)

    recs = load(files=[args.labels]) if getattr(args, "labels", None) else load()
    by_id = {r["id"]: r for r in recs}
    if args.cmd == "list":
        from collections import Counter

        c = Counter((r["source"], r["split"]) for r in recs)
        for (src, split), n in sorted(c.items()):
            print(f"{src:22s} {split:6s} {n:4d} figures")
        print(f"total {len(recs)} figures, {len({r['article'] for r in recs})} articles, "
              f"{sum(len(r.get('markers') or []) for r in recs)} markers")
    elif args.cmd == "images":
        for r in recs:
            if args.split in (None, r["split"]):
                print(image_path(r))
    elif args.cmd == "overlay":
        from PIL import Image

        args.out.mkdir(parents=True, exist_ok=True)
        for i in args.ids:
            if i not in by_id:
                print(f"{i}: no such record (see `evalset.py list`)", file=sys.stderr)
                continue
            r = by_id[i]
            draw(r, Image.open(image_path(r)), args.max_side).save(args.out / f"{i}.png")
            print(args.out / f"{i}.png")
    elif args.cmd == "propose":
        raw = json.loads(args.labels.read_text())
        for k, r in enumerate(raw):
            if r["id"] in args.ids:
                raw[k] = {kk: v for kk, v in propose(r).items() if kk not in ("split", "looked_at")}
        args.labels.write_text(json.dumps(raw, indent=1) + "\n")
    elif args.cmd == "add":
        raw = json.loads(args.labels.read_text()) if args.labels.exists() else []
        have = {r["id"] for r in raw}
        data = data_dir()
        for inp in args.inputs:
            path = Path(inp).resolve()
            rel = str(path.relative_to(data.resolve()))
            art = args.article or path.stem
            if path.suffix.lower() == ".pdf":
                sys.path.insert(0, str(REPO / "src"))
                from panel2patch.ingest.pdf import extract_pdf_figures

                figs, _ = extract_pdf_figures(path)
                specs = [(re.sub(r"[^A-Za-z0-9]+", "_", f"{art}_{f.label or f'p{f.page}'}").strip("_"),
                          {"pdf": rel, "page": f.page - 1, "clip": [round(v, 2) for v in f.bbox], "dpi": 150})
                         for f in figs]
            else:
                specs = [(path.stem, {"file": rel})]
            for rid, spec in specs:
                if rid in have:
                    print(f"{rid}: already in {args.labels.name}, skipped (give another --article for a second copy)",
                          file=sys.stderr)
                    continue
                rec = {"id": rid, "source": args.source, "article": art, "license": args.license, "image": spec,
                       "scope": ["panels", "markers"], "checked": None, "notes": ""}
                raw.append({k: v for k, v in propose(rec).items() if k not in ("split", "looked_at")})
                have.add(rid)
                print(rid)
        args.labels.write_text(json.dumps(raw, indent=1) + "\n")
    elif args.cmd == "zoom":
        from PIL import Image

        r = by_id[args.id]
        box = [int(v) for v in args.box.split(",")]
        args.out.mkdir(parents=True, exist_ok=True)
        out = args.out / f"{args.id}_{'_'.join(map(str, box))}.png"
        zoom(Image.open(image_path(r)), box, args.scale).save(out)
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
