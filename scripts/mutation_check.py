"""Does a method's test file test its mechanism? Degrade the method to joint training (every hook it
overrides replaced by the base Method's) and run its own tests: some must fail.

    PYTHONPATH=src .venv/bin/python scripts/mutation_check.py greedy cggm aug
"""

from __future__ import annotations

import subprocess
import sys

HOOKS = ("training_step", "modify_gradients", "on_epoch_end", "on_epoch_start", "predict", "epoch_samples")

CHILD = """
import sys
import pytest
from erlmr.methods import METHODS
from erlmr.methods.base import Method
name, hooks = sys.argv[1], sys.argv[2].split(",")
cls = METHODS.get(name)
replaced = sorted({h for klass in cls.__mro__[: cls.__mro__.index(Method)] for h in hooks if h in klass.__dict__})
for hook in replaced:
    setattr(cls, hook, getattr(Method, hook))
print("replaced:", ", ".join(replaced) or "nothing")
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", f"tests/methods/test_{name}.py"]))
"""


def main(names: list[str]) -> int:
    undetected = []
    for name in names:
        # one process per method: the replaced hooks must not leak into the next method's tests
        code = subprocess.run([sys.executable, "-c", CHILD, name, ",".join(HOOKS)]).returncode
        detected = code == 1  # 1: some tests failed; 0: none did; other codes: the run itself broke
        print(f"{name}: {'detected' if detected else 'NOT detected' if code == 0 else f'pytest exit {code}'}")
        undetected += [] if detected else [name]
    return 1 if undetected else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
