"""Runs ``erlmr train`` commands one after another, recording every gradient the optimiser applies.

tests/test_ddp.py launches it under torchrun (and calls :func:`run_commands` in-process for the
single-process reference)::

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/ddp_worker.py OUT '[["train", ...], ...]'

Rank r writes its commands' exit codes to ``OUT/codes-rank{r}.json``. For command i, rank r saves
``OUT/run{i}-rank{r}.pt``: a (steps, parameters) tensor of the norm of
every parameter's gradient as the optimiser applied it (read after each step, so after the averaging
over ranks and after the method's own coefficients). Identical rows on every rank mean every rank
applied the same coefficients.
The worker also registers ``rank_local_scale``, a deliberately wrong method whose coefficient depends on
the rank, to show that the trainer's replica check catches such a method.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from torch.optim.optimizer import register_optimizer_step_post_hook

from erlmr.cli import main
from erlmr.methods import METHODS, Method


@METHODS.register("rank_local_scale", "test only: scales gradients by 1 + rank (what a method must never do)")
class RankLocalScale(Method):
    def modify_gradients(self, model, result, labels) -> None:
        torch._foreach_mul_([p.grad for p in model.parameters() if p.grad is not None], 1.0 + dist.get_rank())


def run_commands(out: Path, commands: list[list[str]]) -> list[int]:
    codes = []
    for index, argv in enumerate(commands):
        applied: list[torch.Tensor] = []

        def record(optimizer, args, kwargs, applied=applied) -> None:
            # Every parameter, 0 where it has no gradient this step: a phased method trains different parts.
            params = [p for group in optimizer.param_groups for p in group["params"]]
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            applied.append(torch.stack(torch._foreach_norm(grads)).double())

        handle = register_optimizer_step_post_hook(record)
        try:
            codes.append(main(argv))
        finally:
            handle.remove()
        steps = torch.stack(applied) if applied else torch.empty(0)
        torch.save(steps, out / f"run{index}-rank{os.environ.get('RANK', '0')}.pt")
    return codes


if __name__ == "__main__":
    out = Path(sys.argv[1])
    codes = run_commands(out, json.loads(sys.argv[2]))
    # A file per rank: two ranks printing to one stdout can interleave their lines.
    (out / f"codes-rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(codes))
