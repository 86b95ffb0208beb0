"""The ``triage`` command line: train, predict, evaluate, ensure-model."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from conftest import make_records, write_jsonl
from triage.cli import app

try:
    runner = CliRunner(mix_stderr=False)
except TypeError:  # click >= 8.2 always keeps stderr apart
    runner = CliRunner()

OUTPUT_FIELDS = {"id", "dispute_type", "urgency", "emotion", "escalation", "confidence", "scores", "explanation", "model_version"}


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path, monkeypatch):
    """Each test gets its own var/ and no review corpora (fast, and independent of the machine)."""
    from triage.settings import get_settings

    monkeypatch.setenv("TRIAGE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("TRIAGE_CORPORA_DIR", "none")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def trained(tmp_path):
    data = write_jsonl(tmp_path / "train" / "tiny.jsonl", make_records())
    result = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "store")])
    assert result.exit_code == 0, result.stderr
    return tmp_path / "store", result.stdout.strip()


def test_train_writes_a_current_version(trained):
    store_dir, version = trained
    assert (store_dir / version / "manifest.json").is_file()
    assert (store_dir / "CURRENT").read_text().strip() == version
    manifest = json.loads((store_dir / version / "manifest.json").read_text())
    assert manifest["training"]["records"] == 85
    assert manifest["data_hash"].startswith("sha256:")


def test_train_reports_bad_lines(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", make_records() + ["oops", {"text": "缺标签"}])
    result = runner.invoke(app, ["train", "--data", str(data), "--out", str(tmp_path / "s")])
    assert result.exit_code == 0
    assert f"{data}:86: not JSON" in result.stderr
    assert f"{data}:87: no 'dispute_type' label" in result.stderr


def test_train_on_missing_data_fails_clearly(tmp_path):
    result = runner.invoke(app, ["train", "--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "s")])
    assert result.exit_code == 1
    assert "does not exist" in result.stderr


def test_predict_file_to_file_skips_bad_lines_with_numbers(trained, tmp_path):
    store_dir, version = trained
    inp = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {"id": "m1", "text": "麦克风漏电了，我要去12315投诉"},
            "not json",
            {"id": "m3"},
            {"id": "m4", "text": 123},
            {"id": "m5", "text": "   "},
            {"id": "m6", "text": "很好用，推荐"},
        ],
    )
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["predict", "--model", str(store_dir), str(inp), "-o", str(out)])
    assert result.exit_code == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["m1", "m6"]
    assert set(rows[0]) == OUTPUT_FIELDS
    assert rows[0]["urgency"] == 1 and rows[0]["escalation"] is True
    assert isinstance(rows[1]["escalation"], bool) and rows[1]["urgency"] in (1, 2, 3)
    assert rows[0]["model_version"] == version
    for n in (2, 3, 4, 5):
        assert f"skipped line {n}:" in result.stderr
    assert "skipped 4 lines" in result.stderr


def test_predict_stdin_to_stdout_with_a_version_folder(trained):
    store_dir, version = trained
    result = runner.invoke(
        app, ["predict", "--model", str(store_dir / version)], input='{"id": 1, "text": "快递五天还没到"}\n'
    )
    assert result.exit_code == 0, result.stderr
    row = json.loads(result.stdout)
    assert row["id"] == 1 and row["model_version"] == version


def test_predict_without_a_model_says_what_to_do(tmp_path):
    result = runner.invoke(app, ["predict", "--model", str(tmp_path)], input='{"text": "坏了"}\n')
    assert result.exit_code == 1
    assert "triage train" in result.stderr


def test_evaluate_table_and_json(trained, tmp_path):
    store_dir, _ = trained
    data = write_jsonl(tmp_path / "eval.jsonl", make_records()[:40])
    table = runner.invoke(app, ["evaluate", "--model", str(store_dir), "--data", str(data)])
    assert table.exit_code == 0, table.stderr
    assert "macro-F1" in table.stdout and "confusion" in table.stdout and "ECE" in table.stdout
    as_json = runner.invoke(app, ["evaluate", "--model", str(store_dir), "--data", str(data), "--json"])
    report = json.loads(as_json.stdout)
    assert report["n"] == 40
    urgency = report["heads"]["urgency"]
    assert {"accuracy", "macro_f1", "per_class", "confusion", "ece"} <= set(urgency)
    assert {"precision", "recall"} <= set(urgency["per_class"]["2"])


def test_ensure_model_trains_once(tmp_path, monkeypatch):
    from triage.settings import get_settings

    write_jsonl(tmp_path / "ds" / "seed" / "tiny.jsonl", make_records())
    lexicons = get_settings().datasets_dir / "lexicons"
    (tmp_path / "ds" / "lexicons").symlink_to(lexicons)
    monkeypatch.setenv("TRIAGE_DATASETS_DIR", str(tmp_path / "ds"))
    get_settings.cache_clear()
    first = runner.invoke(app, ["ensure-model"])
    assert first.exit_code == 0, first.stderr
    assert "trained default model" in first.stderr
    second = runner.invoke(app, ["ensure-model"])
    assert second.exit_code == 0 and "is current" in second.stderr
    assert len(list((tmp_path / "var" / "models").glob("v*"))) == 1
    (next((tmp_path / "var" / "models").glob("v*")) / "backend" / "arrays.npz").unlink()
    third = runner.invoke(app, ["ensure-model"])
    assert third.exit_code == 0 and "unusable" in third.stderr
    assert len(list((tmp_path / "var" / "models").glob("v*"))) == 2


def test_escalation_threshold_comes_from_the_settings(trained, monkeypatch):
    """TRIAGE_ESCALATION_THRESHOLD decides the model's escalation when no lexicon term does."""
    from pydantic import ValidationError

    from models.store import ModelStore
    from triage.settings import Settings, get_settings
    from triage.triager import Triager

    store_dir, _ = trained
    text = "我要投诉，必须给我一个说法"  # no escalation term: the model decides
    p = Triager.from_store(ModelStore(store_dir)).predict(text).scores["escalation"]["true"]
    assert 0.001 < p < 0.999, p
    decided = {}
    for threshold in (p / 2, (1 + p) / 2):
        monkeypatch.setenv("TRIAGE_ESCALATION_THRESHOLD", str(threshold))
        get_settings.cache_clear()
        triager = Triager.from_store(ModelStore(store_dir))
        assert triager.escalation_threshold == threshold
        decided[threshold] = triager.predict(text).escalation
    assert list(decided.values()) == [True, False]
    with pytest.raises(ValidationError):
        Settings(escalation_threshold=1.5)


def test_training_progress_prints_each_stage_but_not_every_batch(capsys):
    from triage.cli.common import stage_progress

    report = stage_progress()
    report("featurise", 0.0)
    for step in range(1, 201):  # a fine-tuning epoch reports every batch
        report("fine-tune epoch 1/2", step / 200)
    report("done", 1.0)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].endswith("featurise") and lines[-1].endswith("done")
    epoch = [line for line in lines if "epoch 1/2" in line]
    assert 15 <= len(epoch) <= 21, epoch
    assert epoch[-1].startswith("  [100%]")
