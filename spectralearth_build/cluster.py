"""The Dask client every stage runs on (scan, plan, extraction, labels, export, validate).

:func:`dask_client` opens one client per command: on an existing cluster (``scheduler``: an
address or a scheduler file), on a ``distributed.LocalCluster`` of single-threaded worker
processes (``workers``, default one per core), or none at all (``workers=0``: everything runs
in this process).  :func:`client_map` turns a client into an order-preserving ``map`` so that
library functions take a plain ``map_fn`` and stay testable without Dask.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def dask_client(workers: int | None = None, scheduler: str | None = None) -> Iterator[Any]:
    """A ``distributed.Client`` for a command (None for ``workers=0``: run in this process).

    Args:
        workers: worker processes of a local cluster (one thread each); None = one per core,
            0 = no Dask at all.
        scheduler: address (``tcp://host:port``) or scheduler file of an existing cluster;
            takes precedence over ``workers``.
    """
    if scheduler is None and workers == 0:
        yield None
        return
    from distributed import Client, LocalCluster

    if scheduler is not None:
        kw = {"scheduler_file": scheduler} if Path(scheduler).is_file() else {"address": scheduler}
        with Client(**kw, set_as_default=False) as client:  # type: ignore[arg-type]
            yield client
        return
    n = workers or cores()
    with (
        LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster, set_as_default=False) as client,
    ):
        yield client
        # Closing the cluster retires the workers, then stops the scheduler; a worker heartbeat
        # in flight meanwhile fails and its worker logs a traceback on our stderr, though every
        # result is in.  Stopping the heartbeats first closes that race.
        client.run(_stop_heartbeat, on_error="ignore")


def _stop_heartbeat(dask_worker: Any) -> None:
    """Stop a worker's heartbeat to the scheduler (run on each worker before a cluster closes)."""
    dask_worker.periodic_callbacks["heartbeat"].stop()


def client_map(client: Any) -> Callable[..., Iterator[Any]] | None:
    """A ``map`` over a Dask client with results in input order (None for no client)."""
    if client is None:
        return None

    def mapper(fn: Callable[[Any], Any], items: Any) -> Iterator[Any]:
        futures = client.map(fn, list(items), pure=False)
        try:
            for fut in futures:
                yield fut.result()
        finally:
            client.cancel([f for f in futures if not f.done()])

    return mapper


def cores() -> int:
    """CPU cores this process may use."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
