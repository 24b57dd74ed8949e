"""One replay timeline for any set of bags, whatever their clocks.

The replay never trusts a bag's metadata for time: a pre-pass reads the log time of every selected
image message. Then:

- bags are taken in recording order (first message; command-line order on ties);
- a bag that overlaps earlier bags in time on none of its camera topics (cameras recorded apart,
  at the same time) plays merged with them, on its own clock;
- a bag that overlaps an earlier bag on a camera topic (two recordings of one camera, e.g. two
  sim-time bags that both start at 0) is shifted to start ``join`` after it: back to back;
- any gap between successive messages longer than ``max_gap`` (bags years apart, a clock jump
  inside a bag) is collapsed to ``join``.

So the played span is at most the sum of the bags' own spans plus ``join`` per collapsed gap: the
realtime pace never sleeps for more than ``max_gap`` and /diagnostics (one message per played
second) stay bounded. Every shift and every disagreement between a bag's metadata and its messages
is reported (``Timeline.warnings``, summary.json ``timeline``).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dpa_perception.bags.reader import log_times, metadata_span, topic_types
from dpa_perception.core.errors import BagError
from dpa_perception.core.types import NS_PER_S

NS = NS_PER_S
MAX_GAP_S = 10.0  # longer gaps between successive messages are collapsed
JOIN_S = 1.0  # what a collapsed gap (or the seam between back-to-back bags) becomes
METADATA_TOLERANCE_S = 1.0


@dataclass
class BagScan:
    """What the pre-pass learnt about one bag."""

    path: Path
    topics: set[str]
    times: np.ndarray  # log times of the selected image messages (ns, sorted)
    meta_start_ns: int | None  # None: the metadata has no usable span
    meta_end_ns: int | None
    error: str = ""  # the read error that stopped the pre-pass
    shift_ns: int = 0  # added to this bag's log times to place it on the timeline

    @property
    def first_ns(self) -> int:
        return int(self.times[0])

    @property
    def last_ns(self) -> int:
        return int(self.times[-1])


@dataclass
class Timeline:
    """Maps (bag, log time) to played time; ``first_ns``..``last_ns`` is the played span."""

    scans: list[BagScan]
    starts: list[int] = field(default_factory=list)  # placed time where each collapse segment starts
    collapsed: list[int] = field(default_factory=list)  # ns removed before that segment
    gaps: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    first_ns: int = 0
    last_ns: int = 0

    @property
    def total(self) -> int:
        return sum(len(s.times) for s in self.scans)

    @property
    def errors(self) -> list[str]:
        return [s.error for s in self.scans if s.error]

    def played(self, bag: int, log_ns: int) -> int:
        t = log_ns + self.scans[bag].shift_ns
        i = bisect.bisect_right(self.starts, t) - 1
        return t - (self.collapsed[i] if i >= 0 else 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "played_span_s": round((self.last_ns - self.first_ns) / NS, 3),
            "bags": [{"bag": str(s.path), "messages": len(s.times),
                      "first_log_ns": s.first_ns if len(s.times) else None,
                      "last_log_ns": s.last_ns if len(s.times) else None,
                      "metadata_start_ns": s.meta_start_ns, "metadata_end_ns": s.meta_end_ns,
                      "shift_s": round(s.shift_ns / NS, 3), "read_error": s.error or None}
                     for s in self.scans],
            "gaps_collapsed": self.gaps,
            "warnings": self.warnings,
        }  # fmt: skip


def scan_bags(paths: Sequence[Path], topics: Sequence[str]) -> list[BagScan]:
    """The pre-pass: every selected image message's log time, per bag."""
    scans = []
    for p in paths:
        types = topic_types([p])
        mine = {t for t in types if t in topics}
        times, error = log_times(p, sorted(mine))
        start: int | None
        end: int | None
        try:
            start, end = metadata_span(p)
        except BagError:  # not needed for timing: the messages' times are
            start = end = None
        scans.append(BagScan(Path(p), mine, np.sort(times), start, end, error))
    return scans


def _metadata_warning(s: BagScan, max_gap_ns: int) -> str | None:
    if not len(s.times):
        return None
    if s.meta_start_ns is None or s.meta_end_ns is None:
        return f"{s.path}: metadata.yaml gives no usable start/end time; the replay uses the messages' own times"
    tol = int(METADATA_TOLERANCE_S * NS)
    outside = s.first_ns < s.meta_start_ns - tol or s.last_ns > s.meta_end_ns + tol
    far = s.meta_start_ns < s.first_ns - max_gap_ns or s.meta_end_ns > s.last_ns + max_gap_ns
    if not (outside or far):
        return None
    return (f"{s.path}: metadata.yaml says the recording spans {s.meta_start_ns / NS:.3f} .. {s.meta_end_ns / NS:.3f} s "
            f"but its image messages span {s.first_ns / NS:.3f} .. {s.last_ns / NS:.3f} s; the replay uses the "
            f"messages' own times")


def _place(scans: list[BagScan], join_ns: int) -> list[str]:
    """Shift each bag that overlaps an earlier-placed bag on a shared camera topic to start ``join``
    after the last of them (back to back); bags on other topics keep their times (merged)."""
    notes: list[str] = []
    order = sorted((i for i, s in enumerate(scans) if len(s.times)), key=lambda i: (scans[i].first_ns, i))
    topic_end: dict[str, int] = {}  # where the last bag placed on each topic ends
    for i in order:
        s = scans[i]
        clash = {t: topic_end[t] for t in s.topics if t in topic_end and topic_end[t] >= s.first_ns}
        if clash:
            s.shift_ns = max(clash.values()) + join_ns - s.first_ns
            notes.append(f"{s.path}: overlaps an earlier bag on {', '.join(sorted(clash))}; "
                         f"played after it (shifted by {s.shift_ns / NS:.3f} s)")
        for t in s.topics:
            topic_end[t] = max(topic_end.get(t, s.last_ns + s.shift_ns), s.last_ns + s.shift_ns)
    return notes


def _collapse(tl: Timeline, max_gap_ns: int, join_ns: int) -> None:
    owner = np.concatenate([np.full(len(s.times), i) for i, s in enumerate(tl.scans)])
    placed = np.concatenate([s.times + s.shift_ns for s in tl.scans])
    order = np.argsort(placed, kind="stable")
    placed, owner = placed[order], owner[order]
    removed = 0
    for k in np.nonzero(np.diff(placed) > max_gap_ns)[0]:
        gap = int(placed[k + 1] - placed[k])
        removed += gap - join_ns
        tl.starts.append(int(placed[k + 1]))
        tl.collapsed.append(removed)
        a, b = tl.scans[int(owner[k])].path, tl.scans[int(owner[k + 1])].path
        where = f"in {a}" if a == b else f"between {a} and {b}"
        tl.gaps.append({"after_log_ns": int(placed[k]), "gap_s": round(gap / NS, 3), "where": where})
    tl.first_ns = int(placed[0])
    tl.last_ns = int(placed[-1]) - removed


def build_timeline(paths: Sequence[Path], topics: Sequence[str], max_gap_s: float = MAX_GAP_S,
                   join_s: float = JOIN_S) -> Timeline:
    """Scan the bags and lay them on one timeline (see the module docstring)."""
    max_gap_ns, join_ns = int(max_gap_s * NS), int(join_s * NS)
    tl = Timeline(scan_bags(paths, topics))
    if tl.total == 0:
        return tl
    warnings = [w for s in tl.scans if (w := _metadata_warning(s, max_gap_ns))]
    warnings += _place(tl.scans, join_ns)
    _collapse(tl, max_gap_ns, join_ns)
    warnings += [f"a gap of {g['gap_s']:.3f} s {g['where']} was collapsed to {join_s:g} s" for g in tl.gaps]
    tl.warnings = warnings + [s.error for s in tl.scans if s.error]
    return tl
