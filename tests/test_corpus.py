"""The corpus stage on real sample articles: pairs at three levels that link up, filters with
recorded reasons, the split by article, reproducible WebDataset shards read back with the
``webdataset`` library, and the QC report."""

from __future__ import annotations

import io
import json
import random
import shutil
from pathlib import Path

import pandas as pd
import pytest
import webdataset as wds
from PIL import Image

from panel2patch.align.stage import run_align_shard
from panel2patch.corpus.check import check_corpus, read_samples
from panel2patch.corpus.pairs import phash, read_licence_table
from panel2patch.corpus.report import write_report
from panel2patch.corpus.select import near_duplicates, split_articles
from panel2patch.corpus.stage import run_corpus, run_pairs_shard
from panel2patch.ingest import discover_units
from panel2patch.ingest.run import run_shard
from panel2patch.layout.stage import run_layout_shard
from panel2patch.markers.stage import run_markers_shard
from panel2patch.text.stage import run_text_shard
from panel2patch.tracking import sha256_path

from conftest import SAMPLE

# three articles (so every split gets one), two shards; elife-01222 has arrows with caption phrases
SHARDS = {"shard-00000": [SAMPLE / "elife-01222", SAMPLE / "packages" / "elife-00353.tar.gz"],
          "shard-00001": [SAMPLE / "packages" / "elife-19405.tar.gz", SAMPLE / "elife-32671"]}
CFG = {"licence_table": str(SAMPLE / "licences.csv")}


def _stages(results: Path, shard: str, units: list[Path]) -> None:
    d = results / shard
    run_shard(discover_units([str(u) for u in units]), d / "ingest", shard, None, results_dir=results)
    run_text_shard(d / "ingest" / "figures.parquet", d / "text", shard, results_dir=results)
    run_layout_shard(d / "ingest" / "figures.parquet", d / "ingest", d / "layout", shard, results_dir=results)
    run_align_shard(d / "layout" / "panels.parquet", d / "text" / "subcaptions.parquet", d / "align" / "panel_text.parquet",
                    shard, results_dir=results)
    run_markers_shard(d / "ingest" / "figures.parquet", d / "layout" / "panels.parquet", d / "text" / "markers.parquet",
                      d / "markers", shard, results_dir=results)


def _pair_tables(results: Path, cfg: dict, tag: str = "pairs") -> list[Path]:
    return _pair_tables_for(results, list(SHARDS), cfg, tag)


def _pair_tables_for(results: Path, shards: list[str], cfg: dict = CFG, tag: str = "pairs") -> list[Path]:
    out = []
    for shard in shards:
        d = results / shard
        path = d / "corpus" / f"{tag}.parquet"
        run_pairs_shard(d / "ingest" / "figures.parquet", d / "layout" / "panels.parquet",
                        d / "align" / "panel_text.parquet", d / "markers" / "patches.parquet", path, shard, cfg,
                        results_dir=results)
        out.append(path)
    return out


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    results = tmp_path_factory.mktemp("corpus") / "results"
    for shard, units in SHARDS.items():
        _stages(results, shard, units)
    (results / "ingest").mkdir()
    (results / "ingest" / "summary.json").write_text(json.dumps({"articles": 4, "figures": 8}))
    run_corpus(_pair_tables(results, CFG), results / "corpus", CFG, results_dir=results)
    return results


def _read_shards(corpus: Path) -> dict[str, list[dict]]:
    sizes = json.loads((corpus / "shards" / "sizes.json").read_text())
    return {name: read_samples(corpus / "shards" / name) for name in sizes}


def test_shards_hold_three_linked_levels_split_by_article(results):
    corpus = results / "corpus"
    shards = _read_shards(corpus)
    sizes = json.loads((corpus / "shards" / "sizes.json").read_text())
    assert {n: len(s) for n, s in shards.items()} == sizes
    samples = [s for ss in shards.values() for s in ss]
    assert {s["level"] for s in samples} == {"figure", "panel", "patch"}
    by_id = {s["id"]: s for s in samples}
    assert len(by_id) == len(samples)
    for s in samples:
        assert s["text"] and s["_image"], s["id"]
        Image.open(io.BytesIO(s["_image"])).verify()
        if s["level"] == "figure":
            assert s["parent_id"] is None and s["figure_id"] == s["id"]
        else:  # parent present, same figure, article and split
            parent = by_id[s["parent_id"]]
            assert parent["level"] == {"panel": "figure", "patch": "panel"}[s["level"]]
            assert (parent["figure_id"], parent["article_id"], parent["split"]) == (s["figure_id"], s["article_id"], s["split"])
            assert s["panel_id"] == (s["id"] if s["level"] == "panel" else parent["id"])
    splits_of = {}
    for name, ss in shards.items():
        assert {s["split"] for s in ss} == {name.split("-")[0]}
        for s in ss:
            splits_of.setdefault(s["article_id"], set()).add(s["split"])
        figs = [s["figure_id"] for s in ss]  # a figure's pairs are contiguous, figure first
        assert all(figs[i] == figs[i - 1] or figs[i] not in figs[:i] for i in range(1, len(figs)))
        assert all(s["level"] == "figure" for i, s in enumerate(ss) if i == 0 or figs[i] != figs[i - 1])
    assert all(len(v) == 1 for v in splits_of.values()) and len(splits_of) == 4
    assert {next(iter(v)) for v in splits_of.values()} == {"train", "val", "test"}
    # the arrows of elife-01222 became patch pairs with the caption's phrases
    patches = [s for s in samples if s["level"] == "patch"]
    assert patches and all("GamGFP" in s["text"] and s["text_source"] == "marker_phrase" for s in patches)


def test_manifest_and_pair_table_trace_every_shard(results):
    corpus = results / "corpus"
    manifest = pd.read_parquet(corpus / "manifest.parquet")
    for row in manifest.itertuples():
        assert row.sha256 == sha256_path(corpus / "shards" / row.shard)
        assert row.pairs == row.figure_pairs + row.panel_pairs + row.patch_pairs
    pairs = pd.read_parquet(corpus / "pairs.parquet")
    kept = pairs[pairs.keep]
    assert kept.tar.notna().all() and pairs[~pairs.keep].tar.isna().all()
    assert kept.groupby("tar").size().to_dict() == dict(zip(manifest.shard, manifest.pairs))
    assert pairs[~pairs.keep].drop_reason.notna().all()
    # the JATS of elife-32671 states no licence: it comes from the licence table, recorded as such
    fig = pairs[(pairs.article_id == "elife-32671") & (pairs.level == "figure")]
    assert (fig.licence_source == "table").all() and (fig.licence_code == "cc-by").all()
    yld = json.loads((corpus / "yield.json").read_text())
    assert yld["pairs"]["panel"] > yld["pairs"]["figure"] > 0 and yld["pairs"]["patch"] > 0
    assert yld["per_figure"]["all"] == round(len(kept) / yld["source_figures"], 3)


def test_shards_are_reproducible(results, tmp_path):
    tables = [results / s / "corpus" / "pairs.parquet" for s in SHARDS]
    run_corpus(tables, tmp_path / "again", CFG, results_dir=results)
    a = pd.read_parquet(results / "corpus" / "manifest.parquet")
    b = pd.read_parquet(tmp_path / "again" / "manifest.parquet")
    assert list(a.sha256) == list(b.sha256)
    # Several shards written at once give the bytes written one at a time.
    small = {**CFG, "shard_max_pairs": 5}
    run_corpus(tables, tmp_path / "one", small, results_dir=results)
    run_corpus(tables, tmp_path / "three", small, results_dir=results, threads=3)
    one, three = (pd.read_parquet(tmp_path / d / "manifest.parquet") for d in ("one", "three"))
    assert len(one) > 3 and list(one.shard) == list(three.shard) and list(one.sha256) == list(three.sha256)
    assert (tmp_path / "one" / "shards" / "sizes.json").read_text() == (tmp_path / "three" / "shards" / "sizes.json").read_text()
    assert pd.read_parquet(tmp_path / "one" / "pairs.parquet").tar.equals(pd.read_parquet(tmp_path / "three" / "pairs.parquet").tar)


def test_licence_allow_list_and_missing_licence(results):
    tables = _pair_tables(results, {"licences": ["cc0"], "licence_table": None}, tag="cc0")
    pairs = pd.concat([pd.read_parquet(t) for t in tables])
    assert not pairs.keep.any()
    figs = pairs[pairs.level == "figure"].set_index("article_id").drop_reason
    assert set(figs.drop("elife-32671")) == {"licence-not-allowed"}
    assert set(figs.loc[["elife-32671"]]) == {"licence-unknown"}  # no table given this time
    assert set(pairs[pairs.level != "figure"].drop_reason) == {"parent-dropped"}


def test_kind_and_text_filters_record_reasons(results):
    tables = _pair_tables(results, {**CFG, "panel_kinds": ["image"], "min_text_chars": 100}, tag="strict")
    pairs = pd.concat([pd.read_parquet(t) for t in tables])
    panels = pairs[pairs.level == "panel"]
    assert not panels[panels.keep].kind.ne("image").any()
    assert "kind-excluded" in set(panels.drop_reason)
    short = pairs[pairs.drop_reason == "short-text"]
    assert len(short) and (short.text.str.strip().str.len() < 100).all()


def test_unreadable_crop_is_a_recorded_drop_not_a_crash(results, tmp_path):
    shard = "shard-00000"
    work = tmp_path / "results"
    shutil.copytree(results / shard, work / shard)
    panels = pd.read_parquet(work / shard / "layout" / "panels.parquet")
    broken = work / shard / "layout" / panels.crop_path.iloc[0]
    broken.write_bytes(broken.read_bytes()[:100])  # truncated PNG
    d = work / shard
    run_pairs_shard(d / "ingest" / "figures.parquet", d / "layout" / "panels.parquet", d / "align" / "panel_text.parquet",
                    d / "markers" / "patches.parquet", d / "corpus" / "pairs.parquet", shard, CFG, results_dir=work)
    pairs = pd.read_parquet(d / "corpus" / "pairs.parquet")
    bad = pairs[pairs.image_path == str(broken)]
    assert list(bad.drop_reason) == ["unreadable-image"] and bad.drop_detail.iloc[0]
    assert pairs.keep.sum() >= 3


def test_near_duplicate_articles_are_dropped_with_their_children(results, tmp_path):
    # the same shard twice under another article id: every copy is a near-duplicate of the original
    a = pd.read_parquet(results / "shard-00000" / "corpus" / "pairs.parquet")
    b = a.assign(article_id="zz-copy", pair_id="zz_" + a.pair_id, figure_id="zz_" + a.figure_id,
                 parent_id="zz_" + a.parent_id, panel_id="zz_" + a.panel_id)  # missing stays missing
    b.to_parquet(tmp_path / "copy.parquet")
    run_corpus([results / "shard-00000" / "corpus" / "pairs.parquet", tmp_path / "copy.parquet"], tmp_path / "c", CFG,
               results_dir=results)
    pairs = pd.read_parquet(tmp_path / "c" / "pairs.parquet")
    copy = pairs[pairs.article_id == "zz-copy"]
    orig = pairs[pairs.article_id != "zz-copy"]
    assert orig.keep.sum() == a.keep.sum() and not copy.keep.any()
    assert set(copy[copy.level == "figure"].drop_reason) == {"near-duplicate"}
    # copies of kept pairs are dropped as near-duplicates (or with their parent); pairs the original
    # shard already dropped (e.g. a patch without a phrase: no-text) keep their own reason
    was_kept = copy.pair_id.isin("zz_" + a[a.keep].pair_id)
    assert was_kept.any() and set(copy[was_kept].drop_reason) <= {"near-duplicate", "parent-dropped"}
    assert (copy[~was_kept].drop_reason.values == a[~a.keep].set_index("pair_id")
            .loc[copy[~was_kept].pair_id.str.removeprefix("zz_"), "drop_reason"].values).all()


def _dist(x: Image.Image, y: Image.Image) -> int:
    return (int(phash(x), 16) ^ int(phash(y), 16)).bit_count()


def test_phash_finds_rescaled_recompressed_copies(sample):
    a = Image.open(sample / "elife-32671" / "fig1.jpg").convert("RGB")
    buf = io.BytesIO()
    a.resize((a.width // 3, a.height // 3)).save(buf, "JPEG", quality=60)
    b = Image.open(buf)
    other = Image.open(sample / "elife-32671" / "fig2.jpg").convert("RGB")
    assert _dist(a, b) <= 8 < 16 < 60 <= _dist(a, other)


def test_phash_tells_apart_similar_radiographs(shared_data):
    # distinct chest radiographs are the hard case for perceptual hashes (64-bit pHash: distance 8)
    images = [Image.open(p).convert("RGB") for p in sorted((shared_data / "vqa-rad").rglob("*.jpg"))[:60]]
    dists = [_dist(images[i], images[j]) for i in range(len(images)) for j in range(i)]
    assert min(dists) > 40


def test_banded_near_duplicates_equal_brute_force():
    rng = random.Random(0)
    base = [rng.getrandbits(256) for _ in range(300)]
    hashes = base + [h ^ sum(1 << rng.randrange(256) for _ in range(rng.randrange(12))) for h in base[:100]]
    order = list(range(len(hashes)))
    rng.shuffle(order)
    hashes = [hashes[i] for i in order]
    groups = [i % 7 for i in range(len(hashes))]
    hexes = [f"{h:064x}" for h in hashes]
    for d, grp in ((0, None), (4, None), (8, groups), (16, groups)):
        brute = {}
        for i, h in enumerate(hashes):
            j = next((j for j in range(i) if j not in brute and (h ^ hashes[j]).bit_count() <= d
                      and (grp is None or grp[i] != grp[j])), None)
            if j is not None:
                brute[i] = j
        assert near_duplicates(hexes, d, grp) == brute
        assert d < 8 or brute  # the planted copies are found


def test_split_by_article_is_stable_and_fills_small_corpora():
    big = [f"PMC{i}" for i in range(2000)]
    s = split_articles(big, 0.1, 0.1, seed=0)
    share = pd.Series(s).value_counts(normalize=True)
    assert abs(share["val"] - 0.1) < 0.03 and abs(share["test"] - 0.1) < 0.03
    grown = split_articles(big + [f"new{i}" for i in range(500)], 0.1, 0.1, seed=0)
    assert all(grown[a] == s[a] for a in big)  # adding articles moves none
    assert split_articles(big, 0.1, 0.1, seed=1) != s
    small = split_articles(["a", "b", "c", "d"], 0.1, 0.1)
    assert set(small.values()) == {"train", "val", "test"}
    assert set(split_articles(["a", "b"], 0.1, 0.1).values()) <= {"train", "val", "test"}
    assert set(split_articles(["a", "b", "c"], 0.0, 0.0).values()) == {"train"}
    with pytest.raises(ValueError, match="val"):
        split_articles(big, 0.6, 0.5)


def test_licence_table_errors_are_clear(tmp_path):
    bad = tmp_path / "lic.csv"
    bad.write_text("article,license\nx,cc-by\n")
    with pytest.raises(ValueError, match="'id' and 'licence'"):
        read_licence_table(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_licence_table(tmp_path / "nope.csv")
    (tmp_path / "ok.tsv").write_text("id\tlicence\nPMC1\tCC BY 4.0\n")
    assert read_licence_table(tmp_path / "ok.tsv") == {"PMC1": "CC BY 4.0"}


def test_report_renders_every_section(results, tmp_path):
    path = write_report(results, list(SHARDS), tmp_path / "report", n_figures=3)
    page = path.read_text()
    for heading in ("Counts per stage", "Pairs per level", "Supervision yield", "Dropped pairs", "Skip reasons",
                    "Histograms", "Sample figures"):
        assert heading in page
    assert page.count("<svg") == 5
    imgs = sorted((tmp_path / "report" / "img").iterdir())
    assert len(imgs) == 3 and "10.7554_eLife.01222__fig4.jpg" in {p.name for p in imgs}  # the figure with patches first
    assert Image.open(imgs[0]).size[0] <= 1100
    assert "GamGFP foci" in page


def test_corpus_check_passes_the_built_corpus_and_catches_tampering(results, tmp_path):
    problems, stats = check_corpus(results / "corpus")
    assert problems == [] and set(stats["levels"]) == {"figure", "panel", "patch"} and stats["articles"] == 4
    bad = tmp_path / "corpus"
    shutil.copytree(results / "corpus", bad, ignore=shutil.ignore_patterns("report"))
    train = json.loads((bad / "shards" / "sizes.json").read_text())
    first = next(n for n in train if n.startswith("train"))
    s = read_samples(bad / "shards" / first)
    patch = next(x for x in s if x["level"] == "patch")
    leaked = {**patch, "split": "val", "id": "leak", "parent_id": "nowhere"}
    with open(bad / "shards" / "val-000009.tar", "wb") as fh, wds.TarWriter(fh, encoder=False) as sink:
        meta = {k: v for k, v in leaked.items() if not k.startswith("_")}
        sink.write({"__key__": "leak", "png": leaked["_image"], "json": json.dumps(meta).encode()})
    sizes = {**train, "val-000009.tar": 2}
    (bad / "shards" / "sizes.json").write_text(json.dumps(sizes))
    problems, _ = check_corpus(bad)
    text = "\n".join(problems)
    assert "manifest lists" in text and "1 samples, sizes.json says 2" in text
    assert "parent nowhere is not in the corpus" in text and "is in splits ['train', 'val']" in text


def test_a_shard_without_figures_gives_empty_tables_not_a_crash(tmp_path):
    # a shard whose only article is a PDF without figures (the sample's eLife Insight)
    results = tmp_path / "results"
    _stages(results, "shard-00000", [SAMPLE / "pdfs" / "elife-22661.pdf"])
    [table] = [t for t in _pair_tables_for(results, ["shard-00000"])]
    assert pd.read_parquet(table).empty
    y = run_corpus([table], results / "corpus", CFG, results_dir=results)
    assert y["pairs"] == {"figure": 0, "panel": 0, "patch": 0} and y["per_figure"]["all"] == 0.0
    assert json.loads((results / "corpus" / "shards" / "sizes.json").read_text()) == {}
    assert check_corpus(results / "corpus") == ([], {"shards": 0, "pairs": 0, "articles": 0, "levels": {}})


def test_the_same_article_in_two_shards_is_kept_once(results, tmp_path):
    # elife-01222 three times: the sample's copy (shard-00000) and two more copies in a new shard,
    # one of them a newer version by its file name; ids repeat across shards (and get -2 within one)
    work = tmp_path / "results"
    for shard in SHARDS:
        shutil.copytree(results / shard, work / shard, ignore=shutil.ignore_patterns("corpus"))
    src = SAMPLE / "elife-01222"
    for name, xml in (("a", "elife-01222.xml"), ("b", "elife-01222-v2.xml")):
        shutil.copytree(src, tmp_path / "dup" / name)
        (tmp_path / "dup" / name / "elife-01222.xml").rename(tmp_path / "dup" / name / xml)
    _stages(work, "shard-00002", [tmp_path / "dup"])
    shards = [*SHARDS, "shard-00002"]
    (work / "ingest").mkdir()
    (work / "ingest" / "summary.json").write_text(json.dumps({"articles": 6, "figures": 10}))
    run_corpus(_pair_tables_for(work, shards), work / "corpus", CFG, results_dir=work)
    assert check_corpus(work / "corpus")[0] == []
    pairs = pd.read_parquet(work / "corpus" / "pairs.parquet")
    fig = pairs[(pairs.level == "figure") & (pairs.article_id == "10.7554/eLife.01222")]
    newest = str(tmp_path / "dup" / "b" / "elife-01222-v2.xml")
    assert sorted(fig.figure_id) == ["10.7554_eLife.01222__fig4", "10.7554_eLife.01222__fig4",
                                     "10.7554_eLife.01222__fig4-2"]
    assert fig[fig.keep].source_path.tolist() == [newest]
    dropped = fig[~fig.keep]
    assert set(dropped.drop_reason) == {"duplicate-article"} and set(dropped.drop_detail) == {f"copy of {newest} (shard-00002)"}
    copies = pairs[pairs.source_path.isin(dropped.source_path)]
    assert not copies.keep.any() and copies.tar.isna().all()
    before = pd.read_parquet(results / "corpus" / "pairs.parquet")  # the corpus with one copy
    assert pairs[pairs.source_path == newest].keep.sum() == before[before.article_id == "10.7554/eLife.01222"].keep.sum() > 1
    page = write_report(work, shards, tmp_path / "report", n_figures=20).read_text()
    assert "duplicate-article" in page and page.count("<h3>10.7554_eLife.01222__fig4 ") == 2



def test_open_clip_train_trains_on_the_shards_as_they_are(results, tmp_path):
    """``python -m open_clip_train.main --dataset-type webdataset`` on the corpus' train shards
    (jpg/png + txt per pair), CPU, the tiny model exported as an open_clip ``local-dir:`` folder:
    it takes real optimizer steps (a loss logged per step, a checkpoint whose weights moved)."""
    import importlib.metadata
    import os
    import re
    import subprocess
    import sys

    import torch

    from panel2patch.model import build_model

    # the pinned pair (pyproject.toml): webdataset >= 0.2.96 ends every tar with an empty sample
    # on which open_clip_train raises KeyError: 'fname'
    assert importlib.metadata.version("webdataset") == "0.2.86", "reinstall the pinned stack: pip install -e ."
    sizes = json.loads((results / "corpus" / "shards" / "sizes.json").read_text())
    train = [str(results / "corpus" / "shards" / n) for n in sorted(sizes) if n.startswith("train-")]
    n_train = sum(sizes[n] for n in sizes if n.startswith("train-"))
    assert n_train >= 8
    torch.manual_seed(0)
    model_dir = build_model("tiny").save_pretrained(tmp_path / "tiny")
    before = build_model(None, init=f"path:{model_dir}").state_dict()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "open_clip_train.main", "--model", f"local-dir:{model_dir}",
           "--train-data", "::".join(train), "--dataset-type", "webdataset", "--train-num-samples", "8",
           "--batch-size", "2", "--epochs", "1", "--workers", "0", "--device", "cpu", "--precision", "fp32",
           "--lr", "1e-3", "--warmup", "1", "--log-every-n-steps", "1", "--logs", str(tmp_path / "logs"),
           "--name", "oc", "--save-frequency", "1", "--seed", "0"]
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-5000:]
    steps = re.findall(r"Train Epoch: 0 \[\s*(\d+)/8 .*?Contrastive_loss: ([0-9.]+)", log)
    assert [int(n) for n, _ in steps] == [2, 4, 6, 8], log[-3000:]  # 4 steps of 2 pairs
    ckpt = torch.load(tmp_path / "logs" / "oc" / "checkpoints" / "epoch_1.pt", map_location="cpu", weights_only=True)
    after = ckpt["state_dict"]
    assert ckpt["epoch"] == 1 and set(after) == set(before)
    for key in ("visual.conv1.weight", "text.transformer.encoder.layer.0.attention.self.query.weight", "text.proj.weight"):
        assert not torch.equal(after[key], before[key]), key
