"""The machine's matmul roofline, measured in the same run as the figures it normalizes.

A large square matrix multiply is the best case for the BLAS (oneDNN / MKL on CPU, cuBLAS on GPU);
its rate is what "near the machine's limit" is measured against. It runs as `F.linear`, the op an
`nn.Linear` calls (under bf16 autocast too; on a CPU without native bf16 that is the fastest bf16
path by far, the plain `@` falling back to a reference kernel). The best of several timed rounds
is kept: other work on a shared machine only ever makes a round slower.
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

CPU_SIZE = 1024  # 2.1 GFLOP per multiply: ~10 ms on these cores, large enough to be BLAS-bound
GPU_SIZE = 8192


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    size: int | None = None,
    rounds: int = 5,
    seconds_per_round: float = 0.2,
) -> float:
    """Best rate over `rounds` of (size x size) @ (size x size)^T in `dtype`, in GFLOP/s."""
    size = size or (GPU_SIZE if device.type == "cuda" else CPU_SIZE)
    # Its own generator: a measurement between epochs must not move the training's random stream.
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, generator=generator).to(dtype)
    b = torch.randn(size, size, device=device, generator=generator).to(dtype)
    flops = 2 * size**3
    F.linear(a, b)  # warm-up: BLAS initialization and kernel selection
    synchronize(device)
    best = 0.0
    for _ in range(rounds):
        repeats = 0
        synchronize(device)
        started = time.perf_counter()
        while True:
            F.linear(a, b)
            repeats += 1
            synchronize(device)
            elapsed = time.perf_counter() - started
            if elapsed >= seconds_per_round:
                break
        best = max(best, flops * repeats / elapsed / 1e9)
    return best


def cpu_has_native_bf16() -> bool | None:
    """Whether oneDNN has bf16 instructions on this CPU (AVX512-BF16 / AMX); None if unknown."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return None
