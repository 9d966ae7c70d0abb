"""What the machine is: fields of the CPU's description, for run provenance and CPU-specific fast paths."""

from __future__ import annotations


def cpuinfo_field(key: str, path: str = "/proc/cpuinfo") -> str | None:
    """The first value of ``key`` (e.g. ``model name``, ``vendor_id``) in ``/proc/cpuinfo``; None where there
    is no such file (not Linux) or no such line."""
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            for line in f:
                name, sep, value = line.partition(":")
                if sep and name.strip() == key:
                    return value.strip()
    except OSError:
        pass
    return None
