"""Imbalance metrics, cost measurements, `erlmr eval`, `erlmr bench` and the TensorBoard mirror."""

from __future__ import annotations

import csv
import itertools
import json
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import erlmr.analysis.bench as bench
from erlmr.analysis.cost import PeakMemory, StepTimer, flops_per_sample, parameter_count
from erlmr.analysis.evaluation import evaluate, imbalance_report, subset_accuracies
from erlmr.analysis.metrics import imbalance_degree, shapley_values
from erlmr.cli import main
from erlmr.config import load_config
from erlmr.errors import ConfigError
from erlmr.training.run_folder import RunFolder
from erlmr.training.tensorboard import scalars
from erlmr.training.trainer import Trainer, train
from support import model_for

SMALL = [
    "data.dataset=synthetic",
    "data.options.train_size=160",
    "data.options.test_size=120",
    "data.options.dim=8",
    "model.euler_dim=16",
    "train.batch_size=32",
    "train.quiet=true",
    "train.device=cpu",
]


def small_config(tmp: Path, *extra: str):
    return load_config(None, SMALL + [f"train.run_dir={tmp}", *extra])


@pytest.fixture(scope="module")
def joint_run(tmp_path_factory) -> Path:
    """A joint run on synthetic data where both modalities carry the label."""
    run_dir = tmp_path_factory.mktemp("joint") / "run"
    train(
        small_config(
            run_dir, "method.name=joint", "train.epochs=4", "data.options.strengths=[2.5,2.0]", "optim.lr=0.05"
        )
    )
    return run_dir


@pytest.fixture(scope="module")
def erlmr_run(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("erlmr") / "run"
    train(small_config(run_dir, "method.name=erlmr", "train.epochs=2"))
    return run_dir


def test_shapley_values_of_a_two_player_game():
    value = {frozenset(): 0.1, frozenset({"a"}): 0.5, frozenset({"b"}): 0.3, frozenset({"a", "b"}): 0.9}
    phi = shapley_values(value, ["a", "b"])
    # φ_a = ½(v(a) − v(∅)) + ½(v(ab) − v(b)) = ½·0.4 + ½·0.6
    assert phi == pytest.approx({"a": 0.5, "b": 0.3})
    assert sum(phi.values()) == pytest.approx(value[frozenset({"a", "b"})] - value[frozenset()])


def test_shapley_values_of_three_players_are_efficient_and_symmetric():
    # v depends only on |S| (symmetric players): every player gets an equal share of v(N) − v(∅).
    players = ["x", "y", "z"]
    sizes = {0: 0.25, 1: 0.4, 2: 0.7, 3: 0.85}
    value = {frozenset(s): sizes[len(s)] for r in range(4) for s in itertools.combinations(players, r)}
    phi = shapley_values(value, players)
    assert phi == pytest.approx({p: 0.2 for p in players})
    assert imbalance_degree(phi) == pytest.approx(0.0, abs=1e-12)


def test_imbalance_degree_is_mean_absolute_pairwise_difference():
    assert imbalance_degree({"a": 0.4, "b": 0.4}) == 0.0
    assert imbalance_degree({"a": 0.5, "b": 0.2}) == pytest.approx(0.3)
    assert imbalance_degree({"a": 0.1, "b": 0.3, "c": 0.6}) == pytest.approx((0.2 + 0.5 + 0.3) / 3)


def test_a_modality_the_model_ignores_contributes_nothing(joint_run):
    trainer = Trainer(load_config(joint_run / "config.yaml"))
    trainer.model.load_state_dict(RunFolder(joint_run).load_checkpoint("best.pt")["model"])
    args = (trainer.model, trainer.method, trainer.splits.test, 32, torch.device("cpu"))
    before = imbalance_report(*args)
    assert min(before["contribution"].values()) > 0.02, "both modalities should matter before the ablation"

    with torch.no_grad():  # cut m1 out of the head: its features then never reach the logits
        trainer.model.head.linear.weight[:, trainer.model.head.in_features[0] :] = 0
    after = imbalance_report(*args)
    value = after["subset_accuracy"]
    assert after["contribution"]["m1"] == 0.0
    assert sum(after["contribution"].values()) == pytest.approx(value["m0+m1"] - value["none"])
    assert after["imbalance_degree"] == pytest.approx(after["contribution"]["m0"])
    assert after["missing_modality_accuracy"] == {"m0": value["m1"], "m1": value["m0"]}


@pytest.mark.parametrize("euler", [False, True])
def test_reused_encoder_outputs_give_the_values_of_full_forward_passes(joint_run, euler):
    config = small_config(joint_run)
    trainer = Trainer(config)
    torch.manual_seed(1)
    model = model_for(config.model, trainer.splits, euler).eval()
    split, device = trainer.splits.test, torch.device("cpu")
    calls = Counter()
    for name, encoder in model.encoders.items():
        encoder.register_forward_hook(lambda *args, name=name: calls.update([name]))
    reused = subset_accuracies(model, trainer.method, split, 32, device)
    batches = math.ceil(len(split) / 32)
    assert calls == Counter({m: batches for m in model.modalities})  # each encoder once per batch, not per subset
    assert len(reused) == 2 ** len(model.modalities)
    for subset, value in reused.items():
        absent = [m for m in model.modalities if m not in subset]
        if subset:
            assert value == pytest.approx(evaluate(model, trainer.method, split, 32, device, absent)["accuracy"])
        else:  # the empty coalition: the head on zeros, a constant prediction
            constant = model(next(split.batches(len(split)))[0], absent=model.modalities).logits.argmax(1)
            assert len(set(constant.tolist())) == 1


def test_training_records_imbalance_step_time_and_cost(erlmr_run):
    epochs = [json.loads(line) for line in (erlmr_run / "metrics.jsonl").read_text().splitlines()]
    assert len(epochs) == 2
    for record in epochs:
        assert set(record["val_contribution"]) == {"m0", "m1"}
        assert record["val_imbalance_degree"] == pytest.approx(
            abs(record["val_contribution"]["m0"] - record["val_contribution"]["m1"])
        )
        assert record["step_time_s"] > 0
        assert {"phase_cosine", "pareto_weight_fusion", "pareto_weight_mmc"} <= set(record["method"])
    summary = json.loads((erlmr_run / "summary.json").read_text())
    test = summary["test"]
    value = test["subset_accuracy"]
    assert test["accuracy"] == pytest.approx(value["m0+m1"])
    assert test["missing_modality_accuracy"] == {"m0": value["m1"], "m1": value["m0"]}
    assert sum(test["contribution"].values()) == pytest.approx(value["m0+m1"] - value["none"])
    matrix = np.array(test["confusion_matrix"])
    assert matrix.shape == (4, 4) and matrix.sum() == 120
    assert np.trace(matrix) / matrix.sum() == pytest.approx(test["accuracy"])
    assert "contribution" in summary["val"]
    cost = summary["cost"]
    trainer = Trainer(load_config(erlmr_run / "config.yaml"))
    assert cost["parameters"] == parameter_count(trainer.model, trainer.method) > 0
    assert cost["flops_per_sample"] > 0 and cost["step_time_s"] > 0 and cost["peak_memory_mb"] >= 0
    assert cost["memory_measure"].startswith("cpu_")


def test_flops_per_sample_counts_every_matrix_product():
    config = load_config(
        None,
        SMALL + ["model.encoders={m0: mlp, m1: mlp}", "model.encoder_options={m0: {hidden: 16}, m1: {hidden: 16}}"],
    )
    trainer = Trainer(config)
    model = model_for(config.model, trainer.splits, False)
    # per modality: two 8→16→16 linear layers and the head's 16→4 slice; 2 FLOPs per multiply-add
    expected = 2 * 2 * (8 * 16 + 16 * 16 + 16 * 4)
    assert flops_per_sample(model, trainer.method, trainer.splits.test, torch.device("cpu")) == expected


def test_step_timer_leaves_out_the_first_step():
    ticks = iter([0.0, 10.0, 20.0, 21.0, 30.0, 33.0, 40.0, 42.0])
    timer = StepTimer(torch.device("cpu"), clock=lambda: next(ticks))
    for _ in range(3):
        timer.start()
        timer.stop()
    assert timer.epoch_mean() == pytest.approx(2.0)  # (1 + 3) / 2: the 10 s first step is left out
    timer.start()
    timer.stop()
    assert timer.epoch_mean() == pytest.approx(2.0)
    assert timer.epoch_mean() is None
    assert timer.mean() == pytest.approx(2.0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the CPU peak-RSS reset is Linux-only")
def test_peak_memory_sees_a_freed_allocation():
    meter = PeakMemory(torch.device("cpu"))
    block = np.ones(64 * 2**20, dtype=np.uint8)  # 64 MiB, touched
    del block
    measured = meter.measure()
    assert measured["memory_measure"] == "cpu_peak_rss_growth"
    assert 60 <= measured["peak_memory_mb"] < 200


def test_eval_prints_the_saved_runs_test_metrics(joint_run, capsys):
    summary = json.loads((joint_run / "summary.json").read_text())
    assert main(["eval", str(joint_run), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert f"accuracy {summary['test']['accuracy']:.3f}  macro-F1 {summary['test']['macro_f1']:.3f}" in text
    assert "imbalance degree" in text

    assert main(["eval", str(joint_run), "--drop-modality", "m1", "--json"]) == 0
    dropped = json.loads(capsys.readouterr().out)
    assert dropped["dropped"] == ["m1"]
    assert dropped["accuracy"] == pytest.approx(summary["test"]["missing_modality_accuracy"]["m1"])
    assert set(dropped["modality_accuracy"]) == {"m0"}


def test_eval_on_another_array_folder(joint_run, tmp_path, capsys):
    splits = Trainer(load_config(joint_run / "config.yaml")).splits
    for name in ("train", "test"):
        split = getattr(splits, name)
        np.savez(
            tmp_path / f"{name}.npz", label=split.labels.numpy(), **{m: x.numpy() for m, x in split.inputs.items()}
        )
    assert main(["eval", str(joint_run), "--data", str(tmp_path), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    summary = json.loads((joint_run / "summary.json").read_text())
    assert result["accuracy"] == pytest.approx(summary["test"]["accuracy"])
    assert result["contribution"] == pytest.approx(summary["test"]["contribution"])

    other = tmp_path / "renamed"
    other.mkdir()
    for name in ("train", "test"):
        split = getattr(splits, name)
        np.savez(
            other / f"{name}.npz",
            label=split.labels.numpy(),
            audio=split.inputs["m0"].numpy(),
            image=split.inputs["m1"].numpy(),
        )
    assert main(["eval", str(joint_run), "--data", str(other)]) == 2
    assert "trained on modalities ['m0', 'm1'] but the data has ['audio', 'image']" in capsys.readouterr().err


def test_eval_rejects_bad_input_with_one_message(joint_run, tmp_path, capsys):
    assert main(["eval", str(joint_run), "--drop-modality", "depth"]) == 2
    assert "cannot drop ['depth']: the run's modalities are ['m0', 'm1']" in capsys.readouterr().err
    assert main(["eval", str(joint_run), "--drop-modality", "m0", "--drop-modality", "m1"]) == 2
    assert "keep at least one" in capsys.readouterr().err
    assert main(["eval", str(tmp_path)]) == 2
    assert "is not a run folder" in capsys.readouterr().err


def test_bench_table_reports_step_time_relative_to_joint():
    def row(method, seed, step):
        return {
            "dataset": "d",
            "method": method,
            "seed": seed,
            "accuracy": 0.5,
            "macro_f1": 0.4,
            "acc_a": 0.3,
            "acc_without_a": 0.1,
            "imbalance_degree": 0.2,
            "step_time_s": step,
        }

    table = bench.markdown_table(
        [row("joint", 0, 0.01), row("joint", 1, 0.03), row("erlmr", 0, 0.06), row("erlmr", 1, 0.06)]
    )
    lines = table.splitlines()
    assert lines[2].startswith(
        "| method | seeds | accuracy | macro-F1 | a accuracy | imbalance degree | step time ÷ joint |"
    )
    assert lines[4].startswith(
        "| joint | 2 | 0.500 ± 0.000 | 0.400 ± 0.000 | 0.300 ± 0.000 | 0.200 ± 0.000 | 1.00 ± 0.71 |"
    )
    assert "| 3.00 ± 0.00 |" in lines[5]


def test_bench_runs_the_grid_in_processes_and_skips_finished_runs(tmp_path, monkeypatch):
    overrides = [k for k in SMALL if not k.startswith("data.dataset")] + ["train.epochs=1"]
    methods = bench.parse_methods("joint,unimodal[modality=m1],no_such_method")
    assert methods == ["joint", "unimodal[modality=m1]", "no_such_method"]
    result = bench.run_bench(["synthetic"], methods, 1, tmp_path, None, overrides, jobs=2, progress=False)
    assert list(result.failures) == [("synthetic", "no_such_method", 0)]
    assert "unknown method 'no_such_method'" in result.failures[("synthetic", "no_such_method", 0)]
    assert result.files == [tmp_path / "results.md", tmp_path / "results.csv", tmp_path / "bench.json"]
    summary_path = tmp_path / "synthetic" / "joint" / "seed0" / "summary.json"
    stamp = summary_path.stat().st_mtime_ns
    csv_lines = (tmp_path / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 3 and csv_lines[1].startswith(
        '"synthetic (dim=8, test_size=120, train_size=160)",joint,0,'
    )
    markdown = (tmp_path / "results.md").read_text()
    assert "| joint | 1 |" in markdown and "1.00 ± 0.00" in markdown and "no_such_method" in markdown
    assert "| unimodal (modality=m1) | 1 |" in markdown
    unimodal = json.loads((tmp_path / "synthetic" / "unimodal_modality=m1" / "seed0" / "summary.json").read_text())
    assert unimodal["test"]["contribution"]["m0"] == 0.0  # unimodal on m1 never looks at m0
    assert "- command: `erlmr bench`" in markdown and "- machine: " in markdown

    def no_process(*args, **kwargs):
        raise AssertionError("a finished run was started again")

    monkeypatch.setattr(bench.ChildRuns, "start", no_process)
    result = bench.run_bench(["synthetic"], ["joint"], 1, tmp_path, None, overrides, progress=False)
    assert result.failures == {} and "| joint | 1 |" in result.table
    assert summary_path.stat().st_mtime_ns == stamp


def test_bench_method_options_need_the_documented_form():
    assert bench.method_overrides("unimodal[modality=audio]") == [
        "method.name=unimodal",
        "method.options.modality=audio",
    ]
    assert bench.method_overrides("erlmr+ogm_ge") == ["method.name=erlmr+ogm_ge"]
    for bad in ("unimodal[modality]", "joint]", "a b"):
        with pytest.raises(ConfigError, match=r"NAME\[option=value,...\]"):
            bench.method_overrides(bad)
    assert bench.run_dir_for(Path("o"), "d", "erlmr+ogm_ge", 0) == Path("o/d/erlmr_ogm_ge/seed0")


def test_a_grid_method_may_set_config_keys_and_is_labelled_by_its_spec(tmp_path):
    assert bench.method_overrides("erlmr[model.euler=false,pareto=false]") == [
        "method.name=erlmr",
        "model.euler=false",
        "method.options.pareto=false",
    ]
    overrides = ["data.options.train_size=64", "data.options.test_size=32", "train.epochs=1", "train.device=cpu"]
    bench.run_bench(
        ["synthetic"], ["joint", "joint[model.fusion=sum]"], 1, tmp_path, overrides=overrides, progress=False
    )
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert {r["method"] for r in rows} == {"joint", "joint[model.fusion=sum]"}
    config = (tmp_path / "synthetic" / "joint_model.fusion=sum" / "seed0" / "config.yaml").read_text()
    assert "fusion: sum" in config


def test_tensorboard_mirrors_the_epoch_records(tmp_path):
    pytest.importorskip("tensorboard", reason="the optional tensorboard package is not installed")
    run_dir = tmp_path / "run"
    train(small_config(run_dir, "method.name=joint", "train.epochs=2", "train.tensorboard=true"))
    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run_dir / "tensorboard"))
    accumulator.Reload()
    tags = accumulator.Tags()["scalars"]
    assert {"val_accuracy", "val_contribution/m0", "val_imbalance_degree", "train_loss"} <= set(tags)
    assert [e.step for e in accumulator.Scalars("val_accuracy")] == [0, 1]


def test_scalars_flattens_nested_records():
    record = {"epoch": 3, "val_contribution": {"a": 0.25}, "method": {"w": 1}, "flag": True, "note": "x", "none": None}
    assert dict(scalars(record)) == {"epoch": 3.0, "val_contribution/a": 0.25, "method/w": 1.0}
