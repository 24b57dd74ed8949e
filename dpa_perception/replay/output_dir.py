"""The replay's output folder: written beside ``--out`` in a temp folder and swapped in at the end.

``--out`` therefore always holds either a complete run (summary.json says how it ended) or what
was there before; a run killed with SIGKILL leaves only a hidden ``.OUT.replay-PID-*`` folder,
which the next replay into the same ``--out`` removes (when its process is gone). An existing
``--out`` is refused unless it is empty, or ``force`` is given and it holds only dpa-replay outputs.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from dpa_perception.core.errors import ConfigError

OUTPUT_NAMES = frozenset({"summary.json", "frames.jsonl", "report.png", "detections"})
_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def check_out(out: Path, force: bool) -> None:
    """Refuse an ``out`` that cannot or must not be replaced (one-line :class:`ConfigError`)."""
    for parent in out.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"--out {out}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ConfigError(f"--out {out}: cannot write in {parent}")
            break
    if not out.exists() and not out.is_symlink():
        return
    if out.is_symlink() or not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    entries = {p.name for p in out.iterdir()}
    if not entries:
        return  # an empty folder: nothing to lose
    if not force:
        raise ConfigError(f"--out {out} exists; pass --force to replace it")
    if not entries <= OUTPUT_NAMES:
        raise ConfigError(f"--out {out} holds files dpa-replay did not write ({', '.join(sorted(entries - OUTPUT_NAMES))});"
                          " --force replaces only a dpa-replay output folder")


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(out: Path) -> list[Path]:
    """Remove temp folders of killed replays into ``out`` (their process no longer exists)."""
    removed: list[Path] = []
    parent = out.absolute().parent
    if not parent.is_dir():
        return removed
    for p in parent.glob(f".{out.name}.replay-*"):
        pid = p.name[len(f".{out.name}.replay-"):].split("-", 1)[0]
        if pid.isdigit() and not _pid_alive(int(pid)) and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where not available."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn(_AT_FDCWD, os.fsencode(str(a)), _AT_FDCWD, os.fsencode(str(b)), _RENAME_EXCHANGE) == 0


def publish(tmp: Path, out: Path) -> None:
    """Put the complete folder ``tmp`` in place of ``out`` (atomic swap where the OS allows)."""
    if not out.exists():
        tmp.rename(out)
        return
    if _exchange(tmp, out):  # tmp now holds the previous run
        shutil.rmtree(tmp, ignore_errors=True)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.replay-{os.getpid()}-old-", dir=out.parent))
    old.rmdir()
    out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def staged(out: Path, force: bool = False) -> Iterator[Path]:
    """A temp folder beside ``out``: swapped in when the block ends normally, removed otherwise."""
    check_out(out, force)
    clean_leftovers(out)
    out.absolute().parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.replay-{os.getpid()}-", dir=out.absolute().parent))
    try:
        mask = os.umask(0o022)
        os.umask(mask)
        tmp.chmod(0o777 & ~mask)  # mkdtemp's 0700 would make --out private
        yield tmp
        publish(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
