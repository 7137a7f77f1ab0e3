"""The ``panel2patch`` command line's conventions: exit status per outcome, --version, -q,
help on every option, progress bars only on a terminal, one-line errors instead of tracebacks."""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import struct
import termios
import subprocess
import sys

import pytest
from PIL import Image, ImageDraw

import panel2patch
from panel2patch.cli import EPILOG, build_parser

from conftest import REPO


def cli(*args: str, cwd=None, stdin: bytes | None = None, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "panel2patch.cli", *args], cwd=cwd, input=stdin, capture_output=True,
                          text=stdin is None, timeout=300, env=env, **kw)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A two-panel figure, a file that is no image, and a path that does not exist."""
    d = tmp_path_factory.mktemp("img")
    img = Image.new("RGB", (400, 200), "white")
    draw = ImageDraw.Draw(img)
    draw.rectangle([10, 10, 190, 190], fill=(90, 90, 90))
    draw.rectangle([210, 10, 390, 190], fill=(60, 120, 60))
    img.save(d / "good.png")
    (d / "bad.png").write_bytes(b"not an image")
    return {"good": str(d / "good.png"), "bad": str(d / "bad.png"), "missing": str(d / "missing.png")}


def test_version():
    proc = cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"panel2patch {panel2patch.__version__}"


@pytest.mark.parametrize("command", ["panels", "markers"])
def test_image_commands_exit_status_follows_the_inputs(command, images, tmp_path):
    out = tmp_path / "out.jsonl"
    good = cli(command, images["good"], "--out", str(out))
    assert good.returncode == 0, good.stderr
    assert "error" not in json.loads(out.read_text())
    some = cli(command, images["good"], images["bad"], "--out", str(out))
    assert some.returncode == 1, some.stderr
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert "error" not in recs[0] and "error" in recs[1]  # the good image's record is still written
    bad = cli(command, images["missing"], images["bad"], "--out", str(out))
    assert bad.returncode == 1 and "2 errors" in bad.stderr
    assert all("error" in json.loads(x) for x in out.read_text().splitlines())


def test_split_caption_exit_status_follows_the_inputs(tmp_path):
    good, bad = json.dumps({"id": 1, "caption": "(A) Cells. (B) Nuclei."}), '{"id": 2'
    for lines, status in (([good], 0), ([good, bad], 1), ([bad, "[1]"], 1)):
        src = tmp_path / "in.jsonl"
        src.write_text("\n".join(lines) + "\n")
        proc = cli("split-caption", "--in", str(src), "--out", str(tmp_path / "out.jsonl"))
        assert proc.returncode == status, (lines, proc.stderr)
        assert len((tmp_path / "out.jsonl").read_text().splitlines()) == len(lines)
    missing = cli("split-caption", "--in", str(tmp_path / "nope.jsonl"), "--out", "-")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert missing.stderr.strip().splitlines() == [f"panel2patch split-caption: error: {tmp_path / 'nope.jsonl'}: "
                                                   "No such file or directory"]


def test_errors_are_one_line_with_usage_status(tmp_path, images):
    for args, message in [(("corpus", "check", str(tmp_path / "nope")), "no such folder"),
                          (("corpus", "check", str(tmp_path)), "not a corpus folder"),
                          (("corpus", "report", str(tmp_path / "nope")), "no such folder"),
                          (("corpus", "build", str(tmp_path)), "no shard-*/markers/patches.parquet"),
                          (("ingest", str(tmp_path / "nope"), "--out", str(tmp_path / "i")), "does not exist"),
                          (("panels", images["good"], "--out", str(tmp_path / "no" / "dir.jsonl")), "No such file")]:
        proc = cli(*args)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and message in lines[0], (args, proc.stderr)
        assert lines[0].startswith(f"panel2patch {args[0]}") and "error:" in lines[0]
    assert cli("panels", "--no-such-option").returncode == 2  # argparse usage errors: 2 too


def test_quiet_and_verbose(images, tmp_path):
    out = tmp_path / "o.jsonl"
    loud = cli("panels", images["good"], "--out", str(out))
    assert "panels: 1 images" in loud.stderr
    for args in (("-q", "panels", images["good"]), ("panels", "-q", images["good"])):  # before or after the command
        proc = cli(*args, "--out", str(out))
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert cli("-v", "panels", images["good"], "--out", str(out)).returncode == 0


def test_progress_bar_only_on_a_terminal(tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps({"id": i, "caption": f"(A) Cells {i}. (B) Nuclei."}) for i in range(50)) + "\n")
    piped = cli("split-caption", "--in", str(src), "--out", str(tmp_path / "a.jsonl"))
    assert piped.returncode == 0 and piped.stderr.strip() == "split-caption: 50 records, 0 errors"
    for quiet, expect_bar in (((), True), (("-q",), False)):
        master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # tqdm hides bars on a 0-row terminal
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        proc = subprocess.Popen([sys.executable, "-m", "panel2patch.cli", *quiet, "split-caption", "--in", str(src),
                                 "--out", str(tmp_path / "b.jsonl")], stderr=slave, stdout=subprocess.DEVNULL, env=env)
        os.close(slave)
        chunks = []
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        os.close(master)
        assert proc.wait(timeout=120) == 0
        text = b"".join(chunks).decode(errors="replace")
        assert ("record/s" in text or "records/s" in text or "s/record" in text) == expect_bar, text


def _parsers(parser: argparse.ArgumentParser, name: str = "panel2patch"):
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_option_has_help_and_every_command_a_description():
    seen = []
    for name, parser in _parsers(build_parser()):
        seen.append(name)
        assert parser.description, f"{name}: no description"
        for action in parser._actions:
            if not isinstance(action, argparse._SubParsersAction):
                assert action.help and action.help != argparse.SUPPRESS, f"{name} {action.option_strings or action.dest}: no help"
    assert {"panel2patch panels", "panel2patch markers", "panel2patch split-caption", "panel2patch ingest",
            "panel2patch corpus check"} <= set(seen)
    assert "exit status" in EPILOG and "exit status" in cli("panels", "--help").stdout
