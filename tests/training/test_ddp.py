"""Distributed data-parallel training: torchrun with 2 CPU processes (gloo) against one process."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import BatchSampler, RandomSampler

from erlmr import ConfigError
from erlmr.methods import METHODS
from erlmr.training.distributed import (
    Cluster,
    ShardedBatchSampler,
    check_replicas_agree,
    sum_over_ranks,
)
from erlmr.training.run_folder import RunFolder

sys.path.insert(0, str(Path(__file__).parent))
from ddp_worker import run_commands  # noqa: E402

# Single process vs 2 processes with the same global batch differ only by float summation order
# (means over 16 + 16 samples averaged, against one mean over 32): a few 1e-6 relative after 8 steps.
TOLERANCE = 1e-4

# (label, method, options). MLP encoders and no dropout: nothing random besides the shared seed, and no
# batch norm (on CPU its statistics are per rank; on CUDA the trainer uses SyncBatchNorm).
CASES = [
    ("erlmr-params", "erlmr", "method.options.pareto_mode=params"),
    ("erlmr-features", "erlmr", "method.options.pareto_mode=features"),
    ("ogm_ge", "ogm_ge", None),
    # paths the one-epoch default runs do not reach
    ("sample_valuation-modality", "sample_valuation", "method.options={warmup: 1, level: modality}"),
    ("relearning-reinit", "relearning", "method.options={reinit_epoch: 1}"),
    ("lfm-learnable", "lfm", "method.options={schedule: learnable, alpha_lr: 10.0, initial_align: 0.5}"),
]
AVAILABLE = [case for case in CASES if case[1] in METHODS]
# Every other registered method that runs on its default options: one epoch each, ranks compared.
OTHERS = [
    m
    for m in METHODS
    if m not in {case[1] for case in CASES} | {"rank_local_scale"} and not METHODS.get(m).needs_options
]


def command(out: Path, method: str, option: str | None, epochs: int = 2) -> list[str]:
    argv = [
        "train",
        "--dataset",
        "synthetic",
        "--method",
        method,
        "--epochs",
        str(epochs),
        "--batch-size",
        "32",
        "--seed",
        "3",
        "--device",
        "cpu",
        "--quiet",
        "--out",
        str(out),
        "--set",
        "data.options={train_size: 128, test_size: 64}",
        "--set",
        "model.euler_dropout=0",
    ]
    return argv + (["--set", option] if option else [])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One torchrun launch for every case (plus the rank-local method); the references in this process."""
    if not torch.distributed.is_available():
        pytest.skip("this PyTorch build has no torch.distributed")
    root = tmp_path_factory.mktemp("ddp")
    (root / "single").mkdir()
    commands = [command(root / label / "ddp", method, option) for label, method, option in AVAILABLE]
    commands.append(command(root / "rank_local" / "ddp", "rank_local_scale", None))
    commands += [command(root / method / "ddp", method, None, epochs=1) for method in OTHERS]
    launched = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(Path(__file__).parent / "ddp_worker.py"),
            str(root),
            json.dumps(commands),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    codes = [json.loads(path.read_text()) for path in sorted(root.glob("codes-rank*.json"))]
    references = [command(root / label / "single", method, option) for label, method, option in AVAILABLE]
    assert run_commands(root / "single", references) == [0] * len(references)
    return root, codes


def read_run(folder: Path):
    (run_dir,) = [p for p in folder.iterdir() if p.is_dir()]
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return run_dir, metrics, RunFolder(run_dir).load_checkpoint("last.pt")["model"]


@pytest.mark.parametrize("index", range(len(CASES)), ids=[case[0] for case in CASES])
def test_two_processes_match_one_process_and_apply_identical_coefficients(runs, index):
    label, method, _ = CASES[index]
    if method not in METHODS:
        pytest.skip(f"method {method!r} is not registered on this branch yet")
    root, codes = runs
    index = AVAILABLE.index(CASES[index])
    assert all(c[index] == 0 for c in codes) and len(codes) == 2
    rank0, rank1 = (torch.load(root / f"run{index}-rank{r}.pt") for r in (0, 1))
    single = torch.load(root / "single" / f"run{index}-rank0.pt")
    # 2 epochs x 128/32 steps, more where a method re-samples the epoch (sample_valuation's copies)
    assert rank0.shape == single.shape and rank0.shape[0] >= 8
    # Every rank applied exactly the same gradient: same coefficients, reduced the same way.
    assert torch.equal(rank0, rank1)
    torch.testing.assert_close(rank0, single, rtol=TOLERANCE, atol=1e-7)
    # Only rank 0 wrote: one run folder, with everything a single-process run writes.
    run_dir, metrics, model = read_run(root / label / "ddp")
    single_dir, single_metrics, single_model = read_run(root / label / "single")
    assert {p.name for p in run_dir.iterdir()} == {p.name for p in single_dir.iterdir()}
    for key in model:
        torch.testing.assert_close(model[key], single_model[key], rtol=TOLERANCE, atol=1e-6)
    for ours, reference in zip(metrics, single_metrics):
        assert ours["train_loss"] == pytest.approx(reference["train_loss"], rel=TOLERANCE)
        assert ours["val_accuracy"] == reference["val_accuracy"]
        for key, value in reference.get("method", {}).items():
            assert ours["method"][key] == pytest.approx(value, rel=TOLERANCE, abs=1e-6), key


def test_a_rank_local_coefficient_is_caught(runs):
    root, codes = runs
    assert [c[len(AVAILABLE)] for c in codes] == [2, 2]  # both ranks stop with a clear error, not a hang
    rank0, rank1 = (torch.load(root / f"run{len(AVAILABLE)}-rank{r}.pt") for r in (0, 1))
    assert not torch.allclose(rank0, rank1)
    assert not list((root / "rank_local" / "ddp").glob("*/summary.json"))


@pytest.mark.parametrize("method", OTHERS)
def test_every_method_trains_on_two_processes_with_identical_replicas(runs, method):
    root, codes = runs
    index = len(AVAILABLE) + 1 + OTHERS.index(method)
    assert [c[index] for c in codes] == [0, 0]
    rank0, rank1 = (torch.load(root / f"run{index}-rank{r}.pt") for r in (0, 1))
    assert len(rank0) >= 4 and torch.equal(rank0, rank1)  # 4 batches; a method may step more than once per batch
    assert len(list((root / method / "ddp").glob("*/summary.json"))) == 1


def test_single_process_batches_are_those_of_random_sampler():
    for size, batch in ((100, 16), (97, 16), (33, 32), (5, 8)):
        ours = [b.tolist() for b in ShardedBatchSampler(size, batch, True, seed=7)]
        reference = list(
            BatchSampler(RandomSampler(range(size), generator=torch.Generator().manual_seed(7)), batch, False)
        )
        if size % batch == 1 and size > batch:
            reference = reference[:-1]  # a last batch of one sample is dropped in training
        assert ours == reference


@pytest.mark.parametrize("size", [128, 100, 97, 66])
def test_ranks_split_every_global_batch_evenly(size):
    world, batch = 4, 32
    single = list(ShardedBatchSampler(size, batch, True, seed=1))
    shards = [list(ShardedBatchSampler(size, batch, True, seed=1, rank=r, world_size=world)) for r in range(world)]
    assert len({len(s) for s in shards}) == 1
    for step, parts in enumerate(zip(*shards)):
        assert len({len(p) for p in parts}) == 1 and len(parts[0]) >= 2
        joined = torch.cat(parts)
        assert torch.equal(joined, single[step][: len(joined)])  # the same samples, in the same global batch
    dropped = size - sum(len(p) for s in shards for p in s)
    assert dropped < world or (size % batch) // world < 2


def test_batch_that_does_not_split_across_ranks_is_a_config_error():
    with pytest.raises(ConfigError, match="split evenly"):
        ShardedBatchSampler(100, 30, True, 0, rank=0, world_size=4)


def test_single_process_helpers_are_identities():
    cluster = Cluster(0, 1, torch.device("cpu"))
    assert sum_over_ranks({"loss": torch.tensor(2.5), "seen": 3}, cluster) == {"loss": 2.5, "seen": 3.0}
    check_replicas_agree(list(torch.nn.Linear(2, 2).parameters()), cluster, 0)
