"""What every benchmark prints beside its figures: the CPU flags that decide which kernels run."""

from __future__ import annotations

import platform

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "amx_tile")


def cpu_flags() -> str:
    """The SIMD/matrix flags of this CPU that matter here (avx2 ... amx), space-separated."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = next(line for line in f if line.startswith("flags")).split(":")[1].split()
    except (OSError, StopIteration):
        return platform.processor()
    return " ".join(f for f in flags if f in FLAGS)
