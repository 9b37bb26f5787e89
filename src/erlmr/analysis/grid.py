"""Child processes for the runs of a bench grid, which never outlive the bench.

Every run gets a fresh process, so that its peak memory and step time do not depend on the runs before
it. A child leaves the terminal's process group, so that a Ctrl-C reaches the bench alone; the bench
forwards SIGINT or SIGTERM to each running child as one SIGTERM, on which the trainer finishes its step,
saves its state and stops (:class:`erlmr.training.signals.StopSignals`), and re-running the bench
continues those runs exactly.

A child also stops that way when the bench dies without a word (``kill -9``, the OOM killer): each child
holds the reading end of a pipe whose only writing end is the bench's, and a thread of the child blocks
on it; the kernel closes the bench's end when the bench dies, however it dies, the read returns, and the
thread sends its process SIGTERM (and ends it outright if it has not stopped :data:`GRACE_S` seconds
later). ``prctl(PR_SET_PDEATHSIG)`` would not do: a child's parent is the fork server, which outlives the
bench for as long as any child does.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from typing import Any, Callable, Generic, Hashable, TypeVar, cast

import torch

from ..training.signals import StopSignals

#: seconds a child whose bench died has to save its state before it is ended
GRACE_S = 30.0
Key = TypeVar("Key", bound=Hashable)


def process_context() -> multiprocessing.context.BaseContext:
    """A fork server that has imported the trainer once, so that each run starts fast from a clean
    single-threaded process (spawn where fork servers do not exist)."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    # torch imports its compiler stack (seconds) when the first optimiser is made: once here, not per run.
    context.set_forkserver_preload(["erlmr.training.trainer", "torch._dynamo"])
    return context


def stop_self() -> None:
    """SIGTERM to this process (the trainer saves and stops at the end of its step); ended if it lingers."""
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(GRACE_S)
    os._exit(128 + signal.SIGTERM)


def stop_when_closed(bench_alive: multiprocessing.connection.Connection) -> None:
    """Block until the bench's end of the pipe closes (the bench exited or died), then stop this process."""
    try:
        bench_alive.recv_bytes()
    except (EOFError, OSError):
        pass
    stop_self()


def child_main(
    send: multiprocessing.connection.Connection,
    bench_alive: multiprocessing.connection.Connection,
    threads: int,
    task: Callable,
    args: tuple,
) -> None:
    """Run ``task(*args)`` in a child and send back what it returns; it stops when the bench dies."""
    os.setpgid(0, 0)  # out of the terminal's process group: the bench forwards a Ctrl-C, once
    threading.Thread(target=stop_when_closed, args=(bench_alive,), daemon=True, name="watch-bench").start()
    torch.set_num_threads(threads)
    result = task(*args)
    try:
        send.send(result)
    except OSError:  # BrokenPipeError: the bench is gone; the run's state is saved in its folder
        pass


def describe_exit(code: int | None) -> str:
    if code is not None and code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


class ChildRuns(Generic[Key]):
    """Tasks running in child processes, keyed by the caller; :meth:`stop_all` sends each one SIGTERM, once."""

    def __init__(self, context: Any, threads: int):  # a multiprocessing context (BaseContext declares no Process)
        self.context, self.threads = context, threads
        self.running: dict[Key, tuple[multiprocessing.Process, multiprocessing.connection.Connection, Any]] = {}
        self.signalled: set[int] = set()

    def start(self, key: Key, task: Callable, *args: Any) -> None:
        receive, send = self.context.Pipe(duplex=False)
        bench_alive, keep_alive = self.context.Pipe(duplex=False)  # only this process holds keep_alive
        process = self.context.Process(
            target=child_main, args=(send, bench_alive, self.threads, task, args), name=f"erlmr-run-{len(self.running)}"
        )
        process.start()
        send.close()
        bench_alive.close()
        self.running[key] = (process, receive, keep_alive)

    def wait(self) -> tuple[Key, Any, str | None]:
        """(key, what its task returned, None) of the next child to end, or (key, None, how it died)."""
        sentinels = {process.sentinel: key for key, (process, _, _) in self.running.items()}
        key = sentinels[cast(int, multiprocessing.connection.wait(list(sentinels))[0])]
        process, receive, keep_alive = self.running.pop(key)
        process.join()
        keep_alive.close()
        try:
            return key, receive.recv(), None
        except EOFError:  # it died before it could answer
            return key, None, describe_exit(process.exitcode)
        finally:
            receive.close()

    def stop_all(self) -> None:
        for process, _, _ in self.running.values():
            if process.pid is not None and process.pid not in self.signalled:
                self.signalled.add(process.pid)
                process.terminate()


class ForwardedStop(StopSignals):
    """While active, a SIGINT or SIGTERM to this process is recorded and forwarded to every child as SIGTERM;
    a second one interrupts at once (the children then stop at once too, their files consistent)."""

    def __init__(self, children: ChildRuns[Any]):
        super().__init__()
        self.children = children

    def _handle(self, number: int, frame: Any) -> None:
        super()._handle(number, frame)
        self.children.stop_all()
