"""Where suspects are built: in this process, in a local process pool, or on a Ray cluster.

Every executor runs the same job function on picklable job descriptions and hands each result back as soon as it
is done, so the caller can record progress (and a killed build loses only the suspects in flight).

Every executor runs a job with the same number of torch threads (one by default): two torch processes with two
threads each on two cores slow each other down (4.8x, bench/threads.py), and a CPU run's floating-point sums
depend on how many threads share them, so a suspect built with one thread count is not bit-identical to one built
with another. With equal thread counts the in-process, pool and Ray executors build identical suspects.

A build that stops early (an exception in this process, such as ``KeyboardInterrupt`` on SIGINT or whatever a
SIGTERM handler raises, or a failed job) leaves no process behind: the pool cancels the jobs not yet started and
terminates its workers (killing those that do not end within seconds) and joins them before the exception goes on;
pool workers ignore SIGINT (a Ctrl+C reaches the whole process group: this process decides) and end with it if it
dies (Linux); a Ray instance started here is shut down, and on a cluster the jobs in flight are cancelled. What
was finished is on disk and a rerun resumes from it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Any, Callable, Iterable, Iterator

from ..errors import InputError

Job = dict[str, Any]
Result = dict[str, Any]

EXECUTORS = ("inprocess", "pool", "ray")


def run_jobs(
    fn: Callable[[Job], Result],
    jobs: Iterable[Job],
    *,
    executor: str = "inprocess",
    workers: int = 2,
    ray_address: str | None = None,
    threads_per_worker: int = 1,
    on_result: Callable[[Result], None] = lambda result: None,
) -> list[Result]:
    """Run ``fn`` on every job with the chosen executor; call ``on_result`` as each one finishes.

    Args:
        fn: a module-level function (it is pickled for pool and Ray workers).
        jobs: job descriptions (plain, picklable data).
        executor: ``"inprocess"``, ``"pool"`` or ``"ray"``.
        workers: pool processes, or CPUs of a Ray instance started here.
        ray_address: address of an existing Ray cluster (``"auto"`` or ``"ray://host:port"``); a local instance is
            started when None.
        threads_per_worker: torch threads of each job, whichever the executor (the in-process executor sets them
            for the job and restores them after).
        on_result: called in this process with each result, in completion order.

    Returns:
        The results in completion order.
    """
    jobs = list(jobs)
    if executor not in EXECUTORS:
        raise InputError(f"executor must be one of {', '.join(EXECUTORS)}, got {executor!r}")
    if not jobs:
        return []
    runner = {"inprocess": _run_inprocess, "pool": _run_pool, "ray": _run_ray}[executor]
    return runner(fn, jobs, workers=workers, ray_address=ray_address, threads=threads_per_worker, on_result=on_result)


def _run_inprocess(fn, jobs, *, threads, on_result, **_) -> list[Result]:
    import torch

    results = []
    before = torch.get_num_threads()
    try:
        for job in jobs:
            torch.set_num_threads(threads)
            result = fn(job)
            on_result(result)
            results.append(result)
    finally:
        torch.set_num_threads(before)
    return results


def _limit_threads(threads: int) -> None:
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def _init_worker(threads: int, parent: int) -> None:
    """Set up a pool worker: its torch threads, SIGINT left to the parent, and (Linux) a SIGTERM when the parent dies.

    Args:
        threads: torch threads of each job.
        parent: the process id of the process that started the pool.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _end_worker)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the line above took effect
        os._exit(1)
    _limit_threads(threads)


def _end_worker(signum: int, frame: object) -> None:
    """SIGTERM in a pool worker: release the semaphores it made (tqdm's lock, say), which the resource tracker would
    otherwise report as leaked, and end at once.

    Args:
        signum: the signal's number.
        frame: unused.
    """
    from multiprocessing import util

    util._run_finalizers(0)  # type: ignore[attr-defined]  # what a worker's normal exit runs: SemLock clean-ups
    os._exit(128 + signum)


#: Seconds a terminated pool worker is given to end before it is killed.
GRACE_SECONDS = 5.0


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT and SIGTERM back (in the main thread) while a clean-up runs; they are delivered after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """End a pool now: cancel the jobs not started, terminate the workers (kill those still alive after
    :data:`GRACE_SECONDS`) and join them and the pool's manager thread.

    Args:
        pool: the pool to stop.
    """
    with _signals_held():
        processes = pool._processes if pool._processes is not None else {}  # the manager thread adds to this same dict
        started = list(processes.values())
        manager = pool._executor_manager_thread
        pool.shutdown(wait=False, cancel_futures=True)
        workers = {p.pid: p for p in [*started, *list(processes.values())]}.values()
        for process in workers:
            if process.is_alive():
                process.terminate()
        for process in workers:
            process.join(GRACE_SECONDS)
        for process in workers:
            if process.is_alive():
                process.kill()
                process.join(GRACE_SECONDS)
        if manager is not None:
            manager.join(GRACE_SECONDS)


def _run_pool(fn, jobs, *, workers, threads, on_result, **_) -> list[Result]:
    results = []
    # spawn: a fork of a process that already ran torch threads can deadlock.
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_init_worker, initargs=(threads, os.getpid()))
    try:
        pending = {pool.submit(fn, job) for job in jobs}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                result = future.result()
                on_result(result)
                results.append(result)
    except BaseException:  # interrupted, or a job failed: no worker outlives the build
        _stop_pool(pool)
        raise
    pool.shutdown(wait=True)
    return results


def _ray_call(fn, job, threads):
    _limit_threads(threads)
    return fn(job)


def _run_ray(fn, jobs, *, workers, ray_address, threads, on_result, **_) -> list[Result]:
    try:
        import ray
    except ImportError:
        raise InputError("the Ray executor needs ray: pip install 'modelprint[ray]'") from None
    started_here = not ray.is_initialized()
    if started_here:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        in_main = threading.current_thread() is threading.main_thread()
        on_sigterm = signal.getsignal(signal.SIGTERM) if in_main else None
        try:
            if ray_address:
                ray.init(address=ray_address, **kwargs)
            else:
                ray.init(num_cpus=workers, runtime_env={"env_vars": {"OMP_NUM_THREADS": str(threads)}}, **kwargs)
        finally:
            if on_sigterm is not None:  # ray.init installs its own SIGTERM handler (sys.exit(15)): the caller's stays
                signal.signal(signal.SIGTERM, on_sigterm)
    pending: list[Any] = []
    try:
        remote = ray.remote(num_cpus=1, max_retries=1)(_ray_call)
        pending = [remote.remote(fn, job, threads) for job in jobs]
        results = []
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            result = ray.get(done[0])
            on_result(result)
            results.append(result)
        return results
    except BaseException:
        with _signals_held():  # on a cluster that outlives this process too, the jobs in flight end with it
            for ref in pending:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
        raise
    finally:
        if started_here:  # the local instance started here, its workers included
            with _signals_held():
                ray.shutdown()
