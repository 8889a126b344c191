"""What every benchmark prints beside its figures: the CPU flags that decide which kernels run."""

from __future__ import annotations

import platform

from simlabel.encoders.base import cpu_flags as _flags


def cpu_flags() -> str:
    """The SIMD/matrix flags of this CPU that matter here (avx2 ... amx), space-separated
    (:func:`simlabel.encoders.base.cpu_flags`; the processor's name where they cannot be read)."""
    return _flags() or platform.processor()
