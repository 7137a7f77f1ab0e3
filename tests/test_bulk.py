"""PMC OA bulk input and stable sharding: the file lists decide (newest version per PMCID,
retracted dropped with a skip, bulk XML joined to its package's images), and an added article
never moves another, so an incremental update reruns only the shards it touches (real Snakemake)."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from panel2patch.ingest import discover_units, make_shards
from panel2patch.ingest.bulk import bulk_units, read_list
from panel2patch.ingest.core import ingest_units
from panel2patch.ingest.discover import Unit, article_key
from panel2patch.ingest.shards import _stamp, manifest_text, read_manifest, shard_of, write_manifests

from conftest import load_benchmark

tree = load_benchmark("make_bulk_tree")


def test_article_keys_and_shards_are_stable(tmp_path, sample):
    assert article_key(Unit("x/PMC123.tar.gz", "package")) == "PMC123"
    assert article_key(Unit("x/pmc77.nxml", "jats")) == "PMC77"
    assert article_key(Unit("x/elife-32671/manuscript.xml", "jats")) == "elife-32671"
    assert article_key(Unit("a/b/elife-00353.tar.gz", "package")) == article_key(Unit("c/elife-00353.tar.gz", "package"))
    assert article_key(Unit("arch.tar.gz", "bulk_xml", member="PMC001xxxxxx/PMC5.xml", pmcid="PMC5")) == "PMC5"
    assert shard_of("PMC1234567", 1000, 16) == "shard-pmc01234" and shard_of("PMC1234999", 1000, 16) == "shard-pmc01234"
    assert re.fullmatch(r"shard-\d{5}", shard_of("elife-32671", 1000, 16))
    # a folder of PMC-named and other files: adding files moves no placed article
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(0, 400, 3):
        (folder / f"PMC{5000 + n}.nxml").write_text("<article/>")
    (folder / "pdfs").mkdir()  # (PDFs beside a JATS file would be the same article, not units)
    for name in ("elife-1", "elife-2", "paper-x"):
        (folder / "pdfs" / f"{name}.pdf").write_bytes(b"%PDF")
    before = {u.path: s for s, us in make_shards(discover_units([folder]), 50, 4).items() for u in us}
    for extra in ("PMC5001.nxml", "PMC9999.nxml", "pdfs/elife-3.pdf", "pdfs/aaa.pdf"):
        (folder / extra).write_bytes(b"%PDF" if extra.endswith(".pdf") else b"<article/>")
    shards = make_shards(discover_units([folder]), 50, 4)
    after = {u.path: s for s, us in shards.items() for u in us}
    assert {p: after[p] for p in before} == before and len(after) == len(before) + 4
    assert max(len(us) for s, us in shards.items() if s.startswith("shard-pmc")) <= 50
    # the sample still splits into two shards (the demo's hash_shards: 2)
    assert list(make_shards(discover_units([sample]), 4, 2)) == ["shard-00000", "shard-00001"]


def test_bulk_units_follow_the_lists(tmp_path):
    info = tree.make_tree(tmp_path / "bulk", 300, light=True)
    units = discover_units([tmp_path / "bulk"])
    by_id = {u.pmcid: u for u in units}
    assert len(units) == len(by_id) == 300  # one unit per PMCID, packages are never walked
    for pmcid in info["updated"]:  # the newer version (daily update) replaces the baseline/package one
        u = by_id[pmcid]
        assert u.kind == "bulk_xml" and ".incr.2024-01-02" in u.path and u.updated.startswith("2024-01-02")
        assert u.images.endswith(f"{pmcid}.tar.gz") or pmcid in info["xml_only"]
    for pmcid in info["retracted"]:
        assert by_id[pmcid].kind == "retracted"
    for pmcid in set(info["xml_only"]) - set(info["updated"]) - set(info["retracted"]):
        assert by_id[pmcid].kind == "bulk_xml" and by_id[pmcid].images == "" and ".baseline." in by_id[pmcid].path
    plain = set(by_id) - set(info["updated"]) - set(info["retracted"]) - set(info["xml_only"])
    assert all(by_id[p].kind == "package" and by_id[p].licence in {"CC BY", "CC0", "CC BY-NC", "NO-CC CODE"} for p in plain)
    rows = read_list(tmp_path / "bulk" / "oa_file_list.csv")
    assert set(rows.columns) == {"file", "pmcid", "updated", "licence", "retracted", "pmid"} and len(rows) > 250
    bad = tmp_path / "x" / "oa_file_list.csv"
    bad.parent.mkdir()
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a PMC OA file list"):
        bulk_units(bad.parent)


def test_incremental_update_rewrites_only_the_touched_manifests(tmp_path):
    root = tmp_path / "bulk"
    tree.make_tree(root, 400, light=True)
    shards = make_shards(discover_units([root]), 100, 4)
    paths = write_manifests(shards, tmp_path / "units")
    mtimes = {s: (tmp_path / "units" / f"{s}.json").stat().st_mtime_ns for s in shards}
    assert write_manifests(shards, tmp_path / "units") == paths  # unchanged: not rewritten
    assert {s: (tmp_path / "units" / f"{s}.json").stat().st_mtime_ns for s in shards} == mtimes
    assert read_manifest(paths[next(iter(shards))]) == shards[next(iter(shards))]
    first = shards[next(iter(shards))][0].pmcid
    touched = tree.add_incremental(root, "2024-02-01", 3, [first], light=True)
    new_shards = make_shards(discover_units([root]), 100, 4)
    write_manifests(new_shards, tmp_path / "units")
    changed = {s for s in new_shards if s not in mtimes
               or (tmp_path / "units" / f"{s}.json").stat().st_mtime_ns != mtimes[s]}
    expect = {shard_of(p, 100, 4) for p in touched["new"] + touched["updated"]}
    assert changed == expect and len(expect) <= 3
    for s in set(shards) - expect:  # every other shard keeps exactly its articles
        assert new_shards[s] == shards[s]


def test_bulk_units_are_cached_per_state_of_the_lists(tmp_path, monkeypatch, caplog):
    from panel2patch.ingest import bulk

    root, cache = tmp_path / "bulk", tmp_path / "cache"
    tree.make_tree(root, 200, light=True)
    fresh = discover_units([root])
    assert discover_units([root], cache_dir=cache) == fresh
    (first,) = cache.glob("bulk-units-*.pickle")

    def no_reading(*a):
        raise AssertionError("the lists were read again")

    with monkeypatch.context() as m:  # same lists: loaded from the cache, the lists are not read
        m.setattr(bulk, "_read_units", no_reading)
        assert discover_units([root], cache_dir=cache) == fresh
    touched = tree.add_incremental(root, "2024-02-01", 2, [fresh[0].pmcid], light=True)
    updated = discover_units([root], cache_dir=cache)  # a new update archive: read again, re-cached
    assert updated == discover_units([root]) and updated != fresh
    assert set(touched["new"]) <= {u.pmcid for u in updated}
    (second,) = cache.glob("bulk-units-*.pickle")  # the earlier state's cache is gone
    assert second != first
    second.write_bytes(b"not a pickle")
    with caplog.at_level("WARNING"):
        assert discover_units([root], cache_dir=cache) == updated
    assert "unreadable bulk-unit cache" in caplog.text


def test_manifest_rows_are_the_json_of_each_unit(tmp_path):
    """manifest_text writes its rows without json.dumps (speed): the same text, so a manifest
    written before is not rewritten (and its shard not rerun)."""
    (tmp_path / 'a "quoted"\\ é.nxml').write_text("x")
    units = [Unit(str(tmp_path / 'a "quoted"\\ é.nxml'), "jats"), Unit(str(tmp_path / "missing.pdf"), "pdf"),
             Unit("/b/oa.tar.gz", "bulk_xml", "PMC1.xml", "/b/p/PMC1.tar.gz", "PMC1", "CC BY", "2024-01-01 00:00:00"),
             Unit("/b/p/PMC2.tar.gz", "package", pmcid="PMC2", licence="CC BY-NC \u2013 \U0001f600\t", updated="2024"),
             Unit("/b/oa.tar.gz", "retracted", "PMC3.xml", pmcid="PMC3", updated="2024")]
    stats = {"/b/oa.tar.gz": [12, 1700000000123456789]}
    expected = ",\n".join(json.dumps({**u.as_dict(), "stamp": _stamp(u, dict(stats))}) for u in units)
    assert manifest_text("shard-x", units, dict(stats)) == '{"shard": "shard-x", "units": [\n%s\n]}\n' % expected
    assert '"stamp": [1, ' in manifest_text("s", units[:1]) and '"stamp": null' in manifest_text("s", units[1:2])


def test_bulk_ingest_reads_versions_retractions_and_joins_images(tmp_path):
    info = tree.make_tree(tmp_path / "bulk", 24, seed=3)
    units = discover_units([tmp_path / "bulk"])
    stats = ingest_units(units, tmp_path / "out", "shard-t", progress=False)
    arts = pd.read_parquet(tmp_path / "out" / "articles.parquet").set_index("article_id")
    skips = pd.read_parquet(tmp_path / "out" / "skips.parquet")
    figs = pd.read_parquet(tmp_path / "out" / "figures.parquet")
    assert set(arts.index) == {u.pmcid for u in units if u.kind != "retracted"}
    assert set(skips[skips.reason == "retracted"].article_id) == set(info["retracted"])
    for pmcid in set(info["updated"]) - set(info["xml_only"]):  # newer XML, the package's images
        assert arts.loc[pmcid, "title"].startswith("Revised: ") and arts.loc[pmcid, "n_figures"] >= 1
        assert ".incr." in arts.loc[pmcid, "source_path"]
    # a template without a licence in its JATS (the sample's elife-32671) takes the list's
    no_jats_licence = [u.pmcid for u in units if u.kind == "package" and int(u.pmcid[3:]) // 2 % 4 == 1]
    assert no_jats_licence and all(arts.loc[p, "licence"] in {"CC BY", "CC0", "CC BY-NC", "NO-CC CODE"}
                                   for p in no_jats_licence)
    assert stats["figures"] == len(figs) > 0
    assert not list((tmp_path / "out").glob("p2p-pkg-*"))
    # bad bulk input: a member the archive lacks and a corrupt archive are skips, never a crash
    corrupt = tmp_path / "bad.tar.gz"
    corrupt.write_bytes(b"\x1f\x8b not gzip")
    archive = next((tmp_path / "bulk").glob("oa_comm/xml/*.baseline.*.tar.gz"))
    bad = [Unit(str(archive), "bulk_xml", member="PMC001xxxxxx/PMC42.xml", pmcid="PMC42"),
           Unit(str(corrupt), "bulk_xml", member="PMC001xxxxxx/PMC43.xml", pmcid="PMC43")]
    stats = ingest_units(bad, tmp_path / "out2", "shard-b", progress=False)
    assert stats["skip_reasons"] == {"missing-article": 2}
    detail = pd.read_parquet(tmp_path / "out2" / "skips.parquet").set_index("article_id").detail
    assert "not in the archive" in detail["PMC42"] and "archive unreadable" in detail["PMC43"]


def test_generator_cli_light_tree(tmp_path):
    tree.main(["--articles", "50", "--out", str(tmp_path / "t"), "--light"])
    assert not (tmp_path / "t" / "oa_package").exists()
    assert len(read_list(tmp_path / "t" / "oa_file_list.csv")) > 40
    tree.main(["--out", str(tmp_path / "t"), "--incremental", "2024-03-01", "--new", "2", "--update", "1", "--light"])
    assert len(read_list(next((tmp_path / "t").glob("oa_comm/xml/*incr.2024-03-01.filelist.csv")))) == 3


@pytest.mark.slow
def test_snakemake_reruns_only_the_touched_shards(tmp_path):
    """Real Snakemake: ingest a bulk tree, add a daily update (one new article, one newer
    version), and the dry run lists only those two shards' ingest jobs and the summary."""
    from test_workflow import copy_repo, snakemake

    work = copy_repo(tmp_path / "wf")
    root = tmp_path / "bulk"
    tree.make_tree(root, 12, seed=5)
    cfg = ["--config", f"inputs=[{root}]", "shard_size=8", "tracking={uri: null}"]
    target = "results/ingest/summary.json"
    proc = snakemake(work, target, *cfg)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = snakemake(work, "-n", target, *cfg)
    assert "Nothing to be done" in proc.stdout + proc.stderr
    before = sorted(p.name for p in (work / "results" / "units").glob("*.json"))
    units = discover_units([root])
    old = sorted(units)[0].pmcid  # an article of the first shard
    touched = tree.add_incremental(root, "2024-02-01", 1, [old])
    proc = snakemake(work, "-n", target, *cfg)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    jobs = re.findall(r"rule (\w+):\n(?:\s+.*\n)*?\s+wildcards: shard=(\S+)", out)
    expect = {shard_of(p, 8, 16) for p in touched["new"] + touched["updated"]}
    assert {s for rule, s in jobs if rule == "ingest"} == expect and len(expect) == 2
    assert re.search(r"ingest_summary\s+1", out) and re.search(r"\ningest\s+2\n", out)
    assert len(before) >= 3  # the other shards were there and are not rerun
