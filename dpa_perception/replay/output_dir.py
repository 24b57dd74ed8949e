"""The replay's output folder: written beside ``--out`` in a temp folder and swapped in at the end.

``--out`` therefore always holds either a complete run (summary.json says how it ended) or what
was there before; a run killed with SIGKILL leaves only a hidden ``.OUT.replay-PID-*`` folder,
which the next replay into the same ``--out`` removes (when its process is gone). An existing
``--out`` is refused unless it is empty, or ``force`` is given and it holds only dpa-replay outputs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from dpa_perception.core.atomic_dir import leftovers, make_hidden, publish
from dpa_perception.core.errors import ConfigError

OUTPUT_NAMES = frozenset({"summary.json", "frames.jsonl", "report.png", "detections", "tracks.jsonl", "birdseye.png"})
KINDS = ("replay", "replay-old")  # the run being written, and the previous run while it is replaced


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


def clean_leftovers(out: Path) -> list[Path]:
    """Remove temp folders of killed replays into ``out`` (their process no longer exists)."""
    removed = [p for _, p in leftovers(out.absolute(), KINDS)]
    for p in removed:
        shutil.rmtree(p, ignore_errors=True)
    return removed


@contextlib.contextmanager
def staged(out: Path, force: bool = False) -> Iterator[Path]:
    """A temp folder beside ``out``: swapped in when the block ends normally, removed otherwise."""
    check_out(out, force)
    clean_leftovers(out)
    out = out.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = make_hidden(out, "replay")
    try:
        yield tmp
        publish(tmp, out, aside_kind="replay-old")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
