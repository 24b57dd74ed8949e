"""Test doubles shared by the governor and pipeline tests."""

from __future__ import annotations

MS = 1_000_000  # nanoseconds per millisecond


class FakeClock:
    """Nanoseconds that only move when told to (by the test or by a fake engine)."""

    def __init__(self, start_ns: int = 1_000_000 * MS):
        self.t = start_ns

    def __call__(self) -> int:
        return self.t

    def advance_ms(self, ms: float) -> None:
        self.t += round(ms * MS)
