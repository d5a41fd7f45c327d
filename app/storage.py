"""Where the app keeps files under ``APP_DATA_DIR``; every file is written atomically.

images/<id>/original            the upload, byte for byte
images/<id>/thumb_<size>.jpg    one JPEG per offered size
projects/<id>/input.csv         the uploaded CSV
projects/<id>/report.json       the pipeline's report
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from app.settings import get_settings

COPY_CHUNK_BYTES = 1024 * 1024


class DataDir:
    """Paths of the app's files; the API and the workers must see the same directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def image_dir(self, image_id: str) -> Path:
        return self.root / "images" / image_id

    def original(self, image_id: str) -> Path:
        return self.image_dir(image_id) / "original"

    def thumbnail(self, image_id: str, size: int) -> Path:
        return self.image_dir(image_id) / f"thumb_{size}.jpg"

    def project_dir(self, project_id: str) -> Path:
        return self.root / "projects" / project_id

    def project_input(self, project_id: str) -> Path:
        return self.project_dir(project_id) / "input.csv"

    def project_report(self, project_id: str) -> Path:
        return self.project_dir(project_id) / "report.json"


def data_dir() -> DataDir:
    return DataDir(get_settings().data_dir.resolve())


def save_stream(source: BinaryIO, destination: Path) -> int:
    """Copy ``source`` (from its start) to ``destination`` atomically; return the bytes written."""
    source.seek(0)
    written = 0
    with _atomic_file(destination) as target:
        while chunk := source.read(COPY_CHUNK_BYTES):
            target.write(chunk)
            written += len(chunk)
    return written


def save_bytes(data: bytes, destination: Path) -> None:
    with _atomic_file(destination) as target:
        target.write(data)


def remove_tree(path: Path) -> None:
    """Remove a directory and what it holds; a missing one is fine."""
    shutil.rmtree(path, ignore_errors=True)


@contextmanager
def _atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A temporary file next to ``path`` that replaces it on success and disappears on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as target:
            yield target
        os.replace(name, path)
    finally:
        Path(name).unlink(missing_ok=True)
