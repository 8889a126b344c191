"""What every benchmark prints beside its figures: the CPU flags that decide which kernels run."""

from __future__ import annotations

import platform

from simlabel.encoders.base import cpu_flags as _flags
from simlabel.encoders.base import isa_cap


def cpu_flags() -> str:
    """The SIMD/matrix flags of this CPU that matter here (avx2 ... amx), space-separated
    (:func:`simlabel.encoders.base.cpu_flags`; the processor's name where they cannot be read), and the
    ``ONEDNN_MAX_CPU_ISA`` cap they were reduced by, if any."""
    cap = isa_cap()
    return (_flags() or platform.processor()) + (f" (capped: ONEDNN_MAX_CPU_ISA={cap})" if cap else "")
