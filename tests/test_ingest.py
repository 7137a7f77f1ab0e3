"""The ingest stage end to end on the bundled sample corpus and on a shard full of bad input."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from panel2patch.ingest import discover_units, ingest_paths, make_shards
from panel2patch.ingest import tables

ARTICLE = """<?xml version="1.0"?>
<article xmlns:xlink="http://www.w3.org/1999/xlink"><front><article-meta>
<article-id pub-id-type="pmc">{pmc}</article-id>
<permissions><license xlink:href="http://creativecommons.org/licenses/by/4.0/"/></permissions>
</article-meta></front><body><p>Cells divide (<xref ref-type="fig" rid="f1">Figure 1B</xref>). Nothing else (Fig. 2).</p>{figs}</body></article>"""
FIG = '<fig id="{id}"><label>Figure {n}</label><caption>{caption}</caption><graphic xlink:href="{href}"/></fig>'


def write_article(folder: Path, pmc: str, figs: list[tuple[str, str, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    body = "".join(FIG.format(id=i, n=n, caption=c, href=h) for n, (i, c, h) in enumerate(figs, start=1))
    path = folder / f"{pmc}.nxml"
    path.write_text(ARTICLE.format(pmc=pmc, figs=body))
    return path


def random_png(path: Path, size=(120, 90)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(len(str(path))).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory, sample):
    out = tmp_path_factory.mktemp("sample")
    stats = ingest_paths([sample], out, shard="shard-00000", progress=False)
    return out, stats


def test_sample_corpus_every_jats_figure(sample_run):
    out, stats = sample_run
    figs = pd.read_parquet(out / "figures.parquet")
    jats = figs[figs.source_kind == "jats"]
    assert sorted(jats.figure_id) == sorted(
        [f"elife-32671__fig{i}" for i in range(1, 6)]
        + ["10.7554_eLife.00353__fig1", "10.7554_eLife.19405__fig1", "10.7554_eLife.01222__fig4"]
    )
    skips = pd.read_parquet(out / "skips.parquet")
    # the only skip in the sample is the Insight PDF that has no figure
    assert skips[["reason"]].to_dict("records") == [{"reason": "no-figures"}]
    assert skips.source_path.iloc[0].endswith("elife-22661.pdf")
    assert figs.figure_id.is_unique
    pkg = jats[jats.figure_id.str.contains("00353")].iloc[0]
    assert pkg.licence_code == "cc-by" and pkg.source_path.endswith("elife-00353.tar.gz!elife-00353/elife-00353-v1.xml")
    assert pkg.source_image == "elife-00353-fig1-v1.tif" and pkg.image_format == "png"


def test_sample_images_match_their_records(sample_run):
    out, _ = sample_run
    figs = pd.read_parquet(out / "figures.parquet")
    for row in figs.itertuples():
        path = out / row.image_path
        assert hashlib.sha256(path.read_bytes()).hexdigest() == row.image_sha256
        with Image.open(path) as im:
            assert im.mode == "RGB" and im.size == (row.width, row.height)
    # JPEG sources are kept byte for byte
    jpg = figs[figs.figure_id == "elife-32671__fig1"].iloc[0]
    assert jpg.image_format == "jpeg"


def test_sample_inline_refs_and_schema(sample_run):
    out, _ = sample_run
    assert pq.read_schema(out / "figures.parquet").equals(tables.FIGURES, check_metadata=False)
    assert pq.read_schema(out / "skips.parquet").equals(tables.SKIPS, check_metadata=False)
    figs = pd.read_parquet(out / "figures.parquet").set_index("figure_id")
    refs = figs.loc["elife-32671__fig2", "inline_refs"]
    assert len(refs) > 0 and all("Figure 2" in r["sentence"] for r in refs)


def test_sample_pdf_figures(sample_run):
    out, _ = sample_run
    figs = pd.read_parquet(out / "figures.parquet")
    pdf = figs[figs.source_kind == "pdf"]
    assert set(pdf.method) <= {"pdf-layout", "pdf-heuristic"}
    by_article = pdf.groupby(pdf.source_path.map(lambda p: Path(p).name)).label.apply(sorted).to_dict()
    assert by_article["elife-00790.pdf"] == [f"Figure {i}" for i in range(1, 9)]
    assert by_article["elife-15600.pdf"] == [f"Figure {i}" for i in range(1, 8)]
    assert all(c.startswith(l) for c, l in zip(pdf.caption, pdf.label))
    assert set(pdf.licence_code) == {"cc-by"}  # from the licence sentence printed on page 1
    assert set(pdf.article_id) == {"10.7554/eLife.00790", "10.7554/eLife.15600"}


def test_ids_are_stable_across_runs(sample_run, tmp_path, sample):
    out, _ = sample_run
    ingest_paths([sample / "elife-32671"], tmp_path, shard="shard-00000", progress=False)
    a = pd.read_parquet(out / "figures.parquet").set_index("figure_id")
    b = pd.read_parquet(tmp_path / "figures.parquet").set_index("figure_id")
    assert list(b.index) == [f"elife-32671__fig{i}" for i in range(1, 6)]
    assert (a.loc[b.index, "image_sha256"] == b.image_sha256).all()


def test_bad_inputs_are_recorded_and_good_output_kept(tmp_path):
    import pymupdf

    inp = tmp_path / "in"
    # one article: a good figure, a truncated image, a missing image, a figure without caption
    art = inp / "art1"
    random_png(art / "good.png")
    random_png(art / "trunc.png")
    data = (art / "trunc.png").read_bytes()
    (art / "trunc.png").write_bytes(data[: len(data) // 3])
    random_png(art / "nocap.png")
    write_article(art, "111", [("f1", "<p>Good figure.</p>", "good.png"), ("f2", "<p>Truncated.</p>", "trunc.png"),
                               ("f3", "<p>Missing.</p>", "absent"), ("f4", "", "nocap.png")])
    # malformed XML, in its own folder
    (inp / "broken").mkdir()
    (inp / "broken" / "broken.nxml").write_text("<article><front>")
    # a hostile package that still holds one good article
    pkgsrc = tmp_path / "pkgsrc"
    write_article(pkgsrc, "222", [("g1", "<title>Packaged.</title><p>Fine.</p>", "g1.png")])
    random_png(pkgsrc / "g1.png")
    with tarfile.open(inp / "PMC222.tar.gz", "w:gz") as tf:
        tf.add(pkgsrc / "222.nxml", "PMC222/222.nxml")
        tf.add(pkgsrc / "g1.png", "PMC222/g1.png")
        info = tarfile.TarInfo("../../outside.txt")
        info.size = 4
        tf.addfile(info, io.BytesIO(b"evil"))
    # a PDF without figures and a corrupt PDF
    doc = pymupdf.open()
    doc.new_page().insert_text((72, 72), "Only text here, no figure at all.")
    doc.save(inp / "textonly.pdf")
    (inp / "corrupt.pdf").write_bytes(b"%PDF-1.7\n garbage")
    other = tmp_path / "notes.docx"
    other.write_bytes(b"PK\x03\x04")

    stats = ingest_paths([inp, other], tmp_path / "out", shard="shard-00007", progress=False)
    figs = pd.read_parquet(tmp_path / "out" / "figures.parquet")
    skips = pd.read_parquet(tmp_path / "out" / "skips.parquet")
    assert sorted(figs.figure_id) == ["PMC111__f1", "PMC222__g1"]
    assert figs.set_index("figure_id").loc["PMC111__f1", "inline_refs"][0]["panels"].tolist() == ["B"]
    reasons = sorted(skips.reason)
    assert reasons == sorted(["unreadable-image", "missing-image", "missing-caption", "malformed-xml", "bad-package",
                              "no-figures", "unreadable-pdf", "unsupported-input"])
    assert not (tmp_path / "outside.txt").exists()
    assert set(skips.shard) == {"shard-00007"} and all(skips.detail.str.len() > 0)
    assert stats["figures"] == 2 and stats["skip_reasons"]["missing-image"] == 1


def test_discovery_and_sharding(sample, tmp_path):
    units = discover_units([sample])
    kinds = {Path(u.path).name: u.kind for u in units}
    assert kinds == {"manuscript.xml": "jats", "elife-01222.xml": "jats", "elife-00353.tar.gz": "package",
                     "elife-19405.tar.gz": "package",
                     "elife-00790.pdf": "pdf", "elife-15600.pdf": "pdf", "elife-22661.pdf": "pdf"}
    shards = make_shards(units, 4, 2)
    assert list(shards) == ["shard-00000", "shard-00001"] and sum(map(len, shards.values())) == len(units)
    # a PDF beside a JATS file is the same article: the JATS is used, the PDF is not a unit
    write_article(tmp_path / "a", "9", [])
    (tmp_path / "a" / "9.pdf").write_bytes(b"%PDF")
    assert [u.kind for u in discover_units([tmp_path / "a"])] == ["jats"]
    with pytest.raises(FileNotFoundError):
        discover_units([tmp_path / "nope"])


def test_cli_writes_the_same_tables(tmp_path, sample):
    out = tmp_path / "cli"
    proc = subprocess.run([sys.executable, "-m", "panel2patch.cli", "ingest", str(sample / "elife-32671"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["figures"] == 5
    lib = tmp_path / "lib"
    ingest_paths([sample / "elife-32671"], lib, progress=False)
    a, b = pd.read_parquet(out / "figures.parquet"), pd.read_parquet(lib / "figures.parquet")
    pd.testing.assert_frame_equal(a.drop(columns="inline_refs"), b.drop(columns="inline_refs"))
    bad = subprocess.run([sys.executable, "-m", "panel2patch.cli", "ingest", str(tmp_path / "missing"), "--out", str(out)],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "does not exist" in bad.stderr and "Traceback" not in bad.stderr


def test_schema_doc_names_every_column():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "schema.md").read_text()
    for schema in (tables.FIGURES, tables.ARTICLES, tables.SKIPS):
        for name in schema.names:
            assert name in doc, name
    for reason in tables.SKIP_REASONS:
        assert f"`{reason}`" in doc
