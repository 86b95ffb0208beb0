"""The versioned model store: one folder per trained model, a manifest, a current pointer.

Layout under ``root``::

    CURRENT                      the current version id (replaced atomically)
    <version>/manifest.json      who wrote it, backend, data hash, metrics, status, file hashes
    <version>/backend/...        the backend's own files

Why so strict: a model file is code-adjacent (it decides urgency and routing), so the
store loads only folders it wrote itself, whose files still hash to what the manifest
recorded, and says exactly why it refuses anything else. Writes go to a temporary
folder that is renamed into place, so a crash never leaves a half-written version.
"""

from __future__ import annotations

import hashlib
import json
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


def new_version_id() -> str:
    """Sortable by creation time, unique across concurrent writers: v20260101-120000-3fa2c1."""
    return datetime.now(timezone.utc).strftime("v%Y%m%d-%H%M%S-") + secrets.token_hex(3)


class ModelStore:
    """Model versions under ``root`` (by default ``Settings.effective_model_dir``)."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

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
            (tmp / MANIFEST).write_text(json.dumps(manifest, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
            os.replace(tmp, self.root / version)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return version

    def set_current(self, version: str) -> None:
        """Point CURRENT at ``version`` after checking it loads cleanly (files and hashes)."""
        self.verify(version)
        _atomic_write_text(self.root / CURRENT, version + "\n")

    def update_manifest(self, version: str, **fields: Any) -> dict[str, Any]:
        """Change manifest fields (status, metrics, notes...); identity and file hashes stay."""
        clash = _PROTECTED_FIELDS & set(fields)
        if clash:
            raise ModelError(f"manifest fields {', '.join(sorted(clash))} cannot be changed")
        manifest = self.read_manifest(version)
        manifest.update(fields)
        _atomic_write_text(self._folder(version) / MANIFEST, json.dumps(manifest, ensure_ascii=False, indent=1, default=str))
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

    def verify(self, version: str) -> dict[str, Any]:
        """Check that the files of ``version`` are exactly those the manifest hashed."""
        manifest = self.read_manifest(version)
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
        return manifest

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
