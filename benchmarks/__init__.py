"""Benchmarks that print figures: training and evaluation throughput against the machine's
measured matmul rate, and the pipeline's overhead. Development tooling, outside the installed
package: it imports vaeops, never the reverse. Tests (tests/bench) check the logic (FLOP counts,
JSON fields, loss parity), never the times.

- `flops`: model FLOPs of the matmul layers, counted from one traced forward pass,
- `roofline`: the fp32 / bf16 matrix-multiply rate of this machine, measured in the same run,
- `mnist_idx`: MNIST-format IDX folders (the tiled 60k set, the torchvision raw layout),
- `loops`: the pipeline's fit loop and the idiomatic DataLoader baseline, timed per epoch,
- `train`: `python -m benchmarks train` / `scaling`, assembling one JSON line,
- `pipeline`: `python -m benchmarks pipeline`, `dvc repro` timed in a scratch copy,
- `__main__`: the command line, run from the repository root.
"""

from __future__ import annotations

import os


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages every benchmark prints: a busy neighbour slows every
    figure, so each JSON line says how busy the machine was."""
    return [round(value, 2) for value in os.getloadavg()]
