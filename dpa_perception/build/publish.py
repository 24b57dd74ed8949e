"""Publishing an engine folder atomically, and what a killed build leaves behind.

A build writes into a hidden folder beside ``--out`` (``.NAME.tmp-PID-XXXXXXXX``). At the end its
files are synced and it is swapped in by renames: the old folder renamed aside
(``.NAME.old-PID-XXXXXXXX``), the new one renamed in, the old one removed. Any failure before the
second rename leaves the old folder where it was (put back if it was already aside); a process
killed at any point leaves only hidden folders carrying its process id, which the next
``dpa-build`` for the same ``--out`` removes (or, when the kill fell between the two renames,
renames back: the old folder is complete). Folders of a build still running are left alone.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from dpa_perception.core.atomic_dir import hidden_prefix, leftovers, publish, sync_tree
from dpa_perception.core.errors import ConfigError
from dpa_perception.core.manifest import MANIFEST_NAME

Log = Callable[[str], None]
KINDS = ("tmp", "old")  # the build's temp folder, and the old engine folder while it is replaced

__all__ = ["KINDS", "check_out_dir", "clean_stale", "hidden_prefix", "publish", "stale_folders", "sync_tree"]


def stale_folders(out_dir: Path) -> list[tuple[str, Path]]:
    """(kind, path) of the hidden folders beside ``out_dir`` left by builds no longer running."""
    return leftovers(out_dir, KINDS)


def clean_stale(out_dir: Path, log: Log) -> None:
    """Remove what killed builds left beside ``out_dir``; an old folder renamed aside by a build
    killed before the new one was renamed in goes back to ``out_dir`` when that is missing."""
    for kind, path in stale_folders(out_dir):
        if kind == "old" and not os.path.lexists(out_dir) and (path / MANIFEST_NAME).is_file():
            os.rename(path, out_dir)
            log(f"dpa-build: restored {out_dir} from {path.name} (a build was killed while replacing it)")
            continue
        shutil.rmtree(path, ignore_errors=True)
        log(f"dpa-build: removed {path} (left by a killed build)")


def _first_existing(path: Path) -> Path:
    for p in (path, *path.parents):
        if os.path.lexists(p):
            return p
    return Path(path.anchor or ".")


def check_out_dir(out_dir: Path, force: bool, log: Log) -> Path:
    """``out_dir`` made absolute, or :class:`ConfigError` (one line) when the build could not publish
    there: a symbolic link, a file, a folder that is not an engine folder (``--force`` replaces only
    those), an existing folder without ``--force``, or a parent that is a file or not writable.
    Cleans what killed builds left beside it first."""
    out_dir = Path(os.path.abspath(out_dir))
    if not out_dir.name or out_dir.name in (".", ".."):
        raise ConfigError(f"--out {out_dir} must name a folder to create")
    if out_dir.is_symlink():
        raise ConfigError(f"--out {out_dir} is a symbolic link; give the engine folder itself")
    if os.path.lexists(out_dir) and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir} exists and is not a folder; --force replaces only an engine folder")
    anchor = _first_existing(out_dir.parent)
    if not anchor.is_dir():
        raise ConfigError(f"--out {out_dir}: {anchor} is not a folder")
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {out_dir}: cannot write in {anchor}")
    clean_stale(out_dir, log)
    if out_dir.exists() and not force:
        raise ConfigError(f"{out_dir} exists; pass --force to replace it")
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / MANIFEST_NAME).is_file():
        raise ConfigError(f"--out {out_dir} is not an engine folder (no {MANIFEST_NAME}); --force replaces "
                          f"only a folder written by dpa-build")  # fmt: skip
    return out_dir
