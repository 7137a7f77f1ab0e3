"""Lineage checks: every file the run's MLflow record names is re-hashed on disk, and the chain
model -> corpus shards -> articles -> input files, config and git commit is followed through it.

Each check gives rows ``{"section": "lineage", "check", "subject", "status", "detail"}`` with
status ``pass`` or ``fail``; a failure names the file, key or run and both values.

=================  ===========================================================================
config             the config now (file or the workflow's) = the parent run's params, per key
git commit         every stage run recorded the commit it ran at
stage outputs      each run's ``outputs.json``: sha256 of every output on disk as recorded
                   (the newest finished run per path; a path only an older invocation made is
                   checked while it exists)
input articles     each ingest run's dataset table: sha256 of every input file as recorded
corpus shards      the corpus run's ``corpus-shards`` table = the ``*.tar`` on disk, sha256 each
shard articles     every article in the ``corpus-articles`` table was ingested (an ingest table
                   lists it) and its tar's sha256 is the shard table's
models             each train run trained on the corpus shards of the record (sha256 per
                   shard), and its registered model version exists and names that run
evaluations        each evaluation scored the model's weights (sha256 = the train result's)
=================  ===========================================================================
"""

from __future__ import annotations

import json
from pathlib import Path

from panel2patch.digest import sha256_path
from panel2patch.tracking import flatten

from .records import Record

PASS, FAIL, NOT_COMPARABLE = "pass", "fail", "not comparable"


def row(check: str, subject: str, status: str, detail: str = "", section: str = "lineage") -> dict:
    return {"section": section, "check": check, "subject": subject, "status": status, "detail": detail}


class Hasher:
    """sha256 of files and folders, each computed once."""

    def __init__(self):
        self.known: dict[Path, str | None] = {}

    def __call__(self, path: Path) -> str | None:
        if path not in self.known:
            self.known[path] = sha256_path(path) if path.exists() else None
        return self.known[path]


def _short(sha: str | None) -> str:
    return "missing" if sha is None else str(sha)[:12]


def check_config(rec: Record, config: dict | None, config_name: str) -> list[dict]:
    if config is None:
        return [row("config", config_name, FAIL, "no config to compare with the recorded one")]
    recorded = rec.parent.data.params
    now = flatten(config)
    rows = []
    for key in sorted(set(recorded) | set(now)):
        if recorded.get(key) != now.get(key):
            rows.append(row("config", f"config key {key}", FAIL,
                            f"recorded {recorded.get(key, '(absent)')} on parent run {rec.parent.info.run_id[:8]}, "
                            f"{config_name} has {now.get(key, '(absent)')}"))
    return rows or [row("config", config_name, PASS, f"{len(now)} keys as recorded on parent run {rec.parent.info.run_id[:8]}")]


def check_git(rec: Record) -> list[dict]:
    runs = [rec.parent, *rec.runs]
    missing = [r.info.run_name for r in runs if not r.data.tags.get("mlflow.source.git.commit")]
    if missing:
        return [row("git commit", "runs", FAIL, f"{len(missing)} of {len(runs)} runs recorded no git commit "
                    f"(not run from a git checkout?): {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}")]
    commits: dict[str, list[str]] = {}
    for r in runs:
        commits.setdefault(r.data.tags["mlflow.source.git.commit"], []).append(r.info.run_name)
    detail = "; ".join(f"{c[:12]} ({len(names)} runs)" for c, names in commits.items())
    return [row("git commit", "runs", PASS, f"every run recorded its commit: {detail}")]


def check_outputs(rec: Record, hasher: Hasher) -> list[dict]:
    """The newest finished record of each output path, re-hashed."""
    latest: dict[str, tuple] = {}
    for run in rec.runs:  # oldest first: a newer record of a path replaces the older
        outputs = rec.artifact_json(run.info.run_id, "outputs.json") or {}
        for name, o in outputs.items():
            latest[o["path"]] = (run, name, o["sha256"])
    current = rec.parent.info.run_id
    rows, checked = [], {}
    for path, (run, name, sha) in sorted(latest.items()):
        made_now = run.data.tags.get("mlflow.parentRunId") == current
        on_disk = hasher(rec.path(path))
        if on_disk is None and not made_now:
            continue  # made by an older invocation (another config) and since removed
        checked[run.info.run_name] = checked.get(run.info.run_name, 0) + 1
        if on_disk != sha:
            rows.append(row("stage outputs", path, FAIL, f"{run.info.run_name} output '{name}': sha256 recorded "
                            f"{_short(sha)}, on disk {_short(on_disk)}"))
    if not latest:
        return [row("stage outputs", str(rec.results), FAIL, "no stage run recorded any output")]
    if not rows:
        rows.append(row("stage outputs", str(rec.results.name), PASS,
                        f"{sum(checked.values())} outputs of {len(checked)} stage runs as recorded"))
    return rows


def _ingest_tables(rec: Record):
    return {shard: rec.table(run, f"ingest-{shard}") for shard, run in rec.stage("ingest").items()}


def check_inputs(rec: Record, hasher: Hasher) -> list[dict]:
    rows = []
    tables = _ingest_tables(rec)
    if not tables:
        return [row("input articles", "ingest", FAIL, "no ingest run in the record")]
    for shard, table in sorted(tables.items()):
        if table is None:
            rows.append(row("input articles", shard, FAIL, f"ingest:{shard} logged no ingest-{shard} table"))
            continue
        files = table.drop_duplicates("path")
        bad = []
        for f in files.itertuples(index=False):
            on_disk = hasher(rec.path(f.path))
            if on_disk != f.sha256:
                bad.append(row("input articles", f.path, FAIL,
                               f"ingest:{shard} read it with sha256 {_short(f.sha256)}, on disk {_short(on_disk)}"))
        n = int(table.article_id.notna().sum())
        rows += bad or [row("input articles", shard, PASS,
                            f"{len(files)} input files ({n} article{'' if n == 1 else 's'}), sha256 as recorded")]
    return rows


def check_corpus(rec: Record, hasher: Hasher) -> list[dict]:
    corpus = rec.latest("corpus:all")
    if corpus is None:
        return [row("corpus shards", "corpus", FAIL, "no corpus run in the record")]
    shards = rec.table(corpus, "corpus-shards")
    if shards is None:
        return [row("corpus shards", "corpus", FAIL, "the corpus run logged no corpus-shards table")]
    outputs = rec.artifact_json(corpus.info.run_id, "outputs.json") or {}
    sizes = outputs.get("sizes", {}).get("path")
    folder = rec.path(sizes).parent if sizes else rec.results / "corpus" / "shards"
    rows = []
    for s in shards.itertuples(index=False):
        path = folder / s.shard
        on_disk = hasher(path)
        if on_disk != s.sha256:
            rows.append(row("corpus shards", _rel(rec, path), FAIL,
                            f"corpus:all wrote it with sha256 {_short(s.sha256)}, on disk {_short(on_disk)}"))
    extra = sorted(p.name for p in folder.glob("*.tar") if p.name not in set(shards.shard))
    for name in extra:
        rows.append(row("corpus shards", _rel(rec, folder / name), FAIL, "on disk but in no corpus record"))
    if not rows:
        rows.append(row("corpus shards", _rel(rec, folder), PASS, f"{len(shards)} shards, sha256 as recorded"))
    # shards -> articles -> ingest records
    articles = rec.table(corpus, "corpus-articles")
    if articles is None:
        return rows + [row("shard articles", "corpus", FAIL, "the corpus run logged no corpus-articles table")]
    ingested = set()
    for table in _ingest_tables(rec).values():
        if table is not None:
            ingested |= set(table.article_id.dropna())
    sha = dict(zip(shards.shard, shards.sha256))
    bad = [row("shard articles", a.article_id, FAIL, f"in {a.tar} but in no ingest table of the record")
           for a in articles.itertuples(index=False) if a.article_id not in ingested]
    bad += [row("shard articles", a.tar, FAIL, f"corpus-articles gives sha256 {_short(a.tar_sha256)}, "
                f"corpus-shards {_short(sha.get(a.tar))}")
            for a in articles.drop_duplicates("tar").itertuples(index=False) if sha.get(a.tar) != a.tar_sha256]
    return rows + (bad or [row("shard articles", "corpus-articles", PASS,
                               f"{articles.article_id.nunique()} articles in {articles.tar.nunique()} shards, "
                               "each traced to its ingest record")])


def check_models(rec: Record) -> list[dict]:
    rows = []
    corpus = rec.latest("corpus:all")
    corpus_sha = {}
    if corpus is not None and (t := rec.table(corpus, "corpus-shards")) is not None:
        corpus_sha = dict(zip(t.shard, t.sha256))
    trains = rec.stage("train")
    for name, run in sorted(trains.items()):
        shards = rec.table(run, "corpus-shards")
        if shards is None:
            rows.append(row("models", name, FAIL, f"train:{name} logged no corpus-shards table"))
            continue
        diff = [s for s in shards.itertuples(index=False) if corpus_sha.get(Path(s.shard).name) != s.sha256]
        for s in diff:
            rows.append(row("models", name, FAIL, f"trained on {s.shard} with sha256 {_short(s.sha256)}; the corpus "
                            f"record has {_short(corpus_sha.get(Path(s.shard).name))}"))
        registered = run.data.tags.get("model.registered")
        if registered:
            model, _, version = registered.removeprefix("models:/").rpartition("/")
            try:
                mv = rec.client.get_model_version(model, version)
                if mv.run_id != run.info.run_id:
                    rows.append(row("models", name, FAIL, f"{registered} names run {mv.run_id}, not train:{name} ({run.info.run_id})"))
            except Exception as exc:  # MlflowException: no such version
                rows.append(row("models", name, FAIL, f"{registered} is not in the model registry ({type(exc).__name__})"))
        if not diff and not any(r["subject"] == name for r in rows):
            rows.append(row("models", name, PASS, f"trained on the record's {len(shards)} corpus shards"
                            + (f"; registered as {registered}" if registered else "")))
    # evaluations -> the model they scored
    for name, run in sorted(rec.stage("evaluate").items()):
        outputs = rec.artifact_json(run.info.run_id, "outputs.json") or {}
        train = trains.get(name)
        if train is None or "evaluation" not in outputs:
            continue
        result_path = rec.path((rec.artifact_json(train.info.run_id, "outputs.json") or {}).get("model", {}).get("path", "")).parent / "result.json"
        ev_path = rec.path(outputs["evaluation"]["path"])
        if not result_path.is_file() or not ev_path.is_file():
            continue  # a missing file is a stage-outputs failure already
        weights = json.loads(result_path.read_text()).get("weights_sha256")
        scored = json.loads(ev_path.read_text())["models"][0].get("digest")
        rows.append(row("evaluations", name, PASS if weights == scored else FAIL,
                        f"scored weights sha256 {_short(scored)}" + ("" if weights == scored else f", the model's are {_short(weights)}")))
    return rows


def _rel(rec: Record, path: Path) -> str:
    try:
        return str(path.relative_to(rec.root))
    except ValueError:
        return str(path)


def check_lineage(rec: Record, config: dict | None, config_name: str = "config") -> list[dict]:
    hasher = Hasher()
    return [*check_config(rec, config, config_name), *check_git(rec), *check_inputs(rec, hasher),
            *check_outputs(rec, hasher), *check_corpus(rec, hasher), *check_models(rec)]
