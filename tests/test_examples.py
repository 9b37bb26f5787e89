"""The README's examples run as shown and learn: the own loop, and Lightning."""

import re
import runpy
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plain_loop.py"


def test_the_own_loop_example_runs_and_its_losses_fall():
    done = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    losses = [float(x) for x in re.findall(r"fusion CE ([\d.]+)", done.stdout)]
    assert len(losses) == 20 and losses[-1] < 0.5 * losses[0]


def test_the_lightning_example_learns_basicmotions_and_logs_the_imbalance_metrics(capsys, monkeypatch, tmp_path):
    """Run in this process: the example is the README's Lightning section, 8 epochs on BasicMotions."""
    monkeypatch.chdir(tmp_path)  # where Lightning writes its checkpoint
    run = runpy.run_path(str(EXAMPLE.parent / "lightning_basicmotions.py"))
    metrics = run["metrics"]
    assert metrics["test/accuracy"] >= 0.9 and metrics["val_accuracy"] >= 0.9
    logged = {"val_contribution/acc", "val_contribution/gyro", "val_imbalance_degree", "test/contribution/gyro"}
    assert logged <= set(metrics)
    assert "'test/accuracy'" in capsys.readouterr().out
    assert list((tmp_path / "checkpoints").glob("epoch=7-*.ckpt"))
