"""What a run costs: parameters, FLOPs per sample, training step time and peak memory.

docs/metrics.md says exactly what each number measures.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..data import Split
from ..methods import Method
from ..nn.model import MultiModalModel

MIB = 2**20


def parameter_count(*modules: torch.nn.Module) -> int:
    """Parameters of the model and of what the method adds (heads, rates), each counted once."""
    return sum(p.numel() for p in {id(p): p for m in modules for p in m.parameters()}.values())


@torch.no_grad()
def flops_per_sample(
    model: MultiModalModel, method: Method, split: Split, device: torch.device, batch: int = 8
) -> float:
    """Floating-point operations of one prediction (``method.predict``, all modalities present) per sample,
    as counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and convolutions; 2 per
    multiply-add)."""
    model.eval()
    inputs, _ = next(split.batches(batch, device))
    with FlopCounterMode(display=False) as counter:
        method.predict(model, inputs)
    return counter.get_total_flops() / len(next(iter(inputs.values())))


class StepTimer:
    """Mean wall-clock time of training steps, leaving out the first step of the run (warm-up: lazy
    initialisation, allocator growth, kernel selection). On CUDA it synchronises before reading the clock."""

    def __init__(self, device: torch.device, clock: Callable[[], float] = time.perf_counter):
        self.synchronize = device.type == "cuda"
        self.device = device
        self.clock = clock
        self.warmed_up = False
        self.started = 0.0
        self.total, self.count = 0.0, 0
        self.epoch_total, self.epoch_count = 0.0, 0

    def start(self) -> None:
        self.started = self.clock()

    def stop(self) -> None:
        if self.synchronize:
            torch.cuda.synchronize(self.device)
        elapsed = self.clock() - self.started
        if not self.warmed_up:
            self.warmed_up = True
            return
        self.total += elapsed
        self.count += 1
        self.epoch_total += elapsed
        self.epoch_count += 1

    def epoch_mean(self) -> float | None:
        """Mean step time since the last call (None when no step was timed), then start a new epoch."""
        mean = self.epoch_total / self.epoch_count if self.epoch_count else None
        self.epoch_total, self.epoch_count = 0.0, 0
        return mean

    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


def _status_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process to its current RSS (Linux ≥ 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def _max_rss_kib() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak // 1024 if sys.platform == "darwin" else peak  # bytes on macOS, KiB elsewhere


class PeakMemory:
    """Peak memory used between construction and :meth:`measure`.

    * CUDA: ``torch.cuda.max_memory_allocated`` after resetting its peak: the most memory held by tensors.
    * CPU on Linux: how far the process's resident set rose above its size at the start (peak RSS mark
      ``VmHWM``, reset through ``/proc/self/clear_refs``, minus the RSS at the start).
    * CPU elsewhere: growth of ``getrusage`` max RSS, which stays 0 if the process had peaked higher before.
    """

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            self.measure_name = "cuda_max_memory_allocated"
        elif _reset_peak_rss():
            self.start_kib = _status_kib("VmRSS") or 0
            self.measure_name = "cpu_peak_rss_growth"
        else:
            self.start_kib = _max_rss_kib()
            self.measure_name = "cpu_max_rss_growth"

    def measure(self) -> dict[str, float | str]:
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) / MIB
        elif self.measure_name == "cpu_peak_rss_growth":
            peak = max((_status_kib("VmHWM") or 0) - self.start_kib, 0) / 1024
        else:
            peak = max(_max_rss_kib() - self.start_kib, 0) / 1024
        return {"peak_memory_mb": peak, "memory_measure": self.measure_name}


def cost_report(
    model: MultiModalModel, method: Method, split: Split, device: torch.device, step_timer: StepTimer, memory: dict
) -> dict[str, float | int | str | None]:
    return {
        "parameters": parameter_count(model, method),
        "flops_per_sample": flops_per_sample(model, method, split, device),
        "step_time_s": step_timer.mean(),
        **memory,
        "device": device_name(device),
    }


def cpu_model() -> str:
    try:
        match = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    except OSError:
        match = None
    return match.group(1).strip() if match else (platform.processor() or platform.machine())


def device_name(device: torch.device) -> str:
    """The accelerator a run used, or the CPU and the number of threads torch used."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({torch.get_num_threads()} threads)"


def machine_description(devices: Sequence[str]) -> str:
    """The host and the software versions, plus the devices the runs reported. The CPU kernels torch
    dispatches to (AVX2, AVX512, ...; ``ATEN_CPU_CAPABILITY`` chooses them) are named because they change
    the last bits of CPU training: runs reproduce to the bit only where they match (docs/metrics.md)."""
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
        f"torch {torch.__version__} (CPU kernels {torch.backends.cpu.get_cpu_capability()}); "
        f"runs on {', '.join(devices) or 'n/a'}"
    )
