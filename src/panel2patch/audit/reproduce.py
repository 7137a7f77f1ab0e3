"""Reproduction: rerun a data stage from its recorded inputs and config in a scratch folder and
compare the outputs' sha256 with the recorded ones (bit-identical expected).

Stages (``STAGES``):

========  ==================================================================================
ingest    per shard: the input files of its ``ingest-<shard>`` table (path, kind), the ingest
          section of the parent run's ``config.json``; outputs figures, articles, skips, images
========  ==================================================================================

The scratch folder mirrors the workflow's folder (the inputs' top folders linked in, the outputs
at their recorded relative paths), so paths written into the tables are the recorded ones.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from panel2patch.tracking import sha256_path

from .lineage import FAIL, NOT_COMPARABLE, PASS, row
from .records import Record

STAGES = ("ingest",)


@contextlib.contextmanager
def _in_folder(path: Path):
    old = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def _link_tops(rec: Record, scratch: Path, paths) -> None:
    """Link the top folder of every relative input path into ``scratch`` (read where recorded)."""
    for p in paths:
        p = Path(p)
        if p.is_absolute():
            continue
        top = p.parts[0]
        if not (scratch / top).exists():
            (scratch / top).symlink_to(rec.root / top)


def reproduce_ingest(rec: Record, scratch: Path) -> list[dict]:
    from panel2patch.ingest.discover import Unit
    from panel2patch.ingest.run import run_shard

    config = rec.config()
    if config is None:
        return [row("ingest", "config.json", FAIL, "the parent run recorded no config.json", "reproduction")]
    rows = []
    for shard, run in sorted(rec.stage("ingest").items()):
        table = rec.table(run, f"ingest-{shard}")
        outputs = rec.artifact_json(run.info.run_id, "outputs.json") or {}
        if table is None or "figures" not in outputs:
            rows.append(row("ingest", shard, FAIL, f"ingest:{shard} recorded no input table or outputs", "reproduction"))
            continue
        units = table.drop_duplicates("path")[["path", "kind"]]
        if set(units.kind) - {"jats", "package", "pdf", "unsupported", "link"}:
            rows.append(row("ingest", shard, NOT_COMPARABLE, "bulk-tree units: their archive members are not in the "
                            "recorded table", "reproduction"))
            continue
        _link_tops(rec, scratch, units.path)
        out_dir = Path(outputs["figures"]["path"]).parent
        t0 = time.perf_counter()
        with _in_folder(scratch):
            run_shard([Unit(path=u.path, kind=u.kind) for u in units.itertuples(index=False)], out_dir, shard,
                      config.get("ingest") or {}, track=False, progress=False)
        seconds = time.perf_counter() - t0
        bad = []
        for name, o in sorted(outputs.items()):
            again = scratch / o["path"] if not Path(o["path"]).is_absolute() else None
            if again is None:
                bad.append(f"{name}: absolute path {o['path']} not reproduced in scratch")
                continue
            got = sha256_path(again) if again.exists() else None
            if got != o["sha256"]:
                bad.append(f"{o['path']}: sha256 recorded {o['sha256'][:12]}, rerun {str(got)[:12] if got else 'missing'}")
        rows.append(row("ingest", shard, FAIL if bad else PASS,
                        "; ".join(bad) if bad else f"{len(outputs)} outputs bit-identical on rerun ({seconds:.1f} s)",
                        "reproduction"))
    return rows


def reproduce(rec: Record, stages: list[str], scratch: str | Path | None = None, keep: bool = False) -> list[dict]:
    """Rerun ``stages`` (each of :data:`STAGES`) in ``scratch`` (default a temporary folder, removed
    after unless ``keep``; a folder given is left as it is)."""
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"cannot reproduce stage(s) {', '.join(unknown)}: reproducible stages are {', '.join(STAGES)}")
    if not stages:
        return []
    folder = Path(scratch) if scratch else Path(tempfile.mkdtemp(prefix="p2p-audit-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        rows = []
        for stage in stages:
            rows += {"ingest": reproduce_ingest}[stage](rec, folder)
        return rows
    finally:
        if not keep and not scratch:
            shutil.rmtree(folder, ignore_errors=True)
