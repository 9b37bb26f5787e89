"""What one training step of every method costs, measured side by side in one process.

For two networks, the avdigits default (a 1-D CNN on a (40 mel bands, 101 frames) spectrogram and a
2-D CNN on an 8x8 image) and the sensor CNN of the ERL-MR paper at USC-HAD shapes (two modalities of 3
axes x 200 samples, Euler projection 3168 -> 1584), this times the training step of ``joint``,
``erlmr`` in both Pareto modes,
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
from erlmr.parallel import all_reduce_mean_lists
from erlmr.training.acceleration import StepRunner, autocast, compile_step, memory_format, step_runner
from erlmr.training.builders import ModelSpec, build_model, build_optimizer, resolve_device, trainable_parameters
from erlmr.training.step import StepContext


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
    #: the batch on a CPU, where the field's batch would take minutes a step (None: batch_size)
    cpu_batch_size: int | None = None


def workloads() -> dict[str, Workload]:
    return {
        "avdigits": Workload(
            "avdigits",
            {"audio": (40, 101), "visual": (1, 8, 8)},
            {"audio": "cnn1d", "visual": "cnn2d"},
            10,
            16,
            ModelConfig().euler_dim,
            "the dataset's default encoders (`cnn1d` on log-mel, `cnn2d` on 8x8), default Euler width",
        ),
        "sensor": Workload(
            "sensor",
            {"acc": (3, 200), "gyro": (3, 200)},
            {"acc": "sensor_cnn", "gyro": "sensor_cnn"},
            12,
            16,
            1584,
            "USC-HAD shapes, the authors' `sensor_cnn`, Euler projection 3168 -> 1584 as in their code",
        ),
        "mlp": Workload(
            "mlp",
            {"a": (32,), "b": (16,)},
            {"a": "mlp", "b": "mlp"},
            6,
            16,
            ModelConfig().euler_dim,
            "the array folder's default for vectors (two `mlp` encoders, 256 hidden, 2 layers) on tabular-sized inputs",
        ),
        "resnet18": Workload(
            "resnet18",
            {"audio": (1, 257, 188), "visual": (3, 1, 224, 224)},
            {"audio": "resnet18", "visual": "resnet18"},
            6,
            64,
            ModelConfig().euler_dim,
            "CREMA-D shapes (spectrogram (1, 257, 188), one 224x224 frame), two ResNet-18s, concat head",
            cpu_batch_size=4,
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
    return DatasetSplits(
        workload.name, list(workload.shapes), classes, split(), split(), split(), dict(workload.encoders)
    )


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
    dot = [
        [sum(float(torch.mul(a, b).sum().cpu()) for a, b in zip(grads[i], grads[j])) for j in range(2)]
        for i in range(2)
    ]
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
    #: the epoch every timed step falls in (a phased method's later phase)
    epoch: int = 0
    #: what the step's gradients go through (BatchedGradients: one batched backward pass for all losses)
    step_class: type = StepContext
    #: None (eager), "compiled" (train.compile), "CUDA graph" (train.cuda_graphs) or "channels-last"
    variant: str | None = None
    #: torch.compile's backend for the compiled variant (aot_eager checks the script quickly on a CPU)
    compile_backend: str = "inductor"
    model: MultiModalModel | None = None
    method: Method | None = None
    optimizer: torch.optim.Optimizer | None = None
    parameters: list | None = None
    run: StepRunner | None = None
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


class BatchedGradients(StepContext):
    """The step's gradients of all its losses from one batched backward pass instead of one pass each:
    ``torch.autograd.grad(stack(losses), inputs, grad_outputs=identity, is_grads_batched=True)``, which
    vmaps the backward graph over the losses (for both Pareto modes of ERL-MR)."""

    def gradients(self, losses, params, retain_graph=False):
        grads = batched_gradients(losses, params, retain_graph)
        all_reduce_mean_lists(grads)
        return grads

    def feature_gradients(self, losses, features):
        return batched_gradients(losses, features, retain_graph=True)


def batched_gradients(losses, inputs, retain_graph: bool) -> list[list[torch.Tensor]]:
    if not losses:
        return []
    stacked = torch.stack(list(losses))
    basis = torch.eye(len(losses), dtype=stacked.dtype, device=stacked.device)
    grads = torch.autograd.grad(
        stacked, inputs, grad_outputs=basis, is_grads_batched=True, retain_graph=retain_graph, materialize_grads=True
    )
    return [[g[i] for g in grads] for i in range(len(losses))]


#: the entries every variant (--variants) is also timed for
CORE = ("joint", "joint (Euler)", "erlmr fixed weights", "erlmr params", "erlmr features")
VARIANTS = {"compile": "compiled", "graphs": "CUDA graph", "channels-last": "channels-last"}


def entries_for(variants: list[str] = (), compile_backend: str = "inductor") -> list[Entry]:
    entries = [
        Entry("joint", False, registered("joint")),
        Entry("joint (Euler)", True, registered("joint")),
        Entry("joint (Euler, unbatched projection)", True, registered("joint"), unbatched_projection),
        Entry("erlmr fixed weights", True, registered("erlmr", {"pareto": False})),
        Entry("erlmr params", True, registered("erlmr", {"pareto_mode": "params"})),
        Entry("erlmr features", True, registered("erlmr", {"pareto_mode": "features"})),
        Entry(
            "erlmr params (batched backward)",
            True,
            registered("erlmr", {"pareto_mode": "params"}),
            step_class=BatchedGradients,
        ),
        Entry(
            "erlmr features (batched backward)",
            True,
            registered("erlmr", {"pareto_mode": "features"}),
            step_class=BatchedGradients,
        ),
        Entry("authors' 3-pass reference", True, lambda model, context: AuthorsThreePassStep(model, None, context)),
    ]
    for name in METHODS:
        if name not in ("joint", "erlmr"):
            entries.append(Entry(name, METHODS.get(name).uses_euler, registered(name)))
    if "umt" in METHODS:  # "umt" alone times its first phase, the teachers'
        entries.append(Entry("umt (student phase)", False, registered("umt", {"teacher_epochs": 1}), epoch=1))
    # Methods whose epoch-0 step is a plain warm-up step: also timed in their modulating phase.
    for label, name, options in ACTIVE_PHASES:
        if name in METHODS:
            entries.append(Entry(label, METHODS.get(name).uses_euler, registered(name, options)))
    if "aug" in METHODS:  # "aug" alone times a fresh run, before any boosting learner is on
        entries.append(Entry("aug (every learner on)", False, aug_with_every_learner))
    core = [e for e in entries if e.label in CORE]
    for variant in variants:
        entries += [
            replace(
                e,
                label=f"{e.label} [{VARIANTS[variant]}]",
                variant=VARIANTS[variant],
                times=[],
                compile_backend=compile_backend,
            )
            for e in core
        ]
    return entries


#: (label, method, options that put its epoch-0 step in the phase that modulates)
ACTIVE_PHASES = [
    ("opm (after its warm-up)", "opm", {"warmup_epochs": 0}),
    ("ogm_tpami (in its window)", "ogm_tpami", {"modulation_start": 0}),
    ("arl (after its warm-up)", "arl", {"warmup_epochs": 0}),
]


def aug_with_every_learner(model: MultiModalModel, context: MethodContext) -> Method:
    """AUG as late in a run as it gets: every pre-allocated boosting learner switched on."""
    method = build_method("aug", {}, model, context)
    method.learner_counts.fill_(method.options.max_learners)
    return method


def baseline_of(entry: Entry) -> str:
    return "joint (Euler)" if entry.euler else "joint"


def variant_baseline_of(entry: Entry) -> str:
    """The same network's ``joint`` under the same variant (compiled, graphed, channels-last)."""
    return baseline_of(entry) + (f" [{entry.variant}]" if entry.variant else "")


def build(entry: Entry, workload: Workload, splits: DatasetSplits, device: torch.device, seed: int) -> None:
    torch.manual_seed(seed)
    config = ModelConfig(euler_dim=workload.euler_dim)
    spec = ModelSpec(
        list(workload.shapes), dict(workload.shapes), dict(workload.encoders), workload.num_classes, entry.euler
    )
    try:
        entry.model = build_model(config, spec).to(device)
        if entry.adjust_model is not None:
            entry.adjust_model(entry.model)
        context = MethodContext(splits.modalities, splits.num_classes, workload.batch_size, device, splits)
        entry.method = entry.make_method(entry.model, context).to(device)
        memory_format(entry.model, entry.variant == "channels-last")
        entry.parameters = trainable_parameters(entry.model, entry.method)
        entry.optimizer = build_optimizer(Config(), entry.parameters)
        step_model = compile_step(entry.model, entry.method, entry.variant == "compiled", entry.compile_backend)
        entry.run = step_runner(
            entry.method,
            entry.model,
            step_model,
            entry.optimizer,
            entry.parameters,
            entry.variant == "CUDA graph",
            device,
            1,
        )
        entry.model.train()
        entry.method.on_epoch_start(entry.model, entry.epoch)
    except ErlmrError as error:
        entry.skipped = str(error)


def release(entry: Entry) -> None:
    entry.model = entry.method = entry.optimizer = entry.parameters = entry.run = None


def train_step(entry: Entry, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, amp: bool) -> None:
    """What the trainer does per batch, less its logging and finiteness checks."""
    entry.optimizer.zero_grad(set_to_none=True)
    step = entry.step_class(entry.optimizer, entry.parameters, entry.epoch, 0, 1)
    with autocast(labels.device, amp, entry.variant == "CUDA graph"):
        entry.run(inputs, labels, step)
    step.finish()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock_for(device: torch.device, clock: str) -> Callable[[], float]:
    """Wall-clock time, or on a CPU the process's CPU time: what the step computes, without the time other
    processes of a shared machine hold its core (with one torch thread, the step's own time)."""
    return time.process_time if clock == "cpu" and device.type == "cpu" else time.perf_counter


def time_interleaved(
    entries: list[Entry],
    batch,
    device: torch.device,
    warmup: int,
    rounds: int,
    amp: bool,
    repeats: int = 1,
    clock: str = "wall",
) -> None:
    """Every round times each entry once, in a shuffled order; an entry's time in a round is the fastest
    of ``repeats`` steps in a row (more than one on a loaded machine: a step that another process
    interrupted is not what the step costs)."""
    now = clock_for(device, clock)
    shuffle = random.Random(0)
    live = [e for e in entries if e.skipped is None]
    for round_index in range(warmup + rounds):
        order = live[:]
        shuffle.shuffle(order)
        for entry in order:
            fastest = float("inf")
            for _ in range(repeats):
                synchronize(device)
                started = now()
                train_step(entry, *batch, amp)
                synchronize(device)
                fastest = min(fastest, now() - started)
            if round_index >= warmup:
                entry.times.append(fastest)


def measure_peak_memory(
    entry: Entry, workload: Workload, splits, batch, device: torch.device, seed: int, amp: bool
) -> None:
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


def run_workload(
    workload: Workload,
    device: torch.device,
    warmup: int,
    rounds: int,
    amp: bool,
    only: list[str],
    seed: int,
    variants: list[str] = (),
    repeats: int = 1,
    clock: str = "wall",
    compile_backend: str = "inductor",
) -> str:
    splits = synthetic_splits(workload, 4 * workload.batch_size, seed)
    inputs, labels = splits.train.__getitems__(torch.arange(workload.batch_size))
    batch = ({m: x.to(device) for m, x in inputs.items()}, labels.to(device))
    always = ("joint", "joint (Euler)", "joint (Euler, unbatched projection)")
    entries = [
        e
        for e in entries_for(variants, compile_backend)
        if not only
        or e.label in only
        or e.label in always
        or (e.variant and (variant_baseline_of(e) == e.label or e.label.rsplit(" [", 1)[0] in only))
    ]
    # A first, discarded measurement takes the one-off allocations (CUDA library workspaces) out of the others.
    measure_peak_memory(Entry("warm-up", True, registered("joint")), workload, splits, batch, device, seed, amp)
    for entry in entries:
        if entry.variant is None:  # a variant holds what its eager entry holds; compiling it twice is not worth it
            measure_peak_memory(entry, workload, splits, batch, device, seed, amp)
    for entry in entries:
        if entry.skipped is None:
            build(entry, workload, splits, device, seed)
    time_interleaved(entries, batch, device, warmup, rounds, amp, repeats, clock)
    timing = f"each the fastest of {repeats} steps in a row" if repeats > 1 else "one step each"
    timing += ", process CPU time" if clock_for(device, clock) is time.process_time else ", wall-clock time"
    lines = [
        f"### {workload.name}: {workload.note}",
        "",
        f"Batch {workload.batch_size}; shapes {workload.shapes}; "
        f"{rounds} timed rounds ({timing}) after {warmup} warm-up rounds.",
        "Ratios are medians over rounds of (step time / the same network's eager `joint` step time in that round), "
        "with the interquartile range; a variant (compiled, CUDA graph, channels-last) is also divided by `joint` "
        "under the same variant; peak memory is relative to the same network's `joint`.",
        "",
        "| method | network | step time / joint (IQR) | / joint, same variant | "
        "median step ms | samples/s | peak MiB | peak / joint |",
        "|---|---|---|---|---|---|---|---|",
        *table_rows(entries, workload.batch_size),
        "",
        *summary_lines({e.label: e for e in entries}),
    ]
    for entry in entries:
        release(entry)
    return "\n".join(lines) + "\n"


def table_rows(entries: list[Entry], batch_size: int) -> list[str]:
    by_label = {e.label: e for e in entries}
    rows = []
    for entry in entries:
        baseline = by_label[baseline_of(entry)]
        if entry.skipped is not None or baseline.skipped is not None:
            rows.append(f"| {entry.label} | - | skipped: {entry.skipped or baseline.skipped} | | | | | |")
            continue
        ratio, low, high = median_ratio(entry, baseline)
        same = by_label.get(variant_baseline_of(entry))
        same_ratio = f"{median_ratio(entry, same)[0]:.2f}" if entry.variant and same and same.skipped is None else ""
        step = statistics.median(entry.times)
        memory = (
            "| |"
            if entry.peak_bytes is None
            else f"| {entry.peak_bytes / 2**20:.1f} | {entry.peak_bytes / baseline.peak_bytes:.2f} |"
        )
        rows.append(
            f"| {entry.label} | {'Euler' if entry.euler else 'plain'} | "
            f"{ratio:.2f} ({low:.2f}-{high:.2f}) | {same_ratio} | "
            f"{1000 * step:.1f} | {batch_size / step:.0f} {memory}"
        )
    return rows


def summary_lines(by_label: dict[str, Entry]) -> list[str]:
    """The Euler representation's own cost, the authors' step against ours, ERL-MR against plain joint."""
    euler_cost, low, high = median_ratio(by_label["joint (Euler)"], by_label["joint"])
    unbatched, low_u, high_u = median_ratio(by_label["joint (Euler, unbatched projection)"], by_label["joint"])
    lines = [
        f"The Euler representation itself: `joint` with it / without it = {euler_cost:.2f} ({low:.2f}-{high:.2f}); "
        f"with the shared projection called once per modality and part instead of once on all of them stacked: "
        f"{unbatched:.2f} ({low_u:.2f}-{high_u:.2f}).",
    ]
    live = {label: e for label, e in by_label.items() if e.skipped is None}
    if "erlmr params" in live and "authors' 3-pass reference" in live:
        reference, low, high = median_ratio(live["authors' 3-pass reference"], live["erlmr params"])
        lines.append(f"The authors' three-pass step / our `params` mode = {reference:.2f} ({low:.2f}-{high:.2f}).")
    against_plain = [
        f"`{label}` {median_ratio(live[label], live['joint'])[0]:.2f}"
        for label in live
        if label.startswith("erlmr ") and live[label].variant is None
    ]
    if against_plain:
        lines.append("ERL-MR against plain `joint` (no Euler map), the same rounds: " + ", ".join(against_plain) + ".")
    return lines


def machine_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"CPU {cpu}, {torch.get_num_threads()} torch thread(s), {os.cpu_count()} cores with load average {load:.1f} "
        "(shared with other work: absolute times are indicative only, the ratios are what to read)"
    )


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workloads", default="avdigits,sensor", help="comma-separated: avdigits, sensor, mlp, resnet18"
    )
    parser.add_argument(
        "--methods", default="", help="comma-separated labels to time (default: all); joint is always timed"
    )
    parser.add_argument(
        "--variants", default="", help=f"comma-separated, also time {', '.join(CORE)} as: {', '.join(VARIANTS)}"
    )
    parser.add_argument("--frames", type=int, default=1, help="video frames per clip in the resnet18 workload (1 or 3)")
    parser.add_argument("--compile-backend", default="inductor", help="torch.compile backend of the compiled variant")
    parser.add_argument("--rounds", type=int, default=30, help="timed rounds (each runs every method once)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds first")
    parser.add_argument(
        "--repeats", type=int, default=1, help="steps per entry and round, the fastest kept (for a loaded machine)"
    )
    parser.add_argument(
        "--clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="on a CPU: time steps by the process's CPU time (default) or by the wall clock; CUDA: always wall",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast around each training step")
    parser.add_argument(
        "--batch-size",
        type=int,
        help="batch size for every network (default: 16, the paper's; resnet18: 64 on CUDA, 4 on CPU)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the report to this markdown file")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    table = workloads()
    names = [n for n in args.workloads.split(",") if n]
    unknown = sorted(set(names) - set(table))
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; valid: {', '.join(table)}")
    only = [m for m in args.methods.split(",") if m]
    variants = [v for v in args.variants.split(",") if v]
    if sorted(set(variants) - set(VARIANTS)):
        parser.error(f"unknown variant(s) {sorted(set(variants) - set(VARIANTS))}; valid: {', '.join(VARIANTS)}")
    header = report_header(
        "Training-step cost", device, "step_cost.py", argv, f"bf16 autocast {'on' if args.amp else 'off'}"
    )
    table = {
        name: batch_for(with_frames(workload, args.frames), device, args.batch_size) for name, workload in table.items()
    }
    sections = [
        run_workload(
            table[n],
            device,
            args.warmup,
            args.rounds,
            args.amp,
            only,
            args.seed,
            variants,
            args.repeats,
            args.clock,
            args.compile_backend,
        )
        for n in names
    ]
    publish("\n".join(header) + "\n".join(sections), args.out)
    return 0


def batch_for(workload: Workload, device: torch.device, batch_size: int | None) -> Workload:
    """The workload at the batch asked for, else at its CPU batch on a CPU, else at its own."""
    if batch_size is None and device.type == "cpu":
        batch_size = workload.cpu_batch_size
    return replace(workload, batch_size=batch_size) if batch_size else workload


def report_header(
    title: str, device: torch.device, script: str, argv: list[str] | None, settings: str = ""
) -> list[str]:
    """The title, date, machine, commit and command line that head every benchmark report."""
    arguments = argv if argv is not None else sys.argv[1:]
    return [
        f"## {title}",
        "",
        f"Measured {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC on {machine_description(device)}; "
        f"torch {torch.__version__}; "
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
