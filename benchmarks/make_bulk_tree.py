"""A synthetic PMC OA bulk tree of any size, made from the sample articles (ids renamed), so the
bulk input, stable sharding, incremental runs and DAG timing are tested without the real data.

    .venv/bin/python benchmarks/make_bulk_tree.py --articles 200 --out /tmp/bulk           # real files
    .venv/bin/python benchmarks/make_bulk_tree.py --articles 1000000 --out /tmp/bulk --light
    .venv/bin/python benchmarks/make_bulk_tree.py --out /tmp/bulk --incremental 2024-01-03 --new 5 --update 3

The tree has the layout of panel2patch.ingest.bulk (as PMC distributes it):

- ``oa_file_list.csv`` + ``oa_package/xx/yy/PMCn.tar.gz``: per-article packages (JATS ``.nxml`` +
  the template's figure files) for every article but ~3% (XML-only articles, no images);
- ``oa_{comm,noncomm,other}/xml/oa_<subset>_xml.PMC00Nxxxxxx.baseline.2024-01-01.tar.gz`` +
  ``.filelist.csv``: the XML of every article (no images), by licence group and id million;
- ``oa_comm/xml/oa_comm_xml.incr.2024-01-02.tar.gz`` + ``.filelist.csv``: a daily update with a
  newer version (title prefixed "Revised: ") of ~5% of the articles and ~2% marked retracted.

Ids: PMC1000000, PMC1000002, ... (every second id: about half of PMC's ids are in the OA
subset, so a ``shard_size`` id range holds about shard_size / 2 articles, as on the real data).
Licences: 60% CC BY, 5% CC0 (oa_comm), 25% CC BY-NC (oa_noncomm), 10% NO-CC CODE (oa_other).
Every article copies one of the four sample JATS articles with figures (same images: the corpus
de-duplicates them as near-duplicates, so this tree tests input and scale, not yield).

``--light`` writes the file lists and empty archives only, no packages: exactly what building
the DAG reads (the lists and a ``stat`` of each archive), for timing ``snakemake -n`` at 1M
articles without writing a million files. ``--incremental DATE`` adds one daily update archive
to an existing tree: ``--new`` new articles (after the highest id; packages too) and newer
versions of ``--update`` existing ones.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import random
import re
import tarfile
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "resources" / "sample"
FIRST, STEP = 1_000_000, 2
BASE_DATE, INCR_DATE = "2024-01-01", "2024-01-02"
PACKAGE_COLS = ["File", "Article Citation", "Accession ID", "Last Updated (YYYY-MM-DD HH:MM:SS)", "PMID", "License",
                "Retracted"]
ARCHIVE_COLS = ["Article File", "Article Citation", "AccessionID", "LastUpdated (YYYY-MM-DD HH:MM:SS)", "PMID",
                "License", "Retracted"]
LICENCES = [("CC BY", "oa_comm", 60), ("CC0", "oa_comm", 5), ("CC BY-NC", "oa_noncomm", 25), ("NO-CC CODE", "oa_other", 10)]


def templates() -> list[tuple[bytes, dict[str, bytes]]]:
    """The sample's JATS articles with figures: (XML bytes, {figure file name: bytes})."""
    out = []
    for folder, xml in (("elife-01222", "elife-01222.xml"), ("elife-32671", "manuscript.xml")):
        d = SAMPLE / folder
        out.append(((d / xml).read_bytes(), {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.suffix == ".jpg"}))
    for pkg in sorted((SAMPLE / "packages").glob("*.tar.gz")):
        with tarfile.open(pkg) as tf:
            files = {Path(m.name).name: tf.extractfile(m).read() for m in tf if m.isfile()}
        xml = next(k for k in files if k.endswith(".xml"))
        out.append((files.pop(xml), files))
    return out


def article_xml(template: bytes, pmcid: str, revised: bool = False) -> bytes:
    """The template with its ids replaced by ``pmcid`` (and a DOI of its own: copies must not
    collide as one article), the title prefixed "Revised: " for a newer version."""
    text = template.decode("utf-8")
    text = re.sub(r"<article-id[^>]*>.*?</article-id>\s*", "", text, flags=re.S)
    ids = (f'<article-id pub-id-type="pmc">{pmcid}</article-id>'
           f'<article-id pub-id-type="doi">10.5555/synthetic.{pmcid}</article-id>')
    text = text.replace("<article-meta>", "<article-meta>" + ids, 1)
    if revised:
        text = re.sub(r"<article-title>", "<article-title>Revised: ", text, count=1)
    return text.encode("utf-8")


def package_rel(pmcid: str) -> str:
    h = hashlib.md5(pmcid.encode()).hexdigest()
    return f"oa_package/{h[:2]}/{h[2:4]}/{pmcid}.tar.gz"


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime = len(data), 1704067200
    tf.addfile(info, io.BytesIO(data))


def _write_tar(path: Path, members: list[tuple[str, bytes]], light: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if light:
        path.touch()
        return
    with tarfile.open(path, "w:gz", compresslevel=1) as tf:
        for name, data in members:
            _add(tf, name, data)


def _write_csv(path: Path, cols: list[str], rows: list[list], append: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not (append and path.exists())
    with open(path, "w" if new else "a", newline="") as fh:
        w = csv.writer(fh)
        if new:
            w.writerow(cols)
        w.writerows(rows)


class Article:
    def __init__(self, n: int, rng: random.Random, n_templates: int):
        self.pmcid = f"PMC{n}"
        self.pmid = str(30_000_000 + n)
        self.template = (n // STEP) % n_templates
        self.licence, self.subset = rng.choices([(lic, sub) for lic, sub, _ in LICENCES],
                                                 weights=[w for *_, w in LICENCES])[0]
        self.member = f"PMC{n // 1_000_000:03d}xxxxxx/{self.pmcid}.xml"
        self.citation = f"Synth J. 2024 Jan 1; 1:{n}"


def _package_rows(arts: list[Article], date: str, tpl, light: bool, root: Path) -> list[list]:
    rows = []
    for a in arts:
        rel = package_rel(a.pmcid)
        if not light:
            xml, images = tpl[a.template]
            _write_tar(root / rel, [(f"{a.pmcid}/{a.pmcid}.nxml", article_xml(xml, a.pmcid)),
                                    *((f"{a.pmcid}/{k}", v) for k, v in images.items())], light)
        rows.append([rel, a.citation, a.pmcid, f"{date} 00:00:00", a.pmid, a.licence, "no"])
    return rows


def make_tree(out: str | Path, articles: int, light: bool = False, seed: int = 0) -> dict:
    """Write the tree (see the module docstring); return counts and the special ids."""
    root, rng = Path(out), random.Random(seed)
    tpl = [(b"", {})] * 4 if light else templates()
    arts = [Article(FIRST + STEP * i, rng, len(tpl)) for i in range(articles)]
    xml_only = {a.pmcid for a in arts if rng.random() < 0.03}
    picked = rng.sample(arts, k=len(arts))
    n_upd, n_ret = round(0.05 * len(arts)), round(0.02 * len(arts))
    updated, retracted = picked[:n_upd], picked[n_upd:n_upd + n_ret]
    _write_csv(root / "oa_file_list.csv", PACKAGE_COLS,
               _package_rows([a for a in arts if a.pmcid not in xml_only], BASE_DATE, tpl, light, root))
    groups: dict[tuple[str, str], list[Article]] = {}
    for a in arts:
        groups.setdefault((a.subset, a.member.split("/")[0]), []).append(a)
    for (subset, million), group in sorted(groups.items()):
        stem = root / subset / "xml" / f"{subset}_xml.{million}.baseline.{BASE_DATE}"
        _write_tar(stem.with_name(stem.name + ".tar.gz"),
                   [] if light else [(a.member, article_xml(tpl[a.template][0], a.pmcid)) for a in group], light)
        _write_csv(stem.with_name(stem.name + ".filelist.csv"), ARCHIVE_COLS,
                   [[a.member, a.citation, a.pmcid, f"{BASE_DATE} 00:00:00", a.pmid, a.licence, "no"] for a in group])
    add_incremental(root, INCR_DATE, [], [a.pmcid for a in updated], [a.pmcid for a in retracted], light=light, _arts=arts)
    return {"articles": len(arts), "xml_only": sorted(xml_only), "updated": sorted(a.pmcid for a in updated),
            "retracted": sorted(a.pmcid for a in retracted), "first": arts[0].pmcid if arts else None,
            "last": arts[-1].pmcid if arts else None}


def _existing(root: Path) -> dict[str, Article]:
    """The tree's articles (from its baseline lists), for an incremental update."""
    rng, out = random.Random(0), {}
    for lst in sorted(root.glob("oa_*/xml/*.baseline.*.filelist.csv")):
        with open(lst, newline="") as fh:
            for row in csv.DictReader(fh):
                a = Article(int(row["AccessionID"][3:]), rng, 4)
                a.licence, a.subset = row["License"], lst.parts[-3]
                out[a.pmcid] = a
    return out


def add_incremental(out: str | Path, date: str, new: list[str] | int, update: list[str] | int,
                    retract: list[str] = (), light: bool = False, seed: int = 1, _arts: list | None = None) -> dict:
    """One daily update archive ``oa_comm/xml/oa_comm_xml.incr.<date>.tar.gz`` (+ its list):
    ``new`` articles (a count: ids after the highest; their packages and list rows are added too),
    newer versions of the ``update`` ids (or that many picked at random) and ``retract`` ids
    marked retracted. Returns the ids it touched."""
    root, rng = Path(out), random.Random(seed)
    known = {a.pmcid: a for a in _arts} if _arts is not None else _existing(root)
    tpl = [(b"", {})] * 4 if light else templates()
    if isinstance(update, int):
        update = rng.sample(sorted(known), k=update)
    if isinstance(new, int):
        top = max((int(p[3:]) for p in known), default=FIRST - STEP)
        new_arts = [Article(top + STEP * (i + 1), rng, len(tpl)) for i in range(new)]
        _write_csv(root / "oa_file_list.csv", PACKAGE_COLS, _package_rows(new_arts, date, tpl, light, root), append=True)
        new = [a.pmcid for a in new_arts]
        known.update({a.pmcid: a for a in new_arts})
    rows, members = [], []
    stamp = f"{date} 00:00:00"
    for pmcid, revised, flag in ([(p, False, "no") for p in new] + [(p, True, "no") for p in update]
                                 + [(p, False, "yes") for p in retract]):
        a = known[pmcid]
        rows.append([a.member, a.citation, a.pmcid, stamp, a.pmid, a.licence, flag])
        if not light:
            members.append((a.member, article_xml(tpl[a.template][0], a.pmcid, revised=revised)))
    stem = root / "oa_comm" / "xml" / f"oa_comm_xml.incr.{date}"
    _write_tar(stem.with_name(stem.name + ".tar.gz"), members, light)
    _write_csv(stem.with_name(stem.name + ".filelist.csv"), ARCHIVE_COLS, rows)
    return {"new": list(new), "updated": list(update), "retracted": list(retract)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--articles", type=int, default=0, help="articles of a new tree")
    ap.add_argument("--light", action="store_true", help="file lists and empty archives only (DAG timing)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--incremental", metavar="DATE", help="add a daily update archive to the tree at --out")
    ap.add_argument("--new", type=int, default=0, help="--incremental: new articles")
    ap.add_argument("--update", type=int, default=0, help="--incremental: newer versions of existing articles")
    args = ap.parse_args(argv)
    if args.incremental:
        info = add_incremental(args.out, args.incremental, args.new, args.update, light=args.light)
        print(f"incremental {args.incremental}: {len(info['new'])} new, {len(info['updated'])} updated")
    else:
        info = make_tree(args.out, args.articles, light=args.light, seed=args.seed)
        print(f"{info['articles']} articles ({info['first']}..{info['last']}) in {args.out}: "
              f"{len(info['xml_only'])} XML-only, {len(info['updated'])} with a newer version, "
              f"{len(info['retracted'])} retracted")


if __name__ == "__main__":
    main()
