"""The versioned model store: one folder per trained model, a manifest, a current pointer.

Layout under ``root``::

    CURRENT                      the current version id (replaced atomically)
    <version>/manifest.json      who wrote it, backend, data hash, metrics, status, file hashes
    <version>/manifest.sig       HMAC-SHA256 of the manifest (canonical JSON) with the signing key
    <version>/backend/...        the backend's own files

Why so strict: a model file is code-adjacent (it decides urgency and routing, and a
pickle runs code when loaded), so the store loads only folders it wrote itself, whose files
still hash to what the manifest recorded (integrity) and whose manifest carries a valid
signature made with a key kept outside the store (authenticity: someone who edits the
files and recomputes the hashes cannot sign without the key). It says exactly why it
refuses anything else. Writes go to a temporary folder that is renamed into place, so a
crash never leaves a half-written version.

The signing key (:func:`signing_key`): ``TRIAGE_MODEL_SIGNING_KEY`` if set, else the file
``TRIAGE_MODEL_SIGNING_KEY_FILE``, else ``model-signing.key`` beside the store folder
(``var/model-signing.key`` by default), created with a random key on first use.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from models.base import ClassifierBackend, get_backend_class
from triage.errors import InvalidInput, ModelError, NotFound

STORE_FORMAT = "complaint-triage-model/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
SIGNATURE_SCHEME = "hmac-sha256"
KEY_FILE_NAME = "model-signing.key"
MIN_KEY_CHARS = 16
CURRENT = "CURRENT"
BACKEND_DIR = "backend"
_PROTECTED_FIELDS = {"format", "version", "backend", "files", "created"}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _hash_tree(folder: Path) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): _sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()
    }


def _atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary file in the same folder, fsync, then replace: readers see old or new."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


log = logging.getLogger(__name__)


def _canonical(manifest: dict[str, Any]) -> bytes:
    """The bytes a signature covers: the manifest as sorted, compact UTF-8 JSON."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


def sign_manifest(manifest: dict[str, Any], key: bytes) -> str:
    """``hmac-sha256:<hex>`` over the canonical manifest."""
    return f"{SIGNATURE_SCHEME}:" + hmac.new(key, _canonical(manifest), hashlib.sha256).hexdigest()


def _key_inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def signing_key(root: Path | str) -> bytes:
    """The model-signing key for the store at ``root`` (see the module docstring).

    A key file that does not exist yet is created with 32 random bytes (mode 0600); a key
    file inside the store itself is refused, since it would travel with the models it vouches for.
    """
    from triage.settings import get_settings

    settings = get_settings()
    root = Path(root)
    if settings.model_signing_key is not None:
        key = settings.model_signing_key.get_secret_value().strip()
        if len(key) < MIN_KEY_CHARS:
            raise ModelError(f"TRIAGE_MODEL_SIGNING_KEY must be at least {MIN_KEY_CHARS} characters long")
        return key.encode("utf-8")
    path = Path(settings.model_signing_key_file) if settings.model_signing_key_file else root.parent / KEY_FILE_NAME
    if _key_inside(path, root):
        raise ModelError(f"the model signing key file {path} lies inside the model store {root}; keep it outside")
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it meanwhile
        else:
            with os.fdopen(fd, "w", encoding="ascii") as f:
                f.write(secrets.token_hex(32) + "\n")
            log.warning("created a new model signing key in %s; models signed with another key will be refused", path)
    try:
        key = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ModelError(f"cannot read the model signing key file {path} ({exc})") from None
    if len(key) < MIN_KEY_CHARS:
        raise ModelError(f"the model signing key file {path} holds fewer than {MIN_KEY_CHARS} characters")
    return key.encode("utf-8")


def new_version_id() -> str:
    """Sortable by creation time, unique across concurrent writers: v20260101-120000-3fa2c1."""
    return datetime.now(timezone.utc).strftime("v%Y%m%d-%H%M%S-") + secrets.token_hex(3)


class ModelStore:
    """Model versions under ``root`` (by default ``Settings.effective_model_dir``)."""

    def __init__(self, root: Path | str, signing_key: bytes | str | None = None):
        """``signing_key``: the HMAC key; default :func:`signing_key` (settings or key file), read when first needed."""
        self.root = Path(root)
        if isinstance(signing_key, str):
            signing_key = signing_key.encode("utf-8")
        if signing_key is not None and len(signing_key) < MIN_KEY_CHARS:
            raise ModelError(f"a model signing key must be at least {MIN_KEY_CHARS} characters long")
        self._key = signing_key

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = signing_key(self.root)
        return self._key

    def _write_signed(self, folder: Path, manifest: dict[str, Any], atomic: bool) -> None:
        """Write the manifest and its signature (over exactly what a reader will parse)."""
        text = json.dumps(manifest, ensure_ascii=False, indent=1, default=str)
        signature = sign_manifest(json.loads(text), self.key) + "\n"
        if atomic:
            _atomic_write_text(folder / MANIFEST, text)
            _atomic_write_text(folder / SIGNATURE, signature)
        else:
            (folder / MANIFEST).write_text(text, encoding="utf-8")
            (folder / SIGNATURE).write_text(signature, encoding="utf-8")

    # ------------------------------------------------------------------ writing

    def save(self, backend: ClassifierBackend, manifest_extra: dict[str, Any] | None = None) -> str:
        """Write ``backend`` as a new version (status ``candidate``) and return its id."""
        self.root.mkdir(parents=True, exist_ok=True)
        extra = dict(manifest_extra or {})
        clash = _PROTECTED_FIELDS & set(extra)
        if clash:
            raise ModelError(f"manifest fields {', '.join(sorted(clash))} are written by the store itself")
        version = new_version_id()
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=self.root))
        try:
            (tmp / BACKEND_DIR).mkdir()
            backend.save(tmp / BACKEND_DIR)
            manifest = {
                "format": STORE_FORMAT,
                "version": version,
                "backend": backend.name,
                "created": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
                "status": "candidate",
                "data_hash": None,
                "metrics": {},
                **extra,
                "files": _hash_tree(tmp / BACKEND_DIR),
            }
            self._write_signed(tmp, manifest, atomic=False)
            os.replace(tmp, self.root / version)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return version

    def set_current(self, version: str) -> None:
        """Point CURRENT at ``version`` after checking it loads cleanly (signature, files and hashes)."""
        self.verify(version)
        _atomic_write_text(self.root / CURRENT, version + "\n")

    def update_manifest(self, version: str, **fields: Any) -> dict[str, Any]:
        """Change manifest fields (status, metrics, notes...); identity and file hashes stay."""
        clash = _PROTECTED_FIELDS & set(fields)
        if clash:
            raise ModelError(f"manifest fields {', '.join(sorted(clash))} cannot be changed")
        manifest = self.verify_signature(version)
        manifest.update(fields)
        self._write_signed(self._folder(version), manifest, atomic=True)
        return manifest

    def sign(self, version: str) -> dict[str, Any]:
        """Sign ``version`` with this store's key after checking its files against its hashes.

        For a model that predates signing or was signed with a key since replaced: the
        operator vouches for it (``triage models sign``). A tampered one still fails the hashes.
        """
        manifest = self.read_manifest(version)
        self._check_files(version, manifest)
        self._write_signed(self._folder(version), manifest, atomic=True)
        return manifest

    # ------------------------------------------------------------------ reading

    def current_version(self) -> str | None:
        try:
            version = (self.root / CURRENT).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return version or None

    def _folder(self, version: str) -> Path:
        if not version or "/" in version or "\\" in version or version.startswith("."):
            raise InvalidInput(f"{version!r} is not a model version id", field="version")
        folder = self.root / version
        if not folder.is_dir():
            raise NotFound(f"model version {version} does not exist in {self.root}")
        return folder

    def read_manifest(self, version: str) -> dict[str, Any]:
        """The manifest of ``version``; ModelError if the folder was not written by this store."""
        folder = self._folder(version)
        path = folder / MANIFEST
        if not path.is_file():
            raise ModelError(f"{folder} has no {MANIFEST}: it was not written by the model store")
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path} is not valid JSON ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != STORE_FORMAT:
            found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
            raise ModelError(f"{path} has format {found!r}, not {STORE_FORMAT!r}: a foreign manifest")
        if manifest.get("version") != version:
            raise ModelError(f"{path} describes version {manifest.get('version')!r} but sits in folder {version!r}")
        if not isinstance(manifest.get("files"), dict) or not manifest["files"]:
            raise ModelError(f"{path} lists no files; the store always records their hashes")
        return manifest

    def verify_signature(self, version: str) -> dict[str, Any]:
        """The manifest of ``version`` if its signature is valid for this store's key."""
        manifest = self.read_manifest(version)
        path = self._folder(version) / SIGNATURE
        try:
            found = path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise ModelError(
                f"model version {version} refused: it is not signed (no {SIGNATURE}); if you trust it, "
                f"sign it with `triage models sign {version}`, or train a new model"
            ) from None
        except OSError as exc:
            raise ModelError(f"model version {version} refused: cannot read {path} ({exc})") from None
        if not found.startswith(f"{SIGNATURE_SCHEME}:"):
            raise ModelError(f"model version {version} refused: {path} is not a {SIGNATURE_SCHEME} signature")
        if not hmac.compare_digest(found, sign_manifest(manifest, self.key)):
            raise ModelError(
                f"model version {version} refused: wrong signature (the manifest was changed after signing, "
                f"or it was signed with another key than this installation's)"
            )
        return manifest

    def verify(self, version: str) -> dict[str, Any]:
        """Check the signature of ``version`` and that its files are exactly those the manifest hashed."""
        manifest = self.verify_signature(version)
        self._check_files(version, manifest)
        return manifest

    def _check_files(self, version: str, manifest: dict[str, Any]) -> None:
        backend_dir = self._folder(version) / BACKEND_DIR
        found = _hash_tree(backend_dir) if backend_dir.is_dir() else {}
        expected: dict[str, str] = manifest["files"]
        missing = sorted(set(expected) - set(found))
        added = sorted(set(found) - set(expected))
        changed = sorted(f for f in set(expected) & set(found) if expected[f] != found[f])
        problems = []
        if missing:
            problems.append(f"missing files: {', '.join(missing)}")
        if added:
            problems.append(f"files the store did not write: {', '.join(added)}")
        if changed:
            problems.append(f"hash mismatch (changed after saving): {', '.join(changed)}")
        if problems:
            raise ModelError(f"model version {version} refused: " + "; ".join(problems))

    def load(self, version: str | None = None) -> tuple[ClassifierBackend, dict[str, Any]]:
        """The backend and manifest of ``version`` (default: current), verified first."""
        version = version or self.current_version()
        if version is None:
            raise ModelError(f"no current model in {self.root}; train one with `triage train`")
        manifest = self.verify(version)
        backend_cls = get_backend_class(manifest["backend"])
        backend = backend_cls.load(self._folder(version) / BACKEND_DIR)
        return backend, manifest

    def load_predictor(self, version: str | None = None) -> tuple[Any, dict[str, Any]]:
        """Like :meth:`load`, for prediction only: the backend's predict-only twin where it has
        one that reproduces this model (no scikit-learn import at all), else the backend."""
        from models.base import get_predictor_class
        from models.sklearn_predictor import PredictorUnsupported

        version = version or self.current_version()
        if version is None:
            raise ModelError(f"no current model in {self.root}; train one with `triage train`")
        manifest = self.verify(version)
        predictor_cls = get_predictor_class(manifest["backend"])
        if predictor_cls is not None:
            try:
                return predictor_cls.load(self._folder(version) / BACKEND_DIR), manifest
            except PredictorUnsupported:
                pass
        backend = get_backend_class(manifest["backend"]).load(self._folder(version) / BACKEND_DIR)
        return backend, manifest

    def list_versions(self) -> list[dict[str, Any]]:
        """Manifests (without file hashes) of every version, oldest first, with a ``current`` flag.

        Folders the store did not write are listed with ``status: "foreign"`` and the reason,
        so an operator sees them instead of wondering why they are ignored.
        """
        if not self.root.is_dir():
            return []
        current = self.current_version()
        out = []
        for folder in sorted(self.root.iterdir()):
            if not folder.is_dir() or folder.name.startswith("."):
                continue
            try:
                manifest = self.read_manifest(folder.name)
            except ModelError as exc:
                out.append({"version": folder.name, "status": "foreign", "error": str(exc), "current": False})
                continue
            entry = {k: v for k, v in manifest.items() if k != "files"}
            entry["current"] = folder.name == current
            out.append(entry)
        out.sort(key=lambda m: (str(m.get("created", "")), m["version"]))
        return out


def open_model_dir(path: Path | str) -> tuple[ModelStore, str | None]:
    """A ``--model`` argument: either a store root (its current version) or one version folder."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return ModelStore(path.parent), path.name
    if not path.is_dir():
        raise ModelError(f"model folder {path} does not exist")
    return ModelStore(path), None

