"""Where suspects are built: in this process, in a local process pool, or on a Ray cluster.

Every executor runs the same job function on picklable job descriptions and hands each result back as soon as it
is done, so the caller can record progress (and a killed build loses only the suspects in flight).

Every executor runs a job with the same number of torch threads (one by default): two torch processes with two
threads each on two cores slow each other down (4.8x, bench/threads.py), and a CPU run's floating-point sums
depend on how many threads share them, so a suspect built with one thread count is not bit-identical to one built
with another. With equal thread counts the in-process, pool and Ray executors build identical suspects.
"""

from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from typing import Any, Callable, Iterable

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


def _run_pool(fn, jobs, *, workers, threads, on_result, **_) -> list[Result]:
    results = []
    # spawn: a fork of a process that already ran torch threads can deadlock.
    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"), initializer=_limit_threads, initargs=(threads,)) as pool:
        pending = {pool.submit(fn, job) for job in jobs}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                result = future.result()
                on_result(result)
                results.append(result)
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
        if ray_address:
            ray.init(address=ray_address, **kwargs)
        else:
            ray.init(num_cpus=workers, runtime_env={"env_vars": {"OMP_NUM_THREADS": str(threads)}}, **kwargs)
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
    finally:
        if started_here:
            ray.shutdown()
