"""Model signing (issue 10.5): the store checks authenticity, not only integrity."""

from __future__ import annotations

import hashlib
import json

import pytest

from models.store import SIGNATURE, ModelStore, signing_key
from triage.errors import ModelError
from triage.settings import get_settings


def _tamper_and_rehash(store: ModelStore, version: str) -> None:
    """What an attacker with write access to the store can do: edit a file, fix the hashes."""
    folder = store.root / version
    meta = folder / "backend" / "backend.json"
    meta.write_bytes(meta.read_bytes() + b" ")
    manifest_path = folder / "manifest.json"
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    manifest["files"]["backend.json"] = hashlib.sha256(meta.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")


def test_a_saved_model_is_signed_and_loads(tiny_store):
    version = tiny_store.current_version()
    signature = (tiny_store.root / version / SIGNATURE).read_text().strip()
    assert signature.startswith("hmac-sha256:") and len(signature) == len("hmac-sha256:") + 64
    tiny_store.load(version)
    # status changes re-sign: the model still loads afterwards
    tiny_store.update_manifest(version, status="promoted")
    assert (tiny_store.root / version / SIGNATURE).read_text().strip() != signature
    tiny_store.load(version)


def test_edited_files_with_recomputed_hashes_are_refused(tiny_store):
    version = tiny_store.current_version()
    _tamper_and_rehash(tiny_store, version)
    with pytest.raises(ModelError, match="wrong signature"):
        tiny_store.load(version)
    with pytest.raises(ModelError, match="wrong signature"):
        tiny_store.set_current(version)


def test_a_missing_signature_is_refused(tiny_store):
    version = tiny_store.current_version()
    (tiny_store.root / version / SIGNATURE).unlink()
    with pytest.raises(ModelError, match="not signed"):
        tiny_store.load(version)
    # the operator can vouch for an intact model: it loads again
    tiny_store.sign(version)
    tiny_store.load(version)


def test_signing_refuses_a_tampered_model(tiny_store):
    version = tiny_store.current_version()
    meta = tiny_store.root / version / "backend" / "backend.json"
    meta.write_bytes(meta.read_bytes() + b" ")
    with pytest.raises(ModelError, match="hash mismatch"):
        tiny_store.sign(version)


def test_a_model_signed_with_another_key_is_refused(tiny_store, tiny_backend):
    other = ModelStore(tiny_store.root, signing_key="another-installation-key")
    version = other.save(tiny_backend)
    other.load(version)  # valid for the key that signed it
    with pytest.raises(ModelError, match="wrong signature"):
        tiny_store.load(version)


def test_the_key_comes_from_the_setting_or_a_key_file_outside_the_store(tmp_path, monkeypatch, tiny_backend):
    monkeypatch.delenv("TRIAGE_MODEL_SIGNING_KEY", raising=False)
    monkeypatch.delenv("TRIAGE_MODEL_SIGNING_KEY_FILE", raising=False)
    get_settings.cache_clear()
    try:
        root = tmp_path / "models"
        key = signing_key(root)  # created on first use, beside the store
        key_file = tmp_path / "model-signing.key"
        assert key_file.read_text().strip().encode() == key and len(key) == 64
        assert key_file.stat().st_mode & 0o077 == 0
        assert signing_key(root) == key  # stable
        version = ModelStore(root).save(tiny_backend)

        monkeypatch.setenv("TRIAGE_MODEL_SIGNING_KEY", "a-key-from-the-secret-manager")
        get_settings.cache_clear()
        assert signing_key(root) == b"a-key-from-the-secret-manager"
        with pytest.raises(ModelError, match="wrong signature"):
            ModelStore(root).load(version)

        monkeypatch.setenv("TRIAGE_MODEL_SIGNING_KEY", "short")
        get_settings.cache_clear()
        with pytest.raises(ModelError, match="at least 16"):
            signing_key(root)

        monkeypatch.delenv("TRIAGE_MODEL_SIGNING_KEY")
        monkeypatch.setenv("TRIAGE_MODEL_SIGNING_KEY_FILE", str(root / "inside.key"))
        get_settings.cache_clear()
        with pytest.raises(ModelError, match="inside the model store"):
            signing_key(root)
    finally:
        get_settings.cache_clear()


def test_a_running_service_keeps_its_model_when_a_promotion_is_wrongly_signed(tmp_path):
    from review_fixtures import make_service, make_settings, train_tiny_model
    from triage.contexts.review import ReviewContext

    settings = make_settings(tmp_path, per_type=6)
    store = train_tiny_model(settings)
    first = store.current_version()
    service = make_service(settings, store)
    context = ReviewContext(service, store, settings)
    backend, _ = store.load(first)
    second = store.save(backend)
    _tamper_and_rehash(store, second)
    with pytest.raises(ModelError, match="wrong signature"):
        context.learning.promote(second, "admin")
    assert service.triager.version == first
    assert store.current_version() == first
    assert service.triager.predict("麦克风有杂音").model_version == first


def test_cli_signs_a_trusted_model_and_refuses_a_tampered_one(tmp_path, monkeypatch, tiny_backend):
    from typer.testing import CliRunner

    from triage.cli import app as cli

    monkeypatch.setenv("TRIAGE_VAR_DIR", str(tmp_path))
    monkeypatch.delenv("TRIAGE_MODEL_DIR", raising=False)
    monkeypatch.delenv("TRIAGE_MODEL_SIGNING_KEY", raising=False)
    get_settings.cache_clear()
    try:
        store = ModelStore(tmp_path / "models")
        version = store.save(tiny_backend)
        (store.root / version / SIGNATURE).unlink()
        runner = CliRunner()
        ok = runner.invoke(cli, ["models", "sign", version])
        assert ok.exit_code == 0, ok.output
        store.load(version)
        meta = store.root / version / "backend" / "backend.json"
        meta.write_bytes(meta.read_bytes() + b" ")
        refused = runner.invoke(cli, ["models", "sign", version])
        assert refused.exit_code == 1 and "hash mismatch" in refused.output
    finally:
        get_settings.cache_clear()
