"""The versioned model store and the labeled-data loader."""

from __future__ import annotations

import json

import pytest

from conftest import write_jsonl
from models.store import CURRENT, ModelStore, open_model_dir
from models.training import data_hash, load_labeled
from triage.errors import InvalidInput, ModelError, NotFound
from triage.triager import Triager


def test_save_writes_a_version_with_its_manifest(tiny_store):
    version = tiny_store.current_version()
    manifest = tiny_store.read_manifest(version)
    assert manifest["version"] == version
    assert manifest["backend"] == "sklearn"
    assert manifest["data_hash"] == "sha256:test"
    assert manifest["status"] == "candidate"
    assert manifest["created"] and isinstance(manifest["metrics"], dict)
    assert manifest["files"] and all(len(h) == 64 for h in manifest["files"].values())
    assert not [p for p in tiny_store.root.iterdir() if p.name.startswith(".tmp")]


def test_load_returns_the_backend_and_a_working_triager(tiny_store):
    backend, manifest = tiny_store.load()
    assert manifest["version"] == tiny_store.current_version()
    triager = Triager.from_store(tiny_store)
    assert triager.version == manifest["version"]
    assert triager.predict("麦克风有杂音").model_version == manifest["version"]


def test_versions_are_listed_oldest_first_with_the_current_flag(tiny_store, tiny_backend):
    first = tiny_store.current_version()
    second = tiny_store.save(tiny_backend, {"metrics": {"note": 1}})
    assert second != first
    listed = tiny_store.list_versions()
    assert [v["version"] for v in listed] == [first, second]
    assert [v["current"] for v in listed] == [True, False]
    assert "files" not in listed[0]
    tiny_store.set_current(second)
    assert tiny_store.current_version() == second
    assert tiny_store.load()[1]["version"] == second
    assert tiny_store.load(first)[1]["version"] == first


def test_current_pointer_is_replaced_atomically(tiny_store, tiny_backend):
    second = tiny_store.save(tiny_backend)
    tiny_store.set_current(second)
    assert (tiny_store.root / CURRENT).read_text().strip() == second
    assert not [p for p in tiny_store.root.iterdir() if p.name.startswith(f".{CURRENT}")]


def test_update_manifest_keeps_identity(tiny_store):
    version = tiny_store.current_version()
    tiny_store.update_manifest(version, status="promoted", metrics={"dev": {"macro_f1": 0.7}})
    manifest = tiny_store.read_manifest(version)
    assert manifest["status"] == "promoted" and manifest["metrics"]["dev"]["macro_f1"] == 0.7
    with pytest.raises(ModelError):
        tiny_store.update_manifest(version, files={})
    with pytest.raises(ModelError):
        tiny_store.save(object(), {"version": "mine"})  # type: ignore[arg-type]
    tiny_store.load(version)  # still loads


def test_empty_store_says_how_to_get_a_model(tmp_path):
    store = ModelStore(tmp_path / "empty")
    assert store.current_version() is None
    assert store.list_versions() == []
    with pytest.raises(ModelError, match="triage train"):
        store.load()
    with pytest.raises(NotFound):
        store.load("v-missing")


def test_refuses_a_folder_without_manifest(tiny_store):
    foreign = tiny_store.root / "v-foreign"
    (foreign / "backend").mkdir(parents=True)
    with pytest.raises(ModelError, match="no manifest.json"):
        tiny_store.load("v-foreign")
    listed = {v["version"]: v for v in tiny_store.list_versions()}
    assert listed["v-foreign"]["status"] == "foreign" and "manifest" in listed["v-foreign"]["error"]
    with pytest.raises(ModelError):
        tiny_store.set_current("v-foreign")


def test_refuses_a_foreign_manifest(tiny_store):
    version = tiny_store.current_version()
    path = tiny_store.root / version / "manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "format": "other-tool/2"}))
    with pytest.raises(ModelError, match="foreign"):
        tiny_store.load()
    path.write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        tiny_store.load()


def test_refuses_changed_added_or_missing_files(tiny_store):
    version = tiny_store.current_version()
    backend_dir = tiny_store.root / version / "backend"
    meta = backend_dir / "backend.json"
    original = meta.read_bytes()
    meta.write_bytes(original + b" ")
    with pytest.raises(ModelError, match="hash mismatch"):
        tiny_store.load()
    meta.write_bytes(original)
    (backend_dir / "extra.pkl").write_bytes(b"\x80\x04")
    with pytest.raises(ModelError, match="did not write"):
        tiny_store.load()
    (backend_dir / "extra.pkl").unlink()
    (backend_dir / "vocabulary.json").unlink()
    with pytest.raises(ModelError, match="missing"):
        tiny_store.load()


def test_version_ids_cannot_escape_the_store(tiny_store):
    """A malformed id is bad input (422), not 'model unavailable, retry' (503)."""
    for bad in ("../elsewhere", ".hidden", "a/b", "..\\x"):
        with pytest.raises(InvalidInput, match="not a model version id"):
            tiny_store.load(bad)


def test_open_model_dir_accepts_a_store_or_a_version(tiny_store):
    store, version = open_model_dir(tiny_store.root)
    assert version is None and store.root == tiny_store.root
    current = tiny_store.current_version()
    store, version = open_model_dir(tiny_store.root / current)
    assert version == current
    with pytest.raises(ModelError):
        open_model_dir(tiny_store.root / "nowhere")


# ------------------------------------------------------------------ labeled data


def test_load_labeled_reports_bad_lines_with_file_and_line(tmp_path):
    good = {"id": "a", "text": "麦克风坏了", "dispute_type": "quality", "urgency": 2, "emotion": "upset", "escalation": False}
    path = write_jsonl(
        tmp_path / "data" / "part.jsonl",
        [
            good,
            "{broken json",
            {**good, "text": 5},
            {**good, "text": "  "},
            {k: v for k, v in good.items() if k != "emotion"},
            {**good, "urgency": 7},
            {**good, "escalation": "yes"},
            "[1, 2]",
            "",
            {**good, "id": "b", "urgency": "1"},
        ],
    )
    records, problems = load_labeled([tmp_path / "data"])
    assert [r["id"] for r in records] == ["a", "b"]
    assert records[1]["urgency"] == 1
    assert [p.line for p in problems] == [2, 3, 4, 5, 6, 7, 8]
    assert all(p.path == str(path) for p in problems)
    assert "not JSON" in str(problems[0]) and str(problems[0]).startswith(f"{path}:2:")
    assert "emotion" in problems[3].message and "urgency" in problems[4].message


def test_load_labeled_missing_path(tmp_path):
    with pytest.raises(InvalidInput, match="does not exist"):
        load_labeled(tmp_path / "nope.jsonl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInput, match="no .jsonl"):
        load_labeled(tmp_path / "empty")


def test_data_hash_ignores_order_but_not_labels(tiny_records):
    assert data_hash(tiny_records) == data_hash(list(reversed(tiny_records)))
    changed = [dict(r) for r in tiny_records]
    changed[0]["urgency"] = 3 if changed[0]["urgency"] != 3 else 2
    assert data_hash(changed) != data_hash(tiny_records)

