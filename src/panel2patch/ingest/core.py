"""Run the ingest stage over a list of units and write the shard's tables (see ``tables``).

One bad article or figure is recorded in the skip table and the rest of the shard goes on.
"""

from __future__ import annotations

import logging
import re
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from . import tables
from .discover import GENERIC_STEMS, Unit, discover_units
from .images import ImageSkip, save_figure_image
from .jats import JatsArticle, JatsError, is_jats, parse_jats
from .licence import licence_code
from .package import PackageError, extract_members, extract_package

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")  # preference order
PACKAGE_TMP_PREFIX = "p2p-pkg-"  # a package's temporary extraction in the shard folder (a killed run's is removed)

DEFAULTS = {
    "pdf_dpi": 150,
    "pdf_method": "auto",
    "max_image_pixels": 200_000_000,
    "max_member_bytes": 1_000_000_000,
    "max_package_bytes": 4_000_000_000,
    "max_members": 10_000,
}


def safe_key(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


@dataclass
class ShardWriter:
    """Collects rows of one shard and writes them as Parquet at the end."""

    out_dir: Path
    shard: str
    figures: list[dict] = field(default_factory=list)
    articles: list[dict] = field(default_factory=list)
    skips: list[dict] = field(default_factory=list)
    _ids: set[str] = field(default_factory=set)

    def skip(self, source: str, reason: str, detail: str, article_id: str | None = None, figure_key: str | None = None):
        log.warning("skip %s [%s] %s", source, reason, detail)
        self.skips.append(
            {"shard": self.shard, "source_path": source, "article_id": article_id, "figure_key": figure_key,
             "reason": reason, "detail": detail}
        )

    def unique_figure_id(self, article_id: str, key: str) -> str:
        base = f"{safe_key(article_id)}__{safe_key(key)}"
        fid, n = base, 2
        while fid in self._ids:
            fid, n = f"{base}-{n}", n + 1
        self._ids.add(fid)
        return fid

    def write(self) -> dict[str, Path]:
        paths = {
            "figures": self.out_dir / "figures.parquet",
            "articles": self.out_dir / "articles.parquet",
            "skips": self.out_dir / "skips.parquet",
        }
        tables.write_table(self.figures, tables.FIGURES, paths["figures"])
        tables.write_table(self.articles, tables.ARTICLES, paths["articles"])
        tables.write_table(self.skips, tables.SKIPS, paths["skips"])
        return paths


def _image_index(root: Path, recursive: bool) -> dict[str, list[Path]]:
    """Lower-case file name and stem -> files of ``root`` (figure hrefs often omit the suffix): a
    package's whole tree (``recursive``), else only the article folder itself, never its
    sub-folders (a same-named file there belongs to another article). Symbolic links are listed
    too, so that a figure resolving to one is refused, not taken for missing."""
    index: dict[str, list[Path]] = {}
    for p in sorted(root.rglob("*") if recursive else root.iterdir()):
        if p.is_symlink() or p.is_file():
            index.setdefault(p.name.lower(), []).append(p)
            if p.suffix.lower() in IMAGE_SUFFIXES:
                index.setdefault(p.stem.lower(), []).append(p)
    return index


def resolve_graphic(href: str, index: dict[str, list[Path]]) -> Path | None:
    name = href.replace("\\", "/").rsplit("/", 1)[-1].lower()
    if name in index and index[name][0].suffix.lower() in IMAGE_SUFFIXES:
        return index[name][0]
    stem = name.rsplit(".", 1)[0] if name.rsplit(".", 1)[-1] in {s[1:] for s in IMAGE_SUFFIXES} else name
    candidates = [p for p in index.get(stem, []) if p.suffix.lower() in IMAGE_SUFFIXES]
    candidates.sort(key=lambda p: IMAGE_SUFFIXES.index(p.suffix.lower()))
    return candidates[0] if candidates else None


def _article_id(art: JatsArticle, xml_path: Path) -> str:
    if art.pmcid or art.pmid or art.doi or art.publisher_id:
        return art.pmcid or art.pmid or art.doi or art.publisher_id
    stem = xml_path.stem
    return xml_path.parent.name if stem.lower() in GENERIC_STEMS else stem


def _ingest_jats(xml: Path, image_root: Path, source: str, w: ShardWriter, cfg: dict, index_cache: dict,
                 recursive: bool = False, meta: Unit | None = None) -> None:
    """One JATS article; its figure files are looked up in ``image_root`` (and, ``recursive``,
    below it: a package). ``meta``: a bulk unit whose file-list PMCID and licence fill in what the
    JATS does not state."""
    try:
        art = parse_jats(xml)
    except JatsError as exc:
        w.skip(source, exc.reason, str(exc), meta.pmcid or None if meta else None)
        return
    if meta is not None:
        art.pmcid = art.pmcid or meta.pmcid or None
        art.licence = art.licence or meta.licence or None
    article_id = _article_id(art, xml)
    if (image_root, recursive) not in index_cache:
        index_cache[image_root, recursive] = _image_index(image_root, recursive)
    index = index_cache[image_root, recursive]
    n_ok = 0
    for fig in art.figures:
        if not fig.caption:
            w.skip(source, "missing-caption", f"{fig.key}: <fig> has no caption text", article_id, fig.key)
            continue
        src = next((p for href in fig.graphics if (p := resolve_graphic(href, index))), None)
        if src is None:
            hrefs = ", ".join(fig.graphics) or "no <graphic> element"
            w.skip(source, "missing-image", f"{fig.key}: graphic not found ({hrefs})", article_id, fig.key)
            continue
        if src.is_symlink():
            w.skip(source, "symlink", f"{fig.key}: {src.name} is a symbolic link, not followed", article_id, fig.key)
            continue
        figure_id = w.unique_figure_id(article_id, fig.key)
        try:
            saved = save_figure_image(src, w.out_dir / "images" / figure_id, cfg["max_image_pixels"])
        except ImageSkip as exc:
            w.skip(source, exc.reason, f"{fig.key}: {exc}", article_id, fig.key)
            continue
        n_ok += 1
        w.figures.append(
            {
                "figure_id": figure_id, "article_id": article_id, "pmcid": art.pmcid, "pmid": art.pmid,
                "doi": art.doi, "label": fig.label, "caption_title": fig.caption_title, "caption": fig.caption,
                "image_path": saved.path.relative_to(w.out_dir).as_posix(), "image_format": saved.format,
                "width": saved.width, "height": saved.height, "image_sha256": saved.sha256,
                "source_image": src.name, "licence": art.licence, "licence_code": licence_code(art.licence),
                "source_kind": "jats", "source_path": source, "page": None, "pdf_bbox": None, "method": "jats",
                "inline_refs": fig.inline_refs, "shard": w.shard,
            }
        )
    if not art.figures:
        w.skip(source, "no-figures", f"{xml.name}: the article has no <fig>", article_id)
    w.articles.append(
        {
            "article_id": article_id, "pmcid": art.pmcid, "pmid": art.pmid, "doi": art.doi, "title": art.title,
            "journal": art.journal, "licence": art.licence, "licence_code": licence_code(art.licence),
            "source_kind": "jats", "source_path": source, "n_figures": n_ok, "shard": w.shard,
        }
    )


def _ingest_pdf(pdf: Path, source: str, w: ShardWriter, cfg: dict) -> None:
    from .pdf import extract_pdf_figures, pdf_metadata  # PyMuPDF is imported only when a PDF comes

    figures, skips = extract_pdf_figures(pdf, dpi=cfg["pdf_dpi"], method=cfg["pdf_method"], max_pixels=cfg["max_image_pixels"])
    meta = pdf_metadata(pdf) if figures or not skips else {}
    article_id = meta.get("doi") or pdf.stem
    for reason, detail in skips:
        w.skip(source, reason, detail, article_id)
    for i, fig in enumerate(figures, start=1):
        key = safe_key(fig.label.lower()) if fig.label else f"p{fig.page}-{i}"
        figure_id = w.unique_figure_id(article_id, key)
        saved = save_figure_image(fig.image, w.out_dir / "images" / figure_id, cfg["max_image_pixels"])
        w.figures.append(
            {
                "figure_id": figure_id, "article_id": article_id, "pmcid": None, "pmid": None, "doi": meta.get("doi"),
                "label": fig.label, "caption_title": fig.caption_title, "caption": fig.caption,
                "image_path": saved.path.relative_to(w.out_dir).as_posix(), "image_format": saved.format,
                "width": saved.width, "height": saved.height, "image_sha256": saved.sha256, "source_image": None,
                "licence": meta.get("licence"), "licence_code": licence_code(meta.get("licence")),
                "source_kind": "pdf", "source_path": source, "page": fig.page,
                "pdf_bbox": list(fig.bbox), "method": fig.method, "inline_refs": [], "shard": w.shard,
            }
        )
    if figures or not skips:
        w.articles.append(
            {
                "article_id": article_id, "pmcid": None, "pmid": None, "doi": meta.get("doi"), "title": meta.get("title"),
                "journal": None, "licence": meta.get("licence"), "licence_code": licence_code(meta.get("licence")),
                "source_kind": "pdf", "source_path": source,
                "n_figures": len(figures), "shard": w.shard,
            }
        )


def _ingest_package(pkg: Path, source: str, w: ShardWriter, cfg: dict, meta: Unit | None = None) -> None:
    with tempfile.TemporaryDirectory(prefix=PACKAGE_TMP_PREFIX, dir=w.out_dir) as tmp:
        try:
            extracted = extract_package(pkg, tmp, cfg["max_member_bytes"], cfg["max_package_bytes"], cfg["max_members"])
        except PackageError as exc:
            w.skip(source, "bad-package", str(exc))
            return
        for name, why in extracted.refused:
            w.skip(source, "bad-package", f"member {name!r} refused: {why}")
        xmls = [p for p in extracted.files if p.suffix.lower() in (".nxml", ".xml") and is_jats(p)]
        pdfs = [p for p in extracted.files if p.suffix.lower() == ".pdf"]
        if xmls:
            index_cache: dict = {}
            for xml in sorted(xmls):
                _ingest_jats(xml, Path(tmp), f"{source}!{xml.relative_to(tmp).as_posix()}", w, cfg, index_cache,
                             recursive=True, meta=meta)
        elif pdfs:
            for pdf in sorted(pdfs):
                _ingest_pdf(pdf, f"{source}!{pdf.relative_to(tmp).as_posix()}", w, cfg)
        else:
            w.skip(source, "bad-package", "no JATS article or PDF inside the package")


def _ingest_bulk_xml(unit: Unit, xml: Path | str | None, w: ShardWriter, cfg: dict) -> None:
    """A bulk archive's XML (``xml``: extracted file, or why not) with the figure files of the
    article's package (``unit.images``), joined by PMCID."""
    source = f"{unit.path}!{unit.member}"
    if not isinstance(xml, Path):
        why = xml or "not in the archive"
        w.skip(source, "missing-article", f"{unit.member} ({unit.pmcid}): {why}", unit.pmcid or None)
        return
    with tempfile.TemporaryDirectory(prefix=PACKAGE_TMP_PREFIX, dir=w.out_dir) as tmp:
        if unit.images:
            try:
                extracted = extract_package(unit.images, tmp, cfg["max_member_bytes"], cfg["max_package_bytes"],
                                            cfg["max_members"])
                for name, why in extracted.refused:
                    w.skip(unit.images, "bad-package", f"member {name!r} refused: {why}", unit.pmcid or None)
            except PackageError as exc:  # the text is still read; its figures will miss their images
                w.skip(unit.images, "bad-package", f"images of {unit.pmcid}: {exc}", unit.pmcid or None)
        _ingest_jats(xml, Path(tmp), source, w, cfg, {}, recursive=True, meta=unit)


def _extract_bulk_xml(units: list[Unit], dest: Path, w: ShardWriter, cfg: dict) -> dict[tuple[str, str], Path | str]:
    """The XML of every ``bulk_xml`` unit, one pass over each archive (not one per article)."""
    by_archive: dict[str, set[str]] = {}
    for u in units:
        if u.kind == "bulk_xml":
            by_archive.setdefault(u.path, set()).add(u.member)
    found: dict[tuple[str, str], Path | str] = {}
    for n, (archive, members) in enumerate(sorted(by_archive.items())):
        try:
            got = extract_members(archive, members, dest / str(n), cfg["max_member_bytes"])
        except Exception as exc:  # noqa: BLE001 - a corrupt archive skips its articles, never the shard
            got = {m: f"archive unreadable: {type(exc).__name__}: {exc}" for m in members}
        found.update({(archive, m): v for m, v in got.items()})
    return found


def ingest_units(units: list[Unit], out_dir: str | Path, shard: str, cfg: dict | None = None, progress: bool = True) -> dict:
    """Ingest ``units`` into ``out_dir`` (tables + ``images/``); return counts and timings."""
    cfg = {**DEFAULTS, **(cfg or {})}
    out_dir = Path(out_dir)
    if (out_dir / "images").exists():  # a rerun replaces the shard's images, never mixes them
        shutil.rmtree(out_dir / "images")
    for stale in out_dir.glob(PACKAGE_TMP_PREFIX + "*"):  # package extraction left by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    (out_dir / "images").mkdir(parents=True)
    w = ShardWriter(out_dir, shard)
    index_cache: dict = {}
    t0 = time.perf_counter()
    bulk_tmp = tempfile.TemporaryDirectory(prefix=PACKAGE_TMP_PREFIX + "bulk-", dir=out_dir)
    bulk_xml = _extract_bulk_xml(units, Path(bulk_tmp.name), w, cfg)
    for unit in tqdm(units, desc=f"ingest {shard}", unit="article", disable=not progress):
        path = Path(unit.path)
        try:
            if unit.kind == "jats":
                _ingest_jats(path, path.parent, unit.path, w, cfg, index_cache)
            elif unit.kind == "package":
                _ingest_package(path, unit.path, w, cfg, meta=unit if unit.pmcid else None)
            elif unit.kind == "bulk_xml":
                _ingest_bulk_xml(unit, bulk_xml.get((unit.path, unit.member)), w, cfg)
            elif unit.kind == "retracted":
                source = f"{unit.path}!{unit.member}" if unit.member else unit.path
                w.skip(source, "retracted", f"{unit.pmcid} is marked retracted in the PMC OA file list "
                       f"(last updated {unit.updated or 'unknown'}); not ingested", unit.pmcid or None)
            elif unit.kind == "pdf":
                _ingest_pdf(path, unit.path, w, cfg)
            elif unit.kind == "link":
                w.skip(unit.path, "symlink", f"{path.name}: a symbolic link inside an input folder, not followed")
            else:
                w.skip(unit.path, "unsupported-input", f"{path.name}: not a JATS file, article folder, package or PDF")
        except Exception as exc:  # one bad article never kills the shard
            log.exception("unexpected error on %s", unit.path)
            w.skip(unit.path, "error", f"{type(exc).__name__}: {exc}")
    bulk_tmp.cleanup()
    paths = w.write()
    reasons = Counter(s["reason"] for s in w.skips)
    return {
        "units": len(units),
        "articles": len(w.articles),
        "figures": len(w.figures),
        "skips": len(w.skips),
        "skip_reasons": dict(sorted(reasons.items())),
        "seconds": round(time.perf_counter() - t0, 3),
        "outputs": {k: str(v) for k, v in paths.items()},
    }


def ingest_paths(paths: list[str | Path], out_dir: str | Path, shard: str = "manual", cfg: dict | None = None, progress: bool = True) -> dict:
    """Discover the units under ``paths`` and ingest them as one shard (the CLI's entry point)."""
    return ingest_units(discover_units(paths), out_dir, shard, cfg, progress)
