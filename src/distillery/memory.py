"""The process's resident memory, as ``/health`` and a training job's events report it.

On Linux both figures come from ``/proc/self/status``: ``VmRSS`` (resident now) and ``VmHWM``
(the peak, "high water mark", since the process started). Elsewhere the peak comes from
``getrusage`` and the current size is unknown (``None``).
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

_STATUS = Path("/proc/self/status")


def _status_mb(field: str) -> float | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return round(int(line.split()[1]) / 1024, 1)  # the kernel writes kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def resident_memory() -> dict[str, float | None]:
    """``{"rss_mb": now, "peak_rss_mb": the peak so far}`` of this process, in MiB."""
    peak = _status_mb("VmHWM")
    if peak is None:
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = round(maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)
    return {"rss_mb": _status_mb("VmRSS"), "peak_rss_mb": peak}
