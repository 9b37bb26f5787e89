"""What one training step of every method costs, measured side by side in one process.

For two networks, the avdigits default (a 1-D CNN on a (40 mel bands, 101 frames) spectrogram and a
2-D CNN on an 8x8 image) and the sensor CNN of the ERL-MR paper at USC-HAD shapes (two modalities of 3
axes x 200 samples, Euler projection 3168 -> 1584), this times the training step of ``joint``, ``erlmr`` in both Pareto modes,
every other method registered in METHODS, and a reference step written from the description of the
authors' code (three forward and three backward passes, per-tensor Python loops in the solver). Steps
are interleaved (every round runs each method once, in a shuffled order) and each method's time is
compared with ``joint``'s *in the same round*, so that load on a shared machine cancels out of the
ratios; the tables report medians after warm-up. Peak memory is measured separately, one method at a
time: on CUDA from the caching allocator, on CPU from the profiler's allocation events.

    PYTHONPATH=src python benchmarks/step_cost.py --out benchmarks/results/step_cost.md

Batches are synthetic, in memory, built once: the cost of data loading is measured by
benchmarks/loader_cost.py.
"""
from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import shlex
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from erlmr.config import Config, ModelConfig
from erlmr.data import DatasetSplits, Split
from erlmr.errors import ErlmrError
from erlmr.methods import METHODS, Method, MethodContext, build_method
from erlmr.methods.base import StepResult
from erlmr.nn.model import MultiModalModel
from erlmr.training.builders import ModelSpec, build_model, build_optimizer, trainable_parameters
from erlmr.training.step import StepContext, method_step


@dataclass
class Workload:
    """A network and batch to time: sample shapes, encoder per modality, classes, batch size."""

    name: str
    shapes: dict[str, tuple[int, ...]]
    encoders: dict[str, str]
    num_classes: int
    batch_size: int
    euler_dim: int
    note: str


def workloads() -> dict[str, Workload]:
    return {
        "avdigits": Workload(
            "avdigits", {"audio": (40, 101), "visual": (1, 8, 8)}, {"audio": "cnn1d", "visual": "cnn2d"},
            10, 16, ModelConfig().euler_dim, "the dataset's default encoders (`cnn1d` on log-mel, `cnn2d` on 8x8), default Euler width",
        ),
        "sensor": Workload(
            "sensor", {"acc": (3, 200), "gyro": (3, 200)}, {"acc": "sensor_cnn", "gyro": "sensor_cnn"},
            12, 16, 1584, "USC-HAD shapes, the authors' `sensor_cnn`, Euler projection 3168 -> 1584 as in their code",
        ),
        "mlp": Workload(
            "mlp", {"a": (32,), "b": (16,)}, {"a": "mlp", "b": "mlp"}, 6, 16, ModelConfig().euler_dim,
            "the array folder's default for vectors (two `mlp` encoders, 256 hidden, 2 layers) on tabular-sized inputs",
        ),
        "resnet18": Workload(
            "resnet18", {"audio": (1, 257, 188), "visual": (3, 1, 224, 224)}, {"audio": "resnet18", "visual": "resnet18"},
            6, 64, ModelConfig().euler_dim,
            "CREMA-D shapes (spectrogram (1, 257, 188), one 224x224 frame), two ResNet-18s, concat head",
        ),
    }


def with_frames(workload: Workload, frames: int) -> Workload:
    """The resnet18 workload with ``frames`` video frames per clip (the field uses one or three)."""
    if workload.name != "resnet18" or frames == 1:
        return workload
    shapes = {**workload.shapes, "visual": (3, frames, 224, 224)}
    return replace(workload, shapes=shapes, note=workload.note.replace("one 224x224 frame", f"{frames} 224x224 frames"))


def synthetic_splits(workload: Workload, samples: int, seed: int) -> DatasetSplits:
    generator = torch.Generator().manual_seed(seed)

    def split() -> Split:
        inputs = {m: torch.randn(samples, *shape, generator=generator) for m, shape in workload.shapes.items()}
        return Split(inputs, torch.randint(0, workload.num_classes, (samples,), generator=generator))

    classes = [str(c) for c in range(workload.num_classes)]
    return DatasetSplits(workload.name, list(workload.shapes), classes, split(), split(), split(), dict(workload.encoders))


class AuthorsThreePassStep(Method):
    """The ERL-MR step as the authors' code runs it (see /work/notes: erlmr_facts.md, section 3).

    Forward 1 gives the modality logits; forward 2 and its backward give the fused cross-entropy's
    gradient, forward 3 and its backward the phase loss 2(1 - cos) (cosine across the batch); each is
    cloned tensor by tensor; the 'loss+' normalisation and the two-task min-norm solution loop over
    tensors in Python, moving every partial sum to the host; the final loss mixes forward 3's fused
    logits and phases with forward 1's modality logits and takes a third backward pass.
    """

    def training_step(
        self, model: MultiModalModel, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, step: StepContext
    ) -> StepResult:
        order = model.modalities
        shared = model.shared_parameters()
        first = model(inputs)
        model.zero_grad()
        second = model(inputs)
        fusion_ce = F.cross_entropy(second.logits, labels)
        fusion_ce.backward(retain_graph=True)
        grads_fusion = [p.grad.clone() for p in shared]
        model.zero_grad()
        third = model(inputs)
        phase_loss = 2 * (1 - batch_axis_cosine([third.phases[m] for m in order]))
        phase_loss.backward(retain_graph=True)
        grads_phase = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in shared]
        scale = per_tensor_two_task_min_norm([grads_fusion, grads_phase], [fusion_ce.item(), phase_loss.item()])
        model.zero_grad()
        mmc = 1 - batch_axis_cosine([third.phases[m] for m in order])
        mmc = mmc + sum(F.cross_entropy(first.modality_logits[m], labels) for m in order)
        loss = scale[0] * F.cross_entropy(third.logits, labels) + scale[1] * mmc
        step.backward(loss)
        return StepResult(loss.detach(), third)


def batch_axis_cosine(phases: list[torch.Tensor]) -> torch.Tensor:
    pairs = [(a, b) for i, a in enumerate(phases) for b in phases[i + 1 :]]
    return torch.stack([F.cosine_similarity(a, b, dim=0).mean() for a, b in pairs]).mean()


def per_tensor_two_task_min_norm(grads: list[list[torch.Tensor]], losses: list[float]) -> list[float]:
    """'loss+' normalisation, then the closed-form two-task min-norm point, one tensor at a time."""
    for task, loss in enumerate(losses):
        norm = sum(float(g.pow(2).sum().cpu()) for g in grads[task]) ** 0.5
        grads[task] = [g / (loss * norm) for g in grads[task]]
    dot = [[sum(float(torch.mul(a, b).sum().cpu()) for a, b in zip(grads[i], grads[j])) for j in range(2)] for i in range(2)]
    if dot[0][1] >= dot[0][0]:
        gamma = 0.999
    elif dot[0][1] >= dot[1][1]:
        gamma = 0.001
    else:
        gamma = (dot[1][1] - dot[0][1]) / (dot[0][0] + dot[1][1] - 2 * dot[0][1])
    return [gamma, 1 - gamma]


@dataclass
class Entry:
    """One method on one network: what is timed, and its times."""

    label: str
    euler: bool
    make_method: Callable[[MultiModalModel, MethodContext], Method]
    adjust_model: Callable[[MultiModalModel], None] | None = None
    model: MultiModalModel | None = None
    method: Method | None = None
    optimizer: torch.optim.Optimizer | None = None
    parameters: list | None = None
    times: list[float] = field(default_factory=list)
    peak_bytes: int | None = None
    skipped: str | None = None


def registered(name: str, options: Mapping | None = None) -> Callable[[MultiModalModel, MethodContext], Method]:
    return lambda model, context: build_method(name, dict(options or {}), model, context)


def unbatched_projection(model: MultiModalModel) -> None:
    """The shared Euler projection applied to each modality's real and imaginary part separately (2·M
    calls, as the authors' code does) instead of to all of them stacked in one call."""
    euler = model.euler
    euler.projections = nn.ModuleList([euler.projection] * len(euler.in_shapes))
    euler.shared_projection = False


def entries_for() -> list[Entry]:
    entries = [
        Entry("joint", False, registered("joint")),
        Entry("joint (Euler)", True, registered("joint")),
        Entry("joint (Euler, unbatched projection)", True, registered("joint"), unbatched_projection),
        Entry("erlmr fixed weights", True, registered("erlmr", {"pareto": False})),
        Entry("erlmr params", True, registered("erlmr", {"pareto_mode": "params"})),
        Entry("erlmr features", True, registered("erlmr", {"pareto_mode": "features"})),
        Entry("authors' 3-pass reference", True, lambda model, context: AuthorsThreePassStep(model, None, context)),
    ]
    for name in METHODS:
        if name not in ("joint", "erlmr"):
            entries.append(Entry(name, METHODS.get(name).uses_euler, registered(name)))
    return entries


def baseline_of(entry: Entry) -> str:
    return "joint (Euler)" if entry.euler else "joint"


def build(entry: Entry, workload: Workload, splits: DatasetSplits, device: torch.device, seed: int) -> None:
    torch.manual_seed(seed)
    config = ModelConfig(euler_dim=workload.euler_dim)
    spec = ModelSpec(list(workload.shapes), dict(workload.shapes), dict(workload.encoders), workload.num_classes, entry.euler)
    try:
        entry.model = build_model(config, spec).to(device)
        if entry.adjust_model is not None:
            entry.adjust_model(entry.model)
        context = MethodContext(splits.modalities, splits.num_classes, workload.batch_size, device, splits)
        entry.method = entry.make_method(entry.model, context).to(device)
        entry.parameters = trainable_parameters(entry.model, entry.method)
        entry.optimizer = build_optimizer(Config(), entry.parameters)
        entry.model.train()
        entry.method.on_epoch_start(entry.model, 0)
    except ErlmrError as error:
        entry.skipped = str(error)


def release(entry: Entry) -> None:
    entry.model = entry.method = entry.optimizer = entry.parameters = None


def train_step(entry: Entry, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, amp: bool) -> None:
    """What the trainer does per batch, less its logging and finiteness checks."""
    entry.optimizer.zero_grad(set_to_none=True)
    step = StepContext(entry.optimizer, entry.parameters, 0, 0, 1)
    with torch.autocast(labels.device.type, dtype=torch.bfloat16) if amp else nullcontext():
        method_step(entry.method, entry.model, inputs, labels, step)
    step.finish()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(entries: list[Entry], batch, device: torch.device, warmup: int, rounds: int, amp: bool) -> None:
    shuffle = random.Random(0)
    live = [e for e in entries if e.skipped is None]
    for round_index in range(warmup + rounds):
        order = live[:]
        shuffle.shuffle(order)
        for entry in order:
            synchronize(device)
            started = time.perf_counter()
            train_step(entry, *batch, amp)
            synchronize(device)
            if round_index >= warmup:
                entry.times.append(time.perf_counter() - started)


def measure_peak_memory(entry: Entry, workload: Workload, splits, batch, device: torch.device, seed: int, amp: bool) -> None:
    """Bytes the method holds at its peak during a step: model, optimiser state, method buffers, activations.

    Only this entry exists while it is measured. The count starts before the model is built and runs
    through two warm-up steps (which create the optimiser state) and two measured steps.
    """
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        build(entry, workload, splits, device, seed)
        if entry.skipped is None:
            for _ in range(2):
                train_step(entry, *batch, amp)
            torch.cuda.reset_peak_memory_stats(device)
            for _ in range(2):
                train_step(entry, *batch, amp)
            entry.peak_bytes = torch.cuda.max_memory_allocated(device) - start
    else:
        from torch.profiler import ProfilerActivity, profile, record_function

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
            build(entry, workload, splits, device, seed)
            if entry.skipped is None:
                for _ in range(2):
                    train_step(entry, *batch, amp)
                with record_function(MEASURED):
                    for _ in range(2):
                        train_step(entry, *batch, amp)
        if entry.skipped is None:
            entry.peak_bytes = peak_from_allocations(profiler)
    release(entry)


MEASURED = "step_cost: measured steps"


def peak_from_allocations(profiler) -> int:
    """Highest running total of the profiler's allocation events inside the ``MEASURED`` region."""
    events = list(profiler.profiler.kineto_results.events())
    region = next(e for e in events if e.name() == MEASURED)
    allocations = sorted((e for e in events if e.name() == "[memory]"), key=lambda e: e.start_ns())
    live = peak = 0
    for event in allocations:
        live += event.nbytes()
        if region.start_ns() <= event.start_ns() <= region.end_ns():
            peak = max(peak, live)
    return peak


def median_ratio(entry: Entry, baseline: Entry) -> tuple[float, float, float]:
    """Median and quartiles over rounds of this entry's time over the baseline's time in the same round."""
    ratios = sorted(a / b for a, b in zip(entry.times, baseline.times))
    quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return statistics.median(ratios), quartiles[0], quartiles[2]


def run_workload(workload: Workload, device: torch.device, warmup: int, rounds: int, amp: bool, only: list[str], seed: int) -> str:
    splits = synthetic_splits(workload, 4 * workload.batch_size, seed)
    inputs, labels = splits.train.__getitems__(torch.arange(workload.batch_size))
    batch = ({m: x.to(device) for m, x in inputs.items()}, labels.to(device))
    always = ("joint", "joint (Euler)", "joint (Euler, unbatched projection)")
    entries = [e for e in entries_for() if not only or e.label in only or e.label in always]
    # A first, discarded measurement takes the one-off allocations (CUDA library workspaces) out of the others.
    measure_peak_memory(Entry("warm-up", True, registered("joint")), workload, splits, batch, device, seed, amp)
    for entry in entries:
        measure_peak_memory(entry, workload, splits, batch, device, seed, amp)
    for entry in entries:
        if entry.skipped is None:
            build(entry, workload, splits, device, seed)
    time_interleaved(entries, batch, device, warmup, rounds, amp)
    by_label = {e.label: e for e in entries}
    lines = [
        f"### {workload.name}: {workload.note}",
        "",
        f"Batch {workload.batch_size}; shapes {workload.shapes}; {rounds} timed rounds after {warmup} warm-up rounds.",
        "Ratios are medians over rounds of (step time / the same network's `joint` step time in that round), "
        "with the interquartile range; peak memory is relative to the same network's `joint`.",
        "",
        "| method | network | step time / joint (IQR) | median step ms | samples/s | peak MiB | peak / joint |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in entries:
        if entry.skipped is not None:
            lines.append(f"| {entry.label} | - | skipped: {entry.skipped} | | | | |")
            continue
        baseline = by_label[baseline_of(entry)]
        ratio, low, high = median_ratio(entry, baseline)
        step = statistics.median(entry.times)
        memory = entry.peak_bytes / baseline.peak_bytes
        lines.append(
            f"| {entry.label} | {'Euler' if entry.euler else 'plain'} | {ratio:.2f} ({low:.2f}-{high:.2f}) | "
            f"{1000 * step:.1f} | {workload.batch_size / step:.0f} | {entry.peak_bytes / 2**20:.1f} | {memory:.2f} |"
        )
    euler_cost, low, high = median_ratio(by_label["joint (Euler)"], by_label["joint"])
    unbatched, low_u, high_u = median_ratio(by_label["joint (Euler, unbatched projection)"], by_label["joint"])
    lines += [
        "",
        f"The Euler representation itself: `joint` with it / without it = {euler_cost:.2f} ({low:.2f}-{high:.2f}); "
        f"with the shared projection called once per modality and part instead of once on all of them stacked: "
        f"{unbatched:.2f} ({low_u:.2f}-{high_u:.2f}).",
    ]
    if "erlmr params" in by_label and "authors' 3-pass reference" in by_label:
        reference, low, high = median_ratio(by_label["authors' 3-pass reference"], by_label["erlmr params"])
        lines.append(f"The authors' three-pass step / our `params` mode = {reference:.2f} ({low:.2f}-{high:.2f}).")
    for entry in entries:
        release(entry)
    return "\n".join(lines) + "\n"


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in open("/proc/cpuinfo")
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"CPU {cpu}, {torch.get_num_threads()} torch thread(s), {os.cpu_count()} cores with load average {load:.1f} "
        "(shared with other work: absolute times are indicative only, the ratios are what to read)"
    )


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", default="avdigits,sensor", help="comma-separated: avdigits, sensor")
    parser.add_argument("--methods", default="", help="comma-separated labels to time (default: all); joint is always timed")
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds (each runs every method once)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds first")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast around each training step")
    parser.add_argument("--batch-size", type=int, help="batch size for every network (default: 16, the paper's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the report to this markdown file")
    args = parser.parse_args(argv)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else "cpu" if args.device == "auto" else args.device)
    table = workloads()
    names = [n for n in args.workloads.split(",") if n]
    unknown = sorted(set(names) - set(table))
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; valid: {', '.join(table)}")
    only = [m for m in args.methods.split(",") if m]
    header = report_header("Training-step cost", device, "step_cost.py", argv, f"bf16 autocast {'on' if args.amp else 'off'}")
    if args.batch_size:
        table = {name: replace(workload, batch_size=args.batch_size) for name, workload in table.items()}
    sections = [run_workload(table[n], device, args.warmup, args.rounds, args.amp, only, args.seed) for n in names]
    publish("\n".join(header) + "\n".join(sections), args.out)
    return 0


def report_header(title: str, device: torch.device, script: str, argv: list[str] | None, settings: str = "") -> list[str]:
    """The title, date, machine, commit and command line that head every benchmark report."""
    arguments = argv if argv is not None else sys.argv[1:]
    return [
        f"## {title}",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {machine_description(device)}; torch {torch.__version__}; "
        f"commit {git_commit()}{'; ' + settings if settings else ''}.",
        f"Command: `{shlex.join(['python', f'benchmarks/{script}', *arguments])}`",
        "",
    ]


def publish(report: str, out: str | None) -> None:
    print(report)
    if out:
        with open(out, "w") as file:
            file.write(report)


if __name__ == "__main__":
    sys.exit(main())
