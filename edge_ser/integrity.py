"""The model's files against the manifest: sha256 checks, and loading the very file that was checked.

Why not hash a path and then open the path: that leaves a window in which the file can be replaced (an
over-the-air update landing, or someone who can write the model directory), and the replacement would run
unchecked. `checked_model` opens the file once, hashes what it reads through that descriptor, and hands
onnxruntime the same open file (/proc/self/fd/N: the same inode, whatever happens to the name); a write to it
while the session is built changes its ctime, and the load is refused. Handing onnxruntime the checked bytes
instead (where there is no /proc) is exact too, but measured dearer at base size (fp32: more load time and
nearly twice the peak memory; the descriptor costs what hashing a path and opening it did), in
benchmarks/bench_checked_load.py -> results/checked_load.json, so the bytes are only the fallback.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ManifestError

if TYPE_CHECKING:
    from .manifest import FileRef, Manifest

_BLOCK = 1 << 20
PROC_FD = Path("/proc/self/fd")  # where an open descriptor has a path onnxruntime can open (Linux)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _refuse_size(path: Path, size: int, ref: FileRef) -> None:
    if size != ref.bytes:
        raise ManifestError(f"{path}: {size} bytes, the manifest says {ref.bytes}; refusing a modified model file")


def _refuse_digest(path: Path, digest: str, ref: FileRef) -> None:
    if digest != ref.sha256:
        raise ManifestError(f"{path}: sha256 does not match the manifest; refusing a modified model file")


@contextmanager
def checked_model(directory: str | Path, ref: FileRef) -> Iterator[str | bytes]:
    """What onnxruntime should open for `ref`, checked against the manifest's size and sha256: the path of an open
    descriptor whose content was hashed (Linux), else the checked bytes. ManifestError (one line naming the file)
    when it is missing, of another size, modified, or written to before the caller's load finished."""
    path = Path(directory) / ref.file
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise ManifestError(f"{directory}: missing file {ref.file}") from None
    except OSError as err:
        raise ManifestError(f"{path}: cannot read the model file ({err.strerror or err})") from None
    try:
        before = os.fstat(fd)
        _refuse_size(path, before.st_size, ref)
        by_fd = (PROC_FD / str(fd)).exists()
        digest, blocks, read = hashlib.sha256(), [], 0
        with os.fdopen(fd, "rb", closefd=False) as f:
            while block := f.read(min(_BLOCK, ref.bytes + 1 - read)):  # never past the manifest's size + 1
                digest.update(block)
                read += len(block)
                if not by_fd:
                    blocks.append(block)
        _refuse_size(path, read, ref)  # grown or cut while it was hashed
        _refuse_digest(path, digest.hexdigest(), ref)
        yield str(PROC_FD / str(fd)) if by_fd else b"".join(blocks)
        after = os.fstat(fd)
        if by_fd and (after.st_size, after.st_mtime_ns, after.st_ctime_ns) != (
                before.st_size, before.st_mtime_ns, before.st_ctime_ns):
            raise ManifestError(f"{path}: changed while it was being loaded; refusing it (load it again once the "
                                "update is complete)")
    finally:
        os.close(fd)


def check_file(directory: str | Path, ref: FileRef) -> str | None:
    """None when `ref`'s file is there with the manifest's size and sha256, else why not (hashed in blocks: a
    whole-model check holds one block in memory, not the model)."""
    path = Path(directory) / ref.file
    if not path.is_file():
        return "missing"
    size = path.stat().st_size
    if size != ref.bytes:
        return f"{size} bytes, the manifest says {ref.bytes}"
    if sha256_of(path) != ref.sha256:
        return "sha256 does not match the manifest (modified or corrupt)"
    return None


def model_files(manifest: Manifest, precision: str | None = None) -> list[FileRef]:
    """Every file the manifest lists (precision None), or the files a run at `precision` opens, each once."""
    refs: dict[str, FileRef] = {}
    for segment in manifest.chain + [e.head for e in manifest.exits]:
        for ref in segment.files.values() if precision is None else [segment.file_for(precision)]:
            refs.setdefault(ref.file, ref)
    return list(refs.values())


def verify_files(directory: str | Path, manifest: Manifest, precision: str | None = None
                 ) -> list[tuple[str, str | None]]:
    """(file, None) for each file that matches the manifest, (file, why not) for each that does not: every file
    the manifest lists, or those a run at `precision` uses. A device can check its storage at boot instead of on
    a file's first use; a signed model is checked this way before anything is loaded."""
    return [(ref.file, check_file(directory, ref)) for ref in model_files(manifest, precision)]


def mismatched_files(directory: str | Path, manifest: Manifest, precision: str | None = None) -> list[str]:
    """"file (why)" for each file of verify_files that is missing or does not match the manifest."""
    return [f"{file} ({why})" for file, why in verify_files(directory, manifest, precision) if why]
