"""Shared fixtures: the real data beside the repository and the bundled sample corpus."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "resources" / "sample"
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


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


@pytest.fixture(autouse=True)
def _clean_tracking_env(monkeypatch):
    """Each test starts without a tracking URI or parent run in the environment (mlflow's own
    set_tracking_uri exports MLFLOW_TRACKING_URI, and start_workflow_run exports the parent)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("P2P_MLFLOW_PARENT", raising=False)


def copy_repo(dest: Path) -> Path:
    """The repository's own files (tracked or not ignored), without results/.venv/caches."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def snakemake(workdir: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(workdir / "src"), os.environ.get("PYTHONPATH")]))}
    env.pop("MLFLOW_TRACKING_URI", None)  # the copy runs its own package (its src/ first on the path)
    return subprocess.run([SNAKEMAKE, "--cores", "2", *args], cwd=workdir, capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="session")
def demo(tmp_path_factory) -> Path:
    """The workflow's default target run once on the sample corpus (the demo's config), in a copy of
    the repository committed to a git repository of its own (so its runs record a commit, as in a
    checkout). Shared by test_workflow, test_audit and test_ablation (which runs its target on a copy)."""
    work = copy_repo(tmp_path_factory.mktemp("wf"))
    git = ["git", "-c", "user.name=panel2patch tests", "-c", "user.email=tests@localhost", "-c", "commit.gpgsign=false"]
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "the checkout under test"]):
        subprocess.run([*git, *cmd], cwd=work, check=True, capture_output=True)
    proc = snakemake(work)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "Supervision yield:" in proc.stderr  # printed at the end of the run
    return work
