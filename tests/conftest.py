"""Shared fixtures: the real data beside the repository and the bundled sample corpus."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "resources" / "sample"


def _shared_data() -> Path:
    return Path(os.environ.get("P2P_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (or $P2P_SHARED_DATA). Tests on it skip without it, except in CI, where
    its absence is an error: CI must never pass by skipping the real-data tests."""
    path = _shared_data()
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"real test data not found at {path} (set P2P_SHARED_DATA)")
        pytest.skip(f"real test data not found at {path} (set P2P_SHARED_DATA)")
    return path


def load_benchmark(name: str):
    """Import ``benchmarks/<name>.py`` as a module (tests reuse the benchmarks' scoring code)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def sample() -> Path:
    return SAMPLE


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> Path:
    """A copy of the repository after the workflow's default target ran on the sample corpus
    (test_workflow.py; test_ablation.py runs its target on a copy of it, reusing the corpus)."""
    from test_workflow import copy_repo, snakemake

    work = copy_repo(tmp_path_factory.mktemp("wf"))
    proc = snakemake(work)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Supervision yield:" in proc.stderr  # printed at the end of the run
    return work


@pytest.fixture(autouse=True)
def _clean_tracking_env(monkeypatch):
    """Each test starts without a tracking URI or parent run in the environment (mlflow's own
    set_tracking_uri exports MLFLOW_TRACKING_URI, and start_workflow_run exports the parent)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("P2P_MLFLOW_PARENT", raising=False)
