"""The model store in the database (``TRIAGE_MODEL_STORE=db``): every host of one
installation reads the same versions and the same current pointer.

Each version's files (``manifest.json``, ``manifest.sig``, ``backend/...``) are rows of
``model_files`` (bytes); the current version is the one row of ``model_pointer``. A host
copies a version into its local cache folder (``<var_dir>/model-cache``, atomically) and
then checks it exactly as the folder store does: the manifest's signature with this
installation's key and every file against the hashes the manifest recorded. A row changed
in the database therefore loads nowhere. Every host needs the same signing key
(``TRIAGE_MODEL_SIGNING_KEY``). The manifest and its signature are read afresh on every
use (status changes made elsewhere); the backend's files are fetched once per host.

SQL only through SQLAlchemy Core on its own engine: the ``models`` package does not import
``triage.store`` (the tables are declared there and created by its migrations).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from models.store import BACKEND_DIR, MANIFEST, SIGNATURE, STORE_FORMAT, ModelStore
from triage.errors import InvalidInput, ModelError, NotFound

_ENGINES: dict[str, Any] = {}


def text(sql: str):
    """SQLAlchemy's ``text``, imported on first use: a process on the folder store (``triage
    predict``) imports this module for :func:`open_store` and should not pay for SQLAlchemy."""
    from sqlalchemy import text as sql_text

    return sql_text(sql)


def _engine(url: str):
    """One small engine per URL and process (the store is opened by several components)."""
    engine = _ENGINES.get(url)
    if engine is None:
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            engine = create_engine(parsed, connect_args={"timeout": 30, "check_same_thread": False})
        else:
            engine = create_engine(parsed, pool_size=2, max_overflow=4, pool_pre_ping=True)
        _ENGINES[url] = engine
    return engine


class DbModelStore(ModelStore):
    """A :class:`ModelStore` whose versions and current pointer live in the database at ``url``;
    ``cache_dir`` is this host's verified local copy."""

    def __init__(self, url: str, cache_dir: Path | str, signing_key: bytes | str | None = None):
        super().__init__(cache_dir, signing_key)
        self.url = url
        self.engine = _engine(url)

    def __repr__(self) -> str:
        from sqlalchemy.engine import make_url

        return f"DbModelStore({make_url(self.url).render_as_string(hide_password=True)})"

    # ------------------------------------------------------------------ rows

    def _push(self, version: str, paths: list[str] | None = None) -> None:
        """Store the cache folder's files of ``version`` (or only ``paths``) as rows, in one transaction."""
        folder = self.root / version
        if paths is None:
            paths = [p.relative_to(folder).as_posix() for p in sorted(folder.rglob("*")) if p.is_file()]
        rows = [{"v": version, "p": p, "c": (folder / p).read_bytes(), "t": datetime.now(timezone.utc)} for p in paths]
        with self.engine.begin() as conn:
            for row in rows:
                conn.execute(text("DELETE FROM model_files WHERE version = :v AND path = :p"), row)
            conn.execute(text("INSERT INTO model_files (version, path, content, stored_at) VALUES (:v, :p, :c, :t)"), rows)

    def _pull(self, version: str) -> Path:
        """The cache folder of ``version``, refreshed from the rows: manifest and signature
        every time, the backend's files when this host has none yet (written aside, then renamed)."""
        folder = self.root / version
        have_backend = (folder / BACKEND_DIR).is_dir()
        query = "SELECT path, content FROM model_files WHERE version = :v"
        if have_backend:
            query += f" AND path IN ('{MANIFEST}', '{SIGNATURE}')"
        with self.engine.connect() as conn:
            rows = conn.execute(text(query), {"v": version}).all()
        if not rows:
            raise NotFound(f"model version {version} does not exist in the database model store")
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".pull-{version}-", dir=self.root))
        try:
            for path, content in rows:
                target = (tmp / path).resolve()
                if not target.is_relative_to(tmp.resolve()):
                    raise ModelError(f"model version {version} refused: a stored file path {path!r} leaves its folder")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(bytes(content))
            if have_backend:
                for name in (MANIFEST, SIGNATURE):
                    if (tmp / name).exists():
                        os.replace(tmp / name, folder / name)
                    else:
                        (folder / name).unlink(missing_ok=True)
            else:
                if folder.exists():  # a partial copy (a crash mid-pull): replace it
                    shutil.rmtree(folder, ignore_errors=True)
                try:
                    os.replace(tmp, folder)
                except OSError:
                    pass  # another thread or process of this host pulled it meanwhile
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return folder

    # ------------------------------------------------------------------ the store's interface

    def _folder(self, version: str) -> Path:
        if not version or "/" in version or "\\" in version or version.startswith(".") or len(version) > 64:
            raise InvalidInput(f"{version!r} is not a model version id", field="version")
        return self._pull(version)

    def save(self, backend, manifest_extra: dict[str, Any] | None = None) -> str:
        version = super().save(backend, manifest_extra)
        self._push(version)
        return version

    def update_manifest(self, version: str, **fields: Any) -> dict[str, Any]:
        manifest = super().update_manifest(version, **fields)
        self._push(version, [MANIFEST, SIGNATURE])
        return manifest

    def sign(self, version: str) -> dict[str, Any]:
        manifest = super().sign(version)
        self._push(version, [MANIFEST, SIGNATURE])
        return manifest

    def set_current(self, version: str) -> None:
        """Point the database's current row at ``version`` once it verifies on this host."""
        self.verify(version)
        row = {"v": version, "t": datetime.now(timezone.utc)}
        with self.engine.begin() as conn:
            if conn.execute(text("UPDATE model_pointer SET version = :v, changed_at = :t WHERE id = 1"), row).rowcount == 0:
                conn.execute(text("INSERT INTO model_pointer (id, version, changed_at) VALUES (1, :v, :t)"), row)

    def current_version(self) -> str | None:
        """One indexed single-row read: what every process checks to follow promotions."""
        with self.engine.connect() as conn:
            return conn.execute(text("SELECT version FROM model_pointer WHERE id = 1")).scalar()

    def list_versions(self) -> list[dict[str, Any]]:
        current = self.current_version()
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT version, content FROM model_files WHERE path = :p"), {"p": MANIFEST}).all()
        out = []
        for version, content in rows:
            try:
                manifest = json.loads(bytes(content).decode("utf-8"))
                if not isinstance(manifest, dict) or manifest.get("format") != STORE_FORMAT:
                    raise ValueError(f"format {manifest.get('format') if isinstance(manifest, dict) else None!r}")
            except ValueError as exc:
                out.append({"version": version, "status": "foreign", "error": f"manifest: {exc}", "current": False})
                continue
            entry = {k: v for k, v in manifest.items() if k != "files"}
            entry["current"] = version == current
            out.append(entry)
        out.sort(key=lambda m: (str(m.get("created", "")), m["version"]))
        return out


def open_store(settings=None) -> ModelStore:
    """The installation's model store: the folder ``TRIAGE_MODEL_DIR`` (the default, one
    machine) or, with ``TRIAGE_MODEL_STORE=db``, the database every host reads
    (:class:`models.db_store.DbModelStore`, cached per host under ``<var_dir>/model-cache``)."""
    if settings is None:
        from triage.settings import get_settings

        settings = get_settings()
    if settings.model_store == "db":
        return DbModelStore(settings.effective_database_url, settings.var_dir / "model-cache")
    return ModelStore(settings.effective_model_dir)
