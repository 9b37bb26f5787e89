"""`erlmr tune`: search spaces, the shared trial budget, killed workers, pruning, bench --tuned, shards."""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from erlmr.analysis import bench
from erlmr.cli import main
from erlmr.config import parse_override, yaml_value
from erlmr.errors import ConfigError
from erlmr.methods import METHODS
from erlmr.options import (
    CheckedOptions,
    Choice,
    Uniform,
    int_range,
    log_uniform,
    one_of,
    parse_distribution,
    ranged,
    search_space,
)
from erlmr.tuning.space import check_user_space, method_space, read_user_space

optuna = pytest.importorskip("optuna", reason="erlmr tune needs Optuna: pip install 'erlmr[tuning]'")

SRC = Path(__file__).resolve().parents[2] / "src"
SMALL = [
    "--dataset",
    "synthetic",
    "--epochs",
    "2",
    "--batch-size",
    "32",
    "--device",
    "cpu",
    "--quiet",
    "--set",
    "data.options.train_size=320",
    "--set",
    "data.options.test_size=60",
    "--set",
    "data.options.dim=8",
]


def tune_args(out: Path, *extra: str, method: str = "joint", trials: int = 4) -> list[str]:
    return ["tune", *SMALL, "--method", method, "--trials", str(trials), "--out", str(out), *extra]


def study_of(storage: str, method: str = "joint"):
    names = [n for n in optuna.get_all_study_names(storage) if n.endswith(f"/{method}")]
    assert len(names) == 1, names
    return optuna.load_study(study_name=names[0], storage=storage)


def sqlite(out: Path) -> str:
    return f"sqlite:///{out / 'study.db'}"


def states(study) -> list[str]:
    return [t.state.name for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("erlmr:surplus")]


def worker(out: Path, *extra: str, trials: int = 4) -> subprocess.Popen:
    """An `erlmr tune` process of its own, as another host would run it."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "erlmr", *tune_args(out, "--no-prune", *extra, trials=trials)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


# --- search spaces ------------------------------------------------------------------------------------------


def test_a_field_declares_its_search_range_beside_its_bounds():
    @dataclass
    class Options(CheckedOptions):
        alpha: float = ranged(0.1, ge=0, search=log_uniform(0.01, 1.0))
        floor: float = ranged(0.001, ge=0, lt=0.5)
        window: int = ranged(4, ge=1, search=int_range(2, 8))
        mode: str = one_of("a", ("a", "b", "c"), search=("a", "b"))

    space = search_space(Options)
    assert space == {"alpha": Uniform(0.01, 1.0, log=True), "window": int_range(2, 8), "mode": Choice(("a", "b"))}

    @dataclass
    class Leaves(CheckedOptions):
        floor: float = ranged(0.001, ge=0, lt=0.5, search=Uniform(0.0, 0.5))

    with pytest.raises(
        ConfigError, match=r"leaves the valid values: option leaves.floor must be >= 0 and < 0.5, got 0.5"
    ):
        search_space(Leaves, "leaves")

    @dataclass
    class WrongType(CheckedOptions):
        window: int = ranged(4, ge=1, search=log_uniform(1.0, 8.0))

    with pytest.raises(ConfigError, match="does not fit w.window, of type int"):
        search_space(WrongType, "w")

    @dataclass
    class NotAChoice(CheckedOptions):
        mode: str = one_of("a", ("a", "b"), search=("a", "z"))

    with pytest.raises(ConfigError, match="leaves the valid values: option o.mode is 'z'"):
        search_space(NotAChoice, "o")


def test_every_registered_method_declares_a_valid_space():
    for name in METHODS:
        space = method_space(name, {}, {})
        assert {"optim.lr", "optim.weight_decay"} <= set(space), name
    assert set(method_space("ogm_ge", {}, {})) == {"optim.lr", "optim.weight_decay", "method.options.alpha"}
    composed = method_space("erlmr+ogm_ge", {}, {})
    assert {"method.options.erlmr.phase_weight", "method.options.ogm_ge.alpha"} <= set(composed)


def test_distributions_read_from_text_and_refuse_empty_or_inverted_ranges():
    assert parse_distribution("log_uniform(0.05, 0.5)") == Uniform(0.05, 0.5, log=True)
    assert parse_distribution("choice('loss+', none)") == Choice(("loss+", "none"))
    assert parse_distribution("log_uniform(1e-5, 1e-2)") == Uniform(1e-5, 1e-2, log=True)  # YAML 1.1 wants 1.0e-5
    assert parse_override("optim.lr=1e-5") == (["optim", "lr"], 1e-5) and parse_override("a='1e-5'")[1] == "1e-5"
    assert parse_override(f"optim.lr={yaml_value(1e-7)}")[1] == 1e-7
    for text, problem in [
        ("uniform(0.5, 0.1)", "empty or inverted"),
        ("uniform(1, 1)", "empty or inverted"),
        ("log_uniform(0, 1)", "needs low > 0"),
        ("int_range(3, 1)", "empty or inverted"),
        ("choice(1, 1)", "fewer than two"),
        ("normal(0, 1)", "is not one of"),
        ("uniform(1)", "bad arguments"),
    ]:
        with pytest.raises(ConfigError, match=problem):
            parse_distribution(text)


def test_the_user_overrides_and_extends_a_space_from_the_config_and_the_command_line(tmp_path):
    config = tmp_path / "tune.yaml"
    config.write_text("tune:\n  space:\n    optim.weight_decay: fixed\n    ogm_ge.alpha: log_uniform(0.2, 0.5)\n")
    user = read_user_space(str(config), ["optim.momentum=uniform(0.5, 0.95)", "ogm_ge.alpha=log_uniform(0.05, 0.3)"])
    check_user_space(user)
    space = method_space("ogm_ge", {}, user)
    assert space == {
        "optim.lr": log_uniform(1e-3, 1e-1),
        "optim.momentum": Uniform(0.5, 0.95),
        "method.options.alpha": Uniform(0.05, 0.3, log=True),
    }
    assert "method.options.alpha" not in method_space("joint", {}, user)
    assert method_space("erlmr+ogm_ge", {}, user)["method.options.ogm_ge.alpha"] == Uniform(0.05, 0.3, log=True)


@pytest.mark.parametrize(
    "entry, problem",
    [
        ("ogmx.alpha=log_uniform(0.1,1)", "'ogmx' is neither a registered method"),
        (
            "ogm_ge.alpah=log_uniform(0.1,1)",
            "method 'ogm_ge' has no option 'alpah'; its options: modulation_start, modulation_end, alpha",
        ),
        ("ogm_ge.alpha=uniform(-1, 1)", "leaves the valid values"),
        ("optim.lr=uniform(0, 0.1)", "optim.lr must be > 0"),
        ("optim.lrr=uniform(0.1, 0.2)", "unknown config key 'lrr'"),
        ("erlmr.normalization=choice('l2', 'l3')", "normalization is 'l3'"),
        ("train.epochs=uniform(1, 5)", "does not fit train.epochs, of type int"),
        ("optim.lr=log_uniform(0.1, 0.01)", "empty or inverted"),
    ],
)
def test_a_bad_space_is_refused_before_any_trial(tmp_path, capsys, entry, problem):
    assert main(tune_args(tmp_path / "out", "--space", entry)) == 2
    assert problem in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# --- bad input: refused before any trial -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "extra, problem",
    [
        (["--metric", "test_accuracy"], "--metric test_accuracy is a test-split quantity"),
        (["--metric", "val_loss_x"], "unknown --metric 'val_loss_x'"),
        (["--storage", "nosuchdb://host/x"], "cannot open the study storage nosuchdb://host/x"),
        (["--storage", "postgresql://user:secret@127.0.0.1:9/db"], "cannot open the study storage"),
        (["--storage", "journal:///no/such/folder/tune.log"], "folder /no/such/folder does not exist"),
    ],
)
def test_bad_metric_or_storage_is_a_clear_error_before_any_trial(tmp_path, capsys, extra, problem):
    assert main(tune_args(tmp_path / "out", *extra)) == 2
    err = capsys.readouterr().err
    assert problem in err and "secret" not in err and "Traceback" not in err
    assert not list(tmp_path.rglob("trial*"))


# --- one worker ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tuned(tmp_path_factory) -> Path:
    """A 4-trial study of joint on synthetic, SQLite storage, no pruning."""
    out = tmp_path_factory.mktemp("tune")
    assert main(tune_args(out, "--no-prune")) == 0
    return out


def test_a_four_trial_tune_writes_every_trial_and_finds_a_better_score_than_the_worst(tuned):
    study = study_of(sqlite(tuned))
    trials = study.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert trials[0].user_attrs["erlmr:default"] and trials[0].params == {"optim.lr": 0.01, "optim.weight_decay": 1e-4}
    values = [t.value for t in trials]
    assert study.best_value == max(values) > min(values)
    for t in trials:
        run = tuned / "synthetic" / "joint" / f"trial{t.number}"
        summary = json.loads((run / "summary.json").read_text())
        assert summary["val"]["accuracy"] == t.value and "test" not in summary  # never seen while tuning
        assert "skipped" in summary["linear_probe"] and not (run / "feature_maps.npz").exists()  # both read test
        marker = json.loads((run / "trial.json").read_text())
        assert marker["state"] == "COMPLETE" and marker["params"] == t.params
        assert len(t.intermediate_values) == 2  # the trainer's per-epoch hook reported both epochs
    record = json.loads((tuned / "tuning.json").read_text())["studies"][0]
    assert record["best"]["number"] == study.best_trial.number and record["budget"] == 4
    assert "| joint | 4/0/0 of 4 |" in (tuned / "tuning.md").read_text()


def test_a_rerun_resumes_the_study_and_refuses_other_settings(tuned, capsys):
    assert main(tune_args(tuned, "--no-prune")) == 0  # the budget is spent: nothing runs
    assert len(study_of(sqlite(tuned)).trials) == 4
    assert main(tune_args(tuned, "--no-prune", "--space", "optim.momentum=uniform(0.5, 0.9)")) == 2
    assert "was made with other settings (space.optim.momentum" in capsys.readouterr().err
    assert len(study_of(sqlite(tuned)).trials) == 4


def test_bench_tuned_trains_the_best_setting_and_the_report_compares_it_with_the_defaults(tuned, tmp_path):
    out = tmp_path / "bench"
    assert main(["bench", "--tuned", str(tuned), "--seeds", "1", "--out", str(out), "--quiet"]) == 0
    best = study_of(sqlite(tuned)).best_trial
    run = out / "synthetic" / "joint-tuned" / "seed0"
    summary = json.loads((run / "summary.json").read_text())
    assert json.loads((run / "tuned.json").read_text())["params"] == best.params
    # Seed 0 at the best setting is the best trial again (training is deterministic on CPU).
    assert summary["val"]["accuracy"] == best.value
    default = json.loads((out / "synthetic" / "joint" / "seed0" / "summary.json").read_text())
    assert default["val"]["accuracy"] == study_of(sqlite(tuned)).trials[0].value
    results = (out / "results.md").read_text()
    assert "| joint (tuned) | 1 |" in results and "default against tuned" in results
    assert main(["report", str(out)]) == 0
    html = (out / "report" / "report.html").read_text()
    assert "Default against tuned" in html and "tuning-trials.png" in html and "joint (tuned)" in html


def test_bench_tuned_copies_the_default_runs_where_the_defaults_won(tmp_path):
    """A study whose best trial is its first (the defaults) has nothing new to train: the tuned rows are the
    default runs, copied and marked, and the comparison says so."""
    tune_out, out = tmp_path / "tune", tmp_path / "bench"
    hopeless = ["--space", "optim.lr=log_uniform(1e-7, 1e-6)", "--space", "optim.weight_decay=log_uniform(1e-5, 1e-4)"]
    assert main(tune_args(tune_out, "--no-prune", *hopeless, trials=2)) == 0
    assert study_of(sqlite(tune_out)).best_trial.number == 0
    assert main(["bench", "--tuned", str(tune_out), "--seeds", "2", "--out", str(out), "--quiet"]) == 0
    for seed in (0, 1):
        default, tuned = (out / "synthetic" / folder / f"seed{seed}" for folder in ("joint", "joint-tuned"))
        # The measured step time too: the tuned run was not trained again.
        assert json.loads((tuned / "summary.json").read_text()) == json.loads((default / "summary.json").read_text())
        assert json.loads((tuned / "tuned.json").read_text())["copied_from"] == "joint"
        assert not (default / "tuned.json").exists()
    results = (out / "results.md").read_text()
    assert "| joint (defaults best) | 2/2 |" in results and "| joint (tuned) | 2 |" in results


def test_pruning_stops_a_hopeless_trial_early(tmp_path):
    out = tmp_path / "out"
    flags = [
        "--epochs",
        "3",
        "--prune-startup",
        "1",
        "--prune-warmup",
        "0",
        "--space",
        "optim.lr=log_uniform(1e-6, 0.1)",
    ]
    assert main(tune_args(out, *flags, trials=1)) == 0  # trial 0: the defaults, a good run
    study = study_of(sqlite(out))
    study.enqueue_trial({"optim.lr": 1e-6, "optim.weight_decay": 1e-4})  # trial 1: a learning rate that learns nothing
    assert main(tune_args(out, *flags, trials=2)) == 0
    trials = study_of(sqlite(out)).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"]
    run = out / "synthetic" / "joint" / "trial1"
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1  # stopped after its first of 3 epochs
    assert not (run / "summary.json").exists() and (run / "last.pt").exists()
    assert json.loads((run / "trial.json").read_text())["state"] == "PRUNED"


# --- several workers --------------------------------------------------------------------------------------------


def test_two_concurrent_workers_run_exactly_the_budget_in_distinct_trials(tmp_path):
    out = tmp_path / "out"
    workers = [worker(out), worker(out)]
    logs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], logs
    trials = [t for t in study_of(sqlite(out)).trials if not t.user_attrs.get("erlmr:surplus")]
    assert [t.state.name for t in trials] == ["COMPLETE"] * 4
    assert len({t.number for t in trials}) == 4
    folders = sorted(p.name for p in (out / "synthetic" / "joint").iterdir())
    assert folders == [f"trial{t.number}" for t in trials]
    assert all((out / "synthetic" / "joint" / f / "summary.json").exists() for f in folders)


@pytest.mark.parametrize("storage", ["sqlite", "journal"])
def test_a_killed_worker_loses_only_its_running_trial(tmp_path, storage):
    out = tmp_path / "out"
    url = sqlite(out) if storage == "sqlite" else f"journal:///{tmp_path / 'tune.log'}"
    flags = ["--storage", url, "--heartbeat", "1", "--epochs", "6"]
    victim = worker(out, *flags, trials=2)
    metrics = out / "synthetic" / "joint" / "trial0" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while not (metrics.exists() and metrics.read_text().count("\n") >= 1) and time.monotonic() < deadline:
        time.sleep(0.1)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=30)
    storage_object = (
        optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(tmp_path / "tune.log")))
        if storage == "journal"
        else url
    )
    assert states(study_of(storage_object)) == ["RUNNING"]
    # The next worker runs trial 1, waits for trial 0 until three heartbeats are missed, then replaces it.
    assert main(tune_args(out, "--no-prune", *flags, trials=2)) == 0
    study = study_of(storage_object)
    assert states(study) == ["FAIL", "COMPLETE", "COMPLETE"]
    assert not (out / "synthetic" / "joint" / "trial0" / "summary.json").exists()


# --- shards -----------------------------------------------------------------------------------------------------------


def test_shards_partition_the_grid_exactly():
    grid = [(d, bench.grid_method(m), s) for d in ("a", "b") for m in ("joint", "erlmr", "ogm") for s in range(3)]
    for count in range(1, 7):
        shares = [bench.shard_of(grid, (index, count)) for index in range(1, count + 1)]
        flat = [entry for share in shares for entry in share]
        assert sorted(flat, key=grid.index) == grid and len(flat) == len(set(flat))  # union = grid, no overlap
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
    assert bench.shard_of(grid, (2, 3)) == bench.shard_of(list(grid), (2, 3))  # deterministic
    for bad in ("0/4", "5/4", "1/0", "a/b", "2"):
        with pytest.raises(ConfigError, match="must look like I/N with 1 <= I <= N"):
            bench.parse_shard(bad)


def test_shards_write_one_folder_and_the_table_merges_them(tmp_path, capsys):
    flags = [
        "bench",
        "--datasets",
        "synthetic",
        "--methods",
        "joint",
        "--seeds",
        "2",
        "--epochs",
        "1",
        "--set",
        "data.options.train_size=160",
        "--set",
        "data.options.test_size=60",
        "--out",
        str(tmp_path),
        "--quiet",
    ]
    assert main([*flags, "--shard", "2/2"]) == 0
    assert (tmp_path / "synthetic" / "joint" / "seed1" / "summary.json").exists()
    assert not (tmp_path / "synthetic" / "joint" / "seed0").exists()
    assert "| joint | 1 |" in (tmp_path / "results.md").read_text()
    assert main([*flags, "--shard", "1/2"]) == 0
    assert "| joint | 2 |" in (tmp_path / "results.md").read_text()
    assert json.loads((tmp_path / "bench.json").read_text())["shard"] == "1/2"


# --- PostgreSQL -------------------------------------------------------------------------------------------------


def postgres_binaries() -> Path | None:
    """The folder of initdb and pg_ctl: Debian keeps them in /usr/lib/postgresql/<version>/bin."""
    folders = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
    )
    on_path = shutil.which("pg_ctl")
    candidates = [Path(p) for p in reversed(folders)] + ([Path(on_path).parent] if on_path else [])
    return next((c for c in candidates if (c / "initdb").exists() and (c / "pg_ctl").exists()), None)


@pytest.fixture
def postgres_url():
    """A PostgreSQL server of its own on a free loopback port, in a temporary folder; stopped afterwards.
    The server refuses to run as root, so as root it runs as the user nobody."""
    binaries = postgres_binaries()
    if binaries is None:
        pytest.skip(
            "PostgreSQL is not installed (initdb, pg_ctl): scripts/setup.sh installs Debian's postgresql as root"
        )
    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is None:
        pytest.skip("no PostgreSQL driver for Python: pip install 'erlmr[postgres]'")
    folder = Path(tempfile.mkdtemp(prefix="erlmr-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
        shutil.chown(folder, "nobody")
        as_user = ["runuser", "-u", "nobody", "--"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = folder / "data"
    try:
        init = subprocess.run(
            [*as_user, binaries / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if init.returncode != 0:
            pytest.skip(f"initdb failed: {init.stderr.strip().splitlines()[-1:]}")
        start = subprocess.run(
            [
                *as_user,
                binaries / "pg_ctl",
                "-D",
                data,
                "-l",
                folder / "server.log",
                "-w",
                "-t",
                "60",
                "-o",
                f"-h 127.0.0.1 -p {port} -k {folder} -F",
                "start",
            ],
            check=False,
            capture_output=True,
            text=True,
        )
        if start.returncode != 0:
            pytest.skip(f"the PostgreSQL server did not start: {start.stderr.strip() or start.stdout.strip()}")
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*as_user, binaries / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"],
            check=False,
            capture_output=True,
        )
        shutil.rmtree(folder, ignore_errors=True)


def test_two_workers_share_a_study_on_a_real_postgresql_server(tmp_path, postgres_url):
    out = tmp_path / "out"
    workers = [worker(out, "--storage", postgres_url, trials=3), worker(out, "--storage", postgres_url, trials=3)]
    logs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], logs
    from erlmr.tuning.storage import with_driver

    trials = [t for t in study_of(with_driver(postgres_url)).trials if not t.user_attrs.get("erlmr:surplus")]
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3 and len({t.number for t in trials}) == 3
    assert sorted(p.name for p in (out / "synthetic" / "joint").iterdir()) == [f"trial{t.number}" for t in trials]


def test_bench_tuned_refuses_a_study_that_is_still_running(tuned, tmp_path):
    from erlmr.errors import DataError
    from erlmr.tuning.results import check_finished, load_tuning

    records = load_tuning(str(tuned))
    check_finished(records, str(tuned))
    running = [{**records[0], "trials": records[0]["trials"][:3] + [{**records[0]["trials"][3], "state": "RUNNING"}]}]
    with pytest.raises(DataError, match=r"not finished: .*joint \(3 of 4 trials done, 1 running\)"):
        check_finished(running, str(tuned))


def test_without_optuna_tune_names_the_extra_before_any_trial(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    assert main(tune_args(tmp_path / "out")) == 2
    assert "erlmr tune needs optuna: pip install 'erlmr[tuning]'" in capsys.readouterr().err
    assert not list(tmp_path.rglob("trial*"))
