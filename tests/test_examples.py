"""The README's own-loop example runs as shown and learns."""
import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "plain_loop.py"


def test_the_own_loop_example_runs_and_its_losses_fall():
    done = subprocess.run([sys.executable, str(EXAMPLE)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    losses = [float(x) for x in re.findall(r"fusion CE ([\d.]+)", done.stdout)]
    assert len(losses) == 20 and losses[-1] < 0.5 * losses[0]
