"""The transformers backend with a tiny BERT built here: pretrain, fine-tune, save, load.

Everything is local and small (2 layers, hidden 32, a vocabulary of the seed data's
characters, a few steps), so the whole file runs in well under two minutes on 2 cores.
"""

from __future__ import annotations

import json
import os
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from typer.testing import CliRunner  # noqa: E402

from models.base import get_backend_class  # noqa: E402
from models.training import load_labeled  # noqa: E402
from triage.errors import InvalidInput, ModelError  # noqa: E402
from triage.taxonomy import HEADS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
TINY = {"epochs": 3, "batch_size": 16, "learning_rate": 1e-3, "max_length": 64, "patience": 10}


@pytest.fixture(scope="module")
def records():
    """A stratified sample of the project's own seed data (every dispute type present)."""
    all_records, _ = load_labeled(ROOT / "datasets" / "seed")
    if len(all_records) < 100:
        pytest.skip("seed data not present")
    by_type = defaultdict(list)
    for r in all_records:
        by_type[r["dispute_type"]].append(r)
    rng = random.Random(0)
    sample = [r for group in by_type.values() for r in rng.sample(group, min(24, len(group)))]
    escalations = [r for r in all_records if r["escalation"]][:6]
    sample.extend(r for r in escalations if r not in sample)
    rng.shuffle(sample)
    return sample


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, records):
    """A tiny BERT pretrained for a few steps through the CLI, as a user would build one."""
    from triage.cli import app

    work = tmp_path_factory.mktemp("pretrain")
    corpus = work / "messages.jsonl"
    corpus.write_text(
        "\n".join(json.dumps({"text": r["text"]}, ensure_ascii=False) for r in records), encoding="utf-8"
    )
    out = work / "tiny-bert"
    result = CliRunner().invoke(
        app,
        ["pretrain", "--corpus", str(corpus), "--out", str(out), "--max-steps", "8", "--layers", "2",
         "--hidden", "32", "--heads", "2", "--vocab-size", "400", "--max-length", "64", "--batch-size", "16"],
    )
    assert result.exit_code == 0, result.output
    for name in ("config.json", "vocab.txt", "tokenizer_config.json", "pretrain_info.json"):
        assert (out / name).is_file(), name
    info = json.loads((out / "pretrain_info.json").read_text())
    assert info["steps"] == 8 and info["final_loss"] > 0
    return out


@pytest.fixture(scope="module")
def trained(checkpoint, records):
    backend = get_backend_class("transformers")(base_model=str(checkpoint), **TINY)
    stages = []
    backend.fit(
        [r["text"] for r in records],
        {h: [r[h] for r in records] for h in HEADS},
        progress=lambda stage, fraction: stages.append(fraction),
    )
    assert stages and stages[-1] == 1.0 and stages == sorted(stages)
    return backend


def test_offline_mode_is_forced():
    import models.transformers_backend  # noqa: F401

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["TRANSFORMERS_OFFLINE"] == "1"


def test_hub_name_without_local_copy_is_a_clear_error(tmp_path):
    from models.transformers_backend import resolve_base_model

    with pytest.raises(ModelError) as info:
        resolve_base_model("hfl/no-such-chinese-model")
    message = str(info.value)
    assert "TRIAGE_BASE_MODEL" in message and "--local-dir" in message and "never downloads" in message
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        resolve_base_model(tmp_path / "empty")


def test_fit_learns_every_head(trained, records):
    assert set(trained.classes_) == set(HEADS)
    assert trained.classes_["urgency"] == [1, 2, 3]
    assert trained.classes_["escalation"] == [False, True]
    history = trained.training_info_["history"]
    assert len(history) == TINY["epochs"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert all(t > 0 for t in trained.temperatures_.values())


def test_probabilities_shape_and_order(trained, records):
    texts = [r["text"] for r in records[:37]]
    proba = trained.predict_proba(texts)
    for head in HEADS:
        assert proba[head].shape == (37, len(trained.classes_[head]))
        assert np.allclose(proba[head].sum(1), 1.0)
    # Length-sorted batching must return rows in input order.
    reversed_proba = trained.predict_proba(texts[::-1])
    for head in HEADS:
        assert np.allclose(reversed_proba[head][::-1], proba[head], atol=1e-5)
    assert trained.predict_proba([])["dispute_type"].shape == (0, 5)


def test_save_load_gives_identical_probabilities(trained, records, tmp_path):
    texts = [r["text"] for r in records[:50]]
    before = trained.predict_proba(texts)
    trained.save(tmp_path / "model")
    loaded = get_backend_class("transformers").load(tmp_path / "model")
    after = loaded.predict_proba(texts)
    assert loaded.classes_ == trained.classes_
    for head in HEADS:
        assert np.array_equal(before[head], after[head])


def test_load_rejects_foreign_folder(tmp_path):
    from models.transformers_backend import TransformersBackend

    with pytest.raises(ModelError):
        TransformersBackend.load(tmp_path)
    (tmp_path / "backend.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ModelError, match="unsupported"):
        TransformersBackend.load(tmp_path)


def test_explanations_are_words_of_the_text(trained, records):
    text = records[0]["text"]
    label = trained.classes_["dispute_type"][0]
    words = trained.explain(text, "dispute_type", label, top_k=4)
    assert len(words) <= 4
    assert all(w in text and v > 0 for w, v in words)
    assert [v for _, v in words] == sorted((v for _, v in words), reverse=True)
    with pytest.raises(ModelError):
        trained.explain(text, "dispute_type", "no-such-label")
    with pytest.raises(ModelError):
        trained.explain(text, "no-such-head", "quality")


def test_batched_explanations_match_probabilities(trained, records):
    texts = [r["text"] for r in records[:20]]
    proba, explanations = trained.predict_explained(texts, top_k=3)
    plain = trained.predict_proba(texts)
    for head in HEADS:
        assert np.allclose(proba[head], plain[head], atol=1e-6)
    assert len(explanations) == 20
    assert all(set(e) == set(HEADS) for e in explanations)
    # The explanation of one text's argmax label is the same alone and in a batch.
    top = trained.classes_["emotion"][int(plain["emotion"][3].argmax())]
    alone = trained.explain(texts[3], "emotion", top, top_k=3)
    assert [w for w, _ in alone] == [w for w, _ in explanations[3]["emotion"]]


def test_bad_input_is_refused(trained, checkpoint):
    with pytest.raises(InvalidInput):
        trained.predict_proba("one string, not a list")
    backend = get_backend_class("transformers")(base_model=str(checkpoint), **TINY)
    with pytest.raises(ModelError, match="not trained"):
        backend.predict_proba(["x"])
    with pytest.raises(ModelError, match="labels for"):
        backend.fit(["a", "b"], {"dispute_type": ["quality"]})


def test_triager_and_store_work_unchanged(trained, records, tmp_path):
    from models.store import ModelStore
    from triage.triager import Triager

    store = ModelStore(tmp_path / "store")
    version = store.save(trained, {"metrics": {}})
    backend, manifest = store.load(version)
    assert manifest["backend"] == "transformers"
    predictions = Triager(backend, version).predict_many([r["text"] for r in records[:5]])
    assert len(predictions) == 5
    for p in predictions:
        assert p.model_version == version
        assert set(p.explanation) >= set(HEADS) | {"rules"}
        assert 0 < p.confidence <= 1


def test_ensemble_averages_members_and_round_trips(trained, records, tmp_path):
    from models.ensemble import EnsembleBackend
    from models.sklearn_backend import SklearnBackend

    texts = [r["text"] for r in records]
    labels = {h: [r[h] for r in records] for h in HEADS}
    linear = SklearnBackend().fit(texts, labels)
    ensemble = EnsembleBackend(members=[linear, trained], weights=[1.0, 1.0])
    ensemble._merge_classes()  # members are already fitted
    sample = texts[:10]
    mixed = ensemble.predict_proba(sample)
    a, b = linear.predict_proba(sample), trained.predict_proba(sample)
    for head in HEADS:
        expected = np.zeros_like(mixed[head])
        for member_proba, member in ((a, linear), (b, trained)):
            cols = [ensemble.classes_[head].index(c) for c in member.classes_[head]]
            expected[:, cols] += 0.5 * member_proba[head]
        assert np.allclose(mixed[head], expected)
    ensemble.save(tmp_path / "ens")
    loaded = get_backend_class("ensemble").load(tmp_path / "ens")
    again = loaded.predict_proba(sample)
    for head in HEADS:
        assert np.allclose(again[head], mixed[head], atol=1e-12)
    proba, explanations = loaded.predict_explained(sample, top_k=3)
    assert all(len(e["dispute_type"]) <= 3 for e in explanations)
    with pytest.raises(InvalidInput):
        EnsembleBackend(members=[linear, trained], weights=[1.0])


def test_cli_trains_and_predicts_with_the_ensemble_selected_by_configuration(checkpoint, records, tmp_path, monkeypatch):
    """What the README tells a user to do: TRIAGE_BACKEND + TRIAGE_BASE_MODEL, then train and predict."""
    from triage.cli import app
    from triage.settings import get_settings

    monkeypatch.setenv("TRIAGE_BACKEND", "ensemble")
    monkeypatch.setenv("TRIAGE_BASE_MODEL", str(checkpoint))
    monkeypatch.setenv("TRIAGE_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("TRIAGE_CORPORA_DIR", "none")
    get_settings.cache_clear()
    try:
        data = tmp_path / "labeled.jsonl"
        data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records), encoding="utf-8")
        runner = CliRunner()
        trained = runner.invoke(app, ["train", "--data", str(data)])
        assert trained.exit_code == 0, trained.output
        store = tmp_path / "var" / "models"
        version = (store / "CURRENT").read_text().strip()
        manifest = json.loads((store / version / "manifest.json").read_text())
        assert manifest["backend"] == "ensemble"
        members = json.loads((store / version / "backend" / "ensemble.json").read_text())["members"]
        assert [m["backend"] for m in members] == ["sklearn", "transformers"]

        predicted = runner.invoke(app, ["predict"], input=json.dumps({"id": "a", "text": records[0]["text"]}) + "\n")
        assert predicted.exit_code == 0, predicted.output
        line = json.loads(predicted.stdout.strip().splitlines()[-1])
        assert line["model_version"] == version and set(line["scores"]) == set(HEADS)
        assert any(line["explanation"].get(h) for h in HEADS)
    finally:
        get_settings.cache_clear()
