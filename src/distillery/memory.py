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


def _status_mb() -> dict[str, float]:
    """The ``Vm*`` sizes of ``/proc/self/status`` in MiB (empty where there is no such file)."""
    sizes: dict[str, float] = {}
    try:
        for line in _STATUS.read_text().splitlines():
            name, _, value = line.partition(":")
            if name.startswith("Vm") and value.strip().endswith("kB"):
                sizes[name] = round(int(value.split()[0]) / 1024, 1)  # the kernel writes kB
    except (OSError, ValueError):
        return {}
    return sizes


def resident_memory() -> dict[str, float | None]:
    """``{"rss_mb": now, "peak_rss_mb": the peak so far}`` of this process, in MiB."""
    sizes = _status_mb()
    peak = sizes.get("VmHWM")
    if peak is None:
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak = round(maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)
    return {"rss_mb": sizes.get("VmRSS"), "peak_rss_mb": peak}
