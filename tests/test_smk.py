"""Helpers of the Snakemake workflow (panel2patch.smk): package sources as rule inputs (one
code stamp per script), typed --config overrides, and the conda environment's install step."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

from panel2patch.smk import code_stamp, coerce_overrides, package_sources

from conftest import REPO

SCRIPTS = REPO / "workflow" / "scripts"
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def _rel(paths):
    return {Path(p).resolve().relative_to(REPO / "src" / "panel2patch").as_posix() for p in paths}


def test_package_sources_follow_imports_per_stage():
    layout = _rel(package_sources(SCRIPTS / "layout.py"))
    assert {"__init__.py", "tracking.py", "layout/__init__.py", "layout/stage.py", "layout/parse.py",
            "layout/letters.py"} <= layout
    text = _rel(package_sources(SCRIPTS / "text.py"))
    assert "text/split.py" in text and not any(p.startswith(("layout/", "markers/", "train/")) for p in text)
    markers = _rel(package_sources(SCRIPTS / "markers.py"))
    assert {"markers/stage.py", "markers/verify.py", "markers/weights/marker_verifier.pt", "layout/parse.py"} <= markers
    train = _rel(package_sources(SCRIPTS / "train.py", "panel2patch.train.main"))
    assert {"train/launch.py", "train/main.py", "train/losses.py", "model/clip.py", "model/configs/tiny.json"} <= train
    assert not any(p.startswith(("layout/", "markers/")) for p in train)


def test_code_stamp_moves_only_when_the_code_it_lists_changes(tmp_path, monkeypatch):
    """One input per rule for its package files: the stamp is rewritten (mtime moves) when one of
    them changes, and only for the scripts that run it; its content does not depend on the cwd."""
    src = tmp_path / "src"
    shutil.copytree(REPO / "src" / "panel2patch", src / "panel2patch", ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.syspath_prepend(str(src))
    import panel2patch.smk as smk
    monkeypatch.setattr(smk, "_package_dir", lambda: (src / "panel2patch").resolve())
    smk._source_files.cache_clear()
    smk._imports.cache_clear()
    try:
        folder = tmp_path / "results" / "code"
        stamps = {s: Path(code_stamp(SCRIPTS / f"{s}.py", folder)) for s in ("ingest", "text", "layout")}
        assert stamps["layout"] == folder / "layout.sha256"
        lines = stamps["layout"].read_text().splitlines()
        assert len(lines) == len(package_sources(SCRIPTS / "layout.py"))
        assert any(line.endswith("  panel2patch/layout/letters.py") for line in lines)
        old = {s: (p.read_text(), p.stat().st_mtime_ns) for s, p in stamps.items()}
        for s, p in stamps.items():
            os.utime(p, ns=(1, 1))  # so a rewrite shows whatever the clock's resolution
        monkeypatch.chdir(tmp_path)  # other paths, same stamps
        assert {s: Path(code_stamp(SCRIPTS / f"{s}.py", folder)).stat().st_mtime_ns for s in stamps} == dict.fromkeys(stamps, 1)
        letters = src / "panel2patch" / "layout" / "letters.py"
        letters.write_text(letters.read_text() + "# an edit\n")
        for s in stamps:
            code_stamp(SCRIPTS / f"{s}.py", folder)
        assert stamps["layout"].stat().st_mtime_ns > 1 and stamps["layout"].read_text() != old["layout"][0]
        assert stamps["text"].stat().st_mtime_ns == stamps["ingest"].stat().st_mtime_ns == 1
        train = Path(code_stamp(SCRIPTS / "train.py", folder, "panel2patch.train.main"))
        assert train.name == "train+panel2patch.train.main.sha256" and "panel2patch/train/main.py" in train.read_text()
    finally:
        smk._source_files.cache_clear()
        smk._imports.cache_clear()


def test_nested_config_overrides_are_typed_by_the_schema():
    schema = yaml.safe_load(SCHEMA.read_text())
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    # what snakemake --config 'layout={max_side: 900, detector_weights: null}' 'corpus={split: {val: "0.2"}}' ... merged in
    over = {"layout": {"max_side": "900", "detector_weights": "null"}, "corpus": {"split": {"val": "0.2"}, "licences": ["cc0"]},
            "markers": {"detect": {"verify_score": "1"}}, "train": {"deepspeed": "false", "set": ["micro_batch=4"]},
            "inputs": ["123"]}
    for key, value in over.items():
        if isinstance(value, dict):
            for k, v in value.items():
                if isinstance(v, dict):
                    config[key][k].update(v)
                else:
                    config[key][k] = v
        else:
            config[key] = value
    coerce_overrides(config, over, SCHEMA)
    assert config["layout"]["max_side"] == 900 and config["layout"]["detector_weights"] is None
    assert config["layout"]["reader"] == "glyph"  # the rest of the section is the config file's
    assert config["corpus"]["split"] == {"val": 0.2, "test": 0.1, "seed": 0}
    assert config["markers"]["detect"]["verify_score"] == 1.0 and config["train"]["deepspeed"] is False
    assert config["inputs"] == ["123"] and config["train"]["set"] == ["micro_batch=4"]  # strings stay strings
    bad = {"layout": {"max_side": "big"}}
    assert coerce_overrides({"layout": {"max_side": "big"}}, bad, schema)["layout"]["max_side"] == "big"  # left to validate


def test_conda_env_installs_this_checkout_from_any_conda_prefix(tmp_path):
    """Snakemake copies the env file and its post-deploy script into the conda prefix and runs the
    script there; it must install the checkout named by P2P_REPO, not a path relative to the copy."""
    env = yaml.safe_load((REPO / "envs" / "panel2patch.yaml").read_text())
    assert not any(isinstance(d, dict) for d in env["dependencies"])  # no pip paths resolved from the copy
    prefix = tmp_path / "work" / ".snakemake" / "conda"
    prefix.mkdir(parents=True)
    script = prefix / "0123abcd.post-deploy.sh"
    shutil.copy(REPO / "envs" / "panel2patch.post-deploy.sh", script)
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    (bin_ / "python").write_text('#!/bin/sh\necho "$@" > "$P2P_ARGS_FILE"\n')
    (bin_ / "python").chmod(0o755)
    run_env = {**os.environ, "PATH": f"{bin_}:{os.environ['PATH']}", "P2P_REPO": str(REPO),
               "P2P_ARGS_FILE": str(tmp_path / "args")}
    proc = subprocess.run(["bash", str(script)], cwd=tmp_path / "work", env=run_env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "args").read_text().split() == ["-m", "pip", "install", "--no-input", "-e", str(REPO)]
    run_env.pop("P2P_REPO")
    assert subprocess.run(["bash", str(script)], cwd=tmp_path, env=run_env, capture_output=True).returncode != 0
