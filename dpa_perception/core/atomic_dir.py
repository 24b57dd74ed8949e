"""Output folders published atomically: written hidden beside their place, swapped in at the end.

A writer (dpa-build, dpa-replay) creates ``.NAME.KIND-PID-XXXX`` beside ``NAME``, fills it, and
:func:`publish` swaps it in: synced to disk, the old folder renamed aside, the new one renamed in,
the old one removed. A failure before the new folder is in place puts the old one back; a process
killed at any point leaves only hidden folders carrying its process id, which :func:`leftovers`
finds for the next writer to remove (or restore).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path


def hidden_prefix(out: Path, kind: str) -> str:
    """The name prefix of this process's hidden ``kind`` folders beside ``out``."""
    return f".{out.name}.{kind}-{os.getpid()}-"


def make_hidden(out: Path, kind: str) -> Path:
    """A new hidden folder beside ``out`` with the permissions a plain mkdir would give."""
    tmp = Path(tempfile.mkdtemp(prefix=hidden_prefix(out, kind), dir=out.parent))
    mask = os.umask(0o022)
    os.umask(mask)
    tmp.chmod(0o777 & ~mask)  # mkdtemp's 0700 would make the published folder private
    return tmp


def pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # another user's process (or a pid this system cannot hold): leave it alone
    return True


def leftovers(out: Path, kinds: Sequence[str]) -> list[tuple[str, Path]]:
    """(kind, path) of the hidden ``kinds`` folders beside ``out`` whose process no longer runs."""
    pattern = re.compile(rf"^\.{re.escape(out.name)}\.({'|'.join(map(re.escape, kinds))})-(\d+)-[A-Za-z0-9_]+$")
    parent = out.parent
    if not parent.is_dir():
        return []
    found = []
    for p in sorted(parent.iterdir()):
        m = pattern.match(p.name)
        if m and not p.is_symlink() and p.is_dir() and not pid_alive(int(m.group(2))):
            found.append((m.group(1), p))
    return found


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sync_tree(folder: Path) -> None:
    """Flush every file of ``folder`` and the folder itself to disk (before it is renamed in)."""
    for p in folder.rglob("*"):
        if p.is_file() and not p.is_symlink():
            _fsync(p)
    _fsync(folder)


def publish(tmp: Path, out: Path, aside_kind: str = "old") -> None:
    """Swap the complete folder ``tmp`` in as ``out``: synced, old folder renamed aside (a hidden
    ``aside_kind`` folder), ``tmp`` renamed in, old folder removed. On any failure before ``tmp`` is
    in place the old folder is back where it was and the exception propagates (the caller removes
    ``tmp``)."""
    sync_tree(tmp)
    aside: Path | None = None
    if os.path.lexists(out):
        aside = out.parent / f"{hidden_prefix(out, aside_kind)}{secrets.token_hex(4)}"
        os.rename(out, aside)
    try:
        os.rename(tmp, out)
    except BaseException:
        if aside is not None:
            os.rename(aside, out)
        raise
    try:
        _fsync(out.parent)
    except OSError:
        pass  # the rename is done; only its durability across a power cut is not guaranteed
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)


def write_file_atomically(path: Path, data: bytes) -> None:
    """``path`` replaced by ``data`` in one rename (a synced temp file beside it): readers see the old
    file or the new one, never half of it; the temp file is removed on any failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
