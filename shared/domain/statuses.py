"""A fit's statuses: queued and running while it is active, then one of the four ends."""

from __future__ import annotations

QUEUED, RUNNING = "queued", "running"
SUCCEEDED, DIVERGED, FAILED, CANCELLED = "succeeded", "diverged", "failed", "cancelled"
ACTIVE = (QUEUED, RUNNING)
TERMINAL = (SUCCEEDED, DIVERGED, FAILED, CANCELLED)
STATUSES = ACTIVE + TERMINAL
