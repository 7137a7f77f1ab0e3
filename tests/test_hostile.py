"""Hostile and unusual input (issue #17), generated here, never downloaded: each bad item gets a
clear skip or error record, and the good items beside it are kept. Seconds, not minutes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from panel2patch.ingest import discover_units, ingest_paths

ARTICLE = """<?xml version="1.0" encoding="{enc}"?>
<article xmlns:xlink="http://www.w3.org/1999/xlink"><front><article-meta>
<article-id pub-id-type="pmc">{pmc}</article-id>
<permissions><license xlink:href="http://creativecommons.org/licenses/by/4.0/"/></permissions>
</article-meta></front><body>{figs}</body></article>"""
FIG = '<fig id="{id}"><label>Figure {n}</label><caption><p>{caption}</p></caption><graphic xlink:href="{href}"/></fig>'


def article(folder: Path, pmc: str, figs: list[tuple[str, str]], enc: str = "utf-8", name: str | None = None) -> Path:
    """A JATS file ``<folder>/<pmc>.nxml`` (or ``name``) with figures (id, href), encoded ``enc``."""
    folder.mkdir(parents=True, exist_ok=True)
    body = "".join(FIG.format(id=i, n=n, caption=f"Figure {n} of {pmc}, a caption.", href=h)
                   for n, (i, h) in enumerate(figs, start=1))
    path = folder / (name or f"{pmc}.nxml")
    path.write_bytes(ARTICLE.format(enc=enc.upper(), pmc=pmc, figs=body).encode(enc))
    return path


def png(path: Path, size=(120, 90), seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return path


def ingest(paths, out: Path, **cfg) -> tuple[pd.DataFrame, pd.DataFrame]:
    ingest_paths(paths, out, shard="shard-00000", cfg=cfg or None, progress=False)
    return pd.read_parquet(out / "figures.parquet"), pd.read_parquet(out / "skips.parquet")


# --------------------------------------------------------------------------------------- ingest
def test_max_image_pixels_above_pils_own_limit_is_honoured(tmp_path, monkeypatch):
    # PIL's default limit (89,478,485 pixels) stood in for by a small one, so the images stay small
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    inp = tmp_path / "in"
    article(inp, "PMC8", [("f1", "big.png"), ("f2", "huge.png")])
    png(inp / "big.png", (300, 200))  # 60,000 px: 6x PIL's limit, under the configured one
    png(inp / "huge.png", (400, 400))  # 160,000 px: over the configured limit
    figs, skips = ingest([inp], tmp_path / "out", max_image_pixels=100_000)
    assert list(figs.figure_id) == ["PMC8__f1"] and (figs.width[0], figs.height[0]) == (300, 200)
    assert skips[["figure_key", "reason"]].values.tolist() == [["f2", "decompression-bomb"]]
    assert "limit of 100000 pixels" in skips.detail[0]
    assert Image.MAX_IMAGE_PIXELS == 10_000  # put back


@pytest.mark.parametrize("enc", ["utf-16", "utf-16-le", "utf-16-be"])
def test_a_utf16_article_in_a_folder_walk_is_read(tmp_path, enc):
    inp = tmp_path / "in"
    article(inp / "a", "PMC6", [("f1", "fig1.png")], enc=enc, name="article.xml")  # .xml: sniffed, not assumed
    png(inp / "a" / "fig1.png")
    assert [u.kind for u in discover_units([inp])] == ["jats"]
    figs, skips = ingest([inp], tmp_path / "out")
    assert list(figs.figure_id) == ["PMC6__f1"] and skips.empty


def test_an_article_lxml_cannot_decode_is_a_skip_not_silently_absent(tmp_path):
    inp = tmp_path / "in"
    article(inp / "a", "PMC7", [("f1", "fig1.png")], enc="utf-32", name="article.xml")
    png(inp / "a" / "fig1.png")
    (inp / "a" / "manifest.xml").write_text('<dar><document type="article" path="article.xml"/></dar>')
    figs, skips = ingest([inp], tmp_path / "out")
    assert figs.empty and list(skips.reason) == ["malformed-xml"] and skips.source_path[0].endswith("article.xml")


def test_a_missing_figure_is_not_taken_from_a_neighbouring_article(tmp_path):
    # A.nxml's fig1.png is missing; the article in the sub-folder B/ has its own fig1.png
    inp = tmp_path / "in"
    article(inp, "PMC1", [("f1", "fig1.png")])
    article(inp / "B", "PMC2", [("f1", "fig1.png")])
    png(inp / "B" / "fig1.png")
    figs, skips = ingest([inp], tmp_path / "out")
    assert list(figs.figure_id) == ["PMC2__f1"] and list(figs.source_path) == [str(inp / "B" / "PMC2.nxml")]
    assert skips[["article_id", "figure_key", "reason"]].values.tolist() == [["PMC1", "f1", "missing-image"]]


def test_symlinks_in_input_folders_are_refused_not_followed(tmp_path):
    outside = tmp_path / "outside"
    png(outside / "secret.png", seed=1)
    article(outside / "E", "PMC5", [("f1", "e.png")])
    png(outside / "E" / "e.png", seed=2)
    linked = article(outside, "PMC4", [])
    inp = tmp_path / "in"
    article(inp / "C", "PMC3", [("f1", "good.png"), ("f2", "link.png")])
    png(inp / "C" / "good.png", seed=3)
    (inp / "C" / "link.png").symlink_to(outside / "secret.png")  # a figure file pointing out of the tree
    (inp / "D.nxml").symlink_to(linked)  # an article file pointing out of the tree
    (inp / "E").symlink_to(outside / "E", target_is_directory=True)  # an article folder elsewhere
    (inp / "gone.pdf").symlink_to(tmp_path / "nowhere.pdf")  # dangling
    figs, skips = ingest([inp], tmp_path / "out")
    assert list(figs.figure_id) == ["PMC3__f1"]
    links = skips[skips.reason == "symlink"]
    assert sorted(links.figure_key.fillna("-")) == ["-", "-", "-", "f2"]
    assert {Path(p).name for p in links.source_path} == {"PMC3.nxml", "D.nxml", "E", "gone.pdf"}
    assert set(skips.reason) == {"symlink"} and all(links.detail.str.contains("symbolic link"))
    # a path named explicitly is the user's choice: it is read even when it is a link
    figs, _ = ingest([inp / "E"], tmp_path / "out2")
    assert list(figs.figure_id) == ["PMC5__f1"]


# ----------------------------------------------------------------------------------------- CLIs
def _cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                                         os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "panel2patch.cli", *args], input=stdin, capture_output=True,
                          timeout=120, env=env)


def test_split_caption_writes_an_error_record_per_bad_line_and_keeps_the_rest(tmp_path):
    good = [{"id": 1, "caption": "(A) Cells. (B) Nuclei (arrows)."}, {"id": 5, "caption": "A, left. B, right."}]
    lines = [b"\xef\xbb\xbf" + json.dumps(good[0]).encode(),  # a UTF-8 byte-order mark before line 1
             b'{"id": 2, "caption": "\\ud800 (A) x. (B) y."}',  # a lone surrogate
             b'{"id": 3, "caption": "caf\xe9 (A) x."}',  # Latin-1, not UTF-8
             b"[" * 100_000,  # nested deeper than any parser's stack
             json.dumps(good[1]).encode(), b"", b"  "]
    src = tmp_path / "in.jsonl"
    src.write_bytes(b"\n".join(lines) + b"\n")
    proc = _cli("split-caption", "--in", str(src), "--out", str(tmp_path / "out.jsonl"))
    assert proc.returncode == 1, proc.stderr.decode()[-2000:]  # some lines failed, the rest is written
    out = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r.get("id") for r in out] == [1, None, None, None, 5]
    assert [r.get("line") for r in out if "error" in r] == [2, 3, 4]
    assert "surrogate" in out[1]["error"] and "UTF-8" in out[2]["error"] and "deeply" in out[3]["error"]
    assert set(out[0]["subcaptions"]) >= {"A", "B"} and set(out[4]["subcaptions"]) >= {"A", "B"}
    assert b"5 records, 3 errors" in proc.stderr
    piped = _cli("split-caption", "--in", "-", "--out", "-", stdin=src.read_bytes())  # the same through pipes
    assert piped.returncode == 1 and [json.loads(x) for x in piped.stdout.decode().splitlines()] == out


# --------------------------------------------------------------------------------------- layout
@pytest.mark.parametrize("size", [(1, 5000), (5000, 1), (3, 4000), (4001, 7)])
def test_a_thin_figure_gets_a_panel_box_over_its_whole_size(size):
    from panel2patch.layout.parse import parse_figure

    img = Image.new("RGB", size, "white")
    img.paste((20, 60, 200), (0, 0, size[0], size[1]))  # one solid panel, edge to edge
    res = parse_figure(img, max_side=1000, kinds=False)
    assert (res["width"], res["height"]) == size
    assert [p["bbox"] for p in res["panels"]] == [[0, 0, *size]]


# ------------------------------------------------------------------------------------- workflow
BOMB = """<?xml version="1.0"?>
<!DOCTYPE article [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;"><!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
<!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;"><!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">]>
<article><front><article-meta><article-id pub-id-type="pmc">PMC900001</article-id></article-meta></front>
<body><fig id="f1"><caption><p>&f;</p></caption><graphic xlink:href="x.png" xmlns:xlink="http://www.w3.org/1999/xlink"/></fig></body></article>"""
XXE = """<?xml version="1.0"?>
<!DOCTYPE article [<!ENTITY s SYSTEM "file://{secret}">]>
<article xmlns:xlink="http://www.w3.org/1999/xlink"><front><article-meta><article-id pub-id-type="pmc">PMC900002</article-id>
<permissions><license xlink:href="http://creativecommons.org/licenses/by/4.0/"/></permissions></article-meta></front>
<body><fig id="f1"><caption><p>Leak: &s;</p></caption><graphic xlink:href="fig.png"/></fig></body></article>"""
XINCLUDE = """<?xml version="1.0"?>
<article xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:xi="http://www.w3.org/2001/XInclude"><front><article-meta>
<article-id pub-id-type="pmc">PMC900003</article-id>
<permissions><license xlink:href="http://creativecommons.org/licenses/by/4.0/"/></permissions></article-meta></front>
<body><fig id="f1"><caption><p>Leak: <xi:include href="file://{secret}" parse="text"/></p></caption>
<graphic xlink:href="fig.png"/></fig></body></article>"""
REMOTE_DTD = """<?xml version="1.0"?>
<!DOCTYPE article SYSTEM "http://127.0.0.1:9/never.dtd">
<article xmlns:xlink="http://www.w3.org/1999/xlink"><front><article-meta><article-id pub-id-type="pmc">PMC900004</article-id>
<permissions><license xlink:href="http://creativecommons.org/licenses/by/4.0/"/></permissions></article-meta></front>
<body><fig id="f1"><caption><p>A remote DTD is never fetched.</p></caption><graphic xlink:href="fig.png"/></fig></body></article>"""


def hostile_corpus(root: Path, secret: Path) -> Path:
    """A folder of hostile inputs next to one good article (the sample's elife-32671)."""
    import shutil
    import tarfile

    import pymupdf

    src = Path(__file__).resolve().parents[1] / "resources" / "sample" / "elife-32671"
    shutil.copytree(src, root / "good")
    for name, text in (("bomb", BOMB), ("xxe", XXE), ("xinclude", XINCLUDE), ("dtd", REMOTE_DTD)):
        (root / name).mkdir()
        (root / name / f"{name}.nxml").write_text(text.format(secret=secret))
        png(root / name / "fig.png", seed=3)
    (root / "malformed").mkdir()
    (root / "malformed" / "m.nxml").write_text("<article><front><unclosed></article>")
    article(root / "corrupt", "PMC900005", [("f1", "fig.png")])
    (root / "corrupt" / "fig.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png at all")
    article(root / "missing", "PMC900006", [("f1", "nowhere.png")])
    article(root / "thin", "PMC900007", [("f1", "fig.png")])
    png(root / "thin" / "fig.png", size=(1, 5000))
    evil = root / "pkg"
    evil.mkdir()
    (evil / "escape.txt").write_text("escaped")
    with tarfile.open(root / "PMC900008.tar.gz", "w:gz") as tar:
        tar.add(evil / "escape.txt", arcname="../../escape.txt")
    shutil.rmtree(evil)
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "A PDF with text and no figures.")
    doc.save(root / "nofigures.pdf")
    return root


@pytest.mark.slow
def test_hostile_corpus_through_the_workflow(tmp_path_factory):
    """The real workflow (ingest to corpus) on a folder of hostile items beside one good article:
    the run succeeds, every bad item is a recorded skip, the good article's figure pairs are kept,
    nothing is read from outside the inputs and nothing is written outside the results."""
    from test_workflow import copy_repo, snakemake

    base = tmp_path_factory.mktemp("hostile")
    secret = base / "secret.txt"
    secret.write_text("TOPSECRET-4711")
    work = copy_repo(base / "repo")
    hostile_corpus(work / "hostile", secret)
    proc = snakemake(work, "results/corpus/pairs.parquet", "--config", "inputs=[hostile]", timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = work / "results"
    skips = pd.concat([pd.read_parquet(p) for p in results.glob("shard-*/ingest/skips.parquet")])
    pairs = pd.read_parquet(results / "corpus" / "pairs.parquet")
    assert pairs[(pairs.level == "figure") & pairs.keep].article_id.nunique() >= 1
    assert pairs[pairs.level == "figure"].figure_id.str.startswith("good__").sum() == 5
    text = " ".join(skips.fillna("").astype(str).agg(" ".join, axis=1))
    for item in ("bomb", "malformed", "corrupt", "missing", "PMC900008", "nofigures"):
        assert item in text, (item, skips.to_string()[:3000])
    leaked = [p for p in results.rglob("*") if p.is_file() and b"TOPSECRET-4711" in p.read_bytes()]
    assert not leaked
    assert not list(base.rglob("escape.txt"))


def test_a_package_extraction_left_by_a_killed_run_is_removed(tmp_path):
    """kill -9 during a package left its temporary extraction inside the shard's ingest folder, so
    the recovered outputs differed from a clean run's."""
    src = Path(__file__).resolve().parents[1] / "resources" / "sample" / "packages" / "elife-00353.tar.gz"
    out = tmp_path / "ingest"
    (out / "p2p-pkg-dead" / "elife-00353").mkdir(parents=True)
    (out / "p2p-pkg-dead" / "elife-00353" / "elife-00353-v1.xml").write_text("<article/>")
    figs, _ = ingest([src], out)
    assert len(figs) >= 1 and not list(out.glob("p2p-pkg-*"))
