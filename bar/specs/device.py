"""What `precision: auto` means on this machine: whether its device computes bfloat16 natively."""

from __future__ import annotations

import functools
import re
from pathlib import Path


@functools.cache
def bf16_native() -> bool:
    """Whether the device a stage trains on computes bfloat16 in hardware: a GPU with bf16, or
    a CPU with AVX512-BF16 or AMX (elsewhere PyTorch emulates it, a matmul at a few percent of
    float32's speed). On a Linux machine with no GPU device file it reads /proc/cpuinfo, so
    loading specs imports no torch; otherwise it asks torch."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and not any(Path(p).exists() for p in ("/dev/nvidiactl", "/dev/kfd")):
        flags = re.search(r"^flags\s*:(.*)$", cpuinfo.read_text(), re.M)
        return bool(flags and {"avx512_bf16", "amx_bf16"} & set(flags.group(1).split()))
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
