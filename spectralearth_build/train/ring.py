"""A batch loader that decodes samples straight into a ring of shared, page-locked buffers.

torch's ``DataLoader`` copies every int16 sample several times on its way to the GPU: the worker
decodes into its own array, the default collate copies the batch into a new shared-memory tensor,
the single pin-memory thread copies it again into page-locked memory, and the host-to-device copy
runs in the training step.  At 6.6 MB a view and 1,300 views/s that is the limit, not decoding.

Strategy.  :class:`RingLoader` allocates, once per iteration, a ring of ``slots`` batch buffers
per sample field (``(slots, batch, *field_shape)``, one anonymous shared memory map, inherited by
forked workers).  It walks the batch sampler it is given and splits each batch into tasks
``(slot, first row, keys)`` of ``chunk`` samples; the ``num_workers`` processes (started once,
one BLAS and one blosc thread each) take tasks from one queue and call the dataset's
``sample_into(key, rows)``, which decodes each view straight into its row of the slot.  A batch
is filled by all workers at once, so the ring stays small (3 slots of 256 pairs: 10 GB) and the
next ``slots - 1`` batches decode while the caller trains on the current one.

* **On CUDA** the ring is page-locked once (``cudaHostRegister``; unregistered on close, and
  left pageable with a warning if registration fails); each complete batch is copied to the
  device with ``non_blocking=True`` on a side stream as soon as it is decoded, into memory of
  the side stream's pool (it is handed out one batch later, so the copy overlaps the caller's
  step and never waits for it), the caller's current stream waits on the copy's event and
  takes the tensors over (``record_stream``), and the slot goes back to the workers only when
  that event has completed.  The yielded tensors are device tensors the caller owns.  Without
  a device the yielded tensors are copies out of the slot (one ``memcpy`` per field).
* **Identical to a DataLoader.**  Batches are dicts with the keys, dtypes, shapes and values
  that ``DataLoader(dataset, batch_sampler=..., num_workers=...)`` with the default collate
  gives, in the sampler's order, whatever the number of workers: samples depend on their keys
  only (``(seed, epoch, position)`` draws), never on the worker that decodes them.  Resuming is
  the sampler's business (``StepSampler(start_step=...)``).
* **Fixed shapes only**: the dataset declares its fields (``fields()``: shape and dtype of every
  array of a sample) and writes samples with ``sample_into``; datasets with CPU ``transforms``
  (which may change shapes) are refused with a clear error: use a ``DataLoader`` for them.
* **Failures and shutdown.**  An exception in a worker reaches the caller as the same exception
  type, naming the sample key and the worker, with the worker's traceback as a note; a worker
  that dies is reported by exit code.  Workers stop and the ring is released when the iterator is
  exhausted, closed, garbage-collected or left by an exception (``KeyboardInterrupt`` included),
  and on :meth:`RingLoader.close` or leaving a ``with`` block; workers also stop when the main
  process disappears.  The ring is an anonymous mapping: nothing under ``/dev/shm`` can leak.

Workers are forked (Linux's default start method for ``DataLoader`` too); the dataset opens its
store lazily in each process.
"""

from __future__ import annotations

import math
import mmap
import multiprocessing as mp
import os
import pickle
import queue
import signal
import time
import traceback
import warnings
import weakref
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from ..errors import InputError

POLL_S = 0.05
"""How often a waiting main process checks that its workers live (s)."""
WORKER_POLL_S = 1.0
"""How often an idle worker checks that the main process lives (s)."""
JOIN_S = 5.0
"""Grace time for workers to stop before they are terminated (s)."""


def _record_stream(t: torch.Tensor, stream: Any) -> None:
    t.record_stream(stream)


class _Copy(NamedTuple):
    """A host-to-device copy of one slot's batch, queued on the side stream."""

    slot: int
    start: Any
    """CUDA event recorded before the copy."""
    done: Any
    """CUDA event recorded after it: the slot is free once it has completed."""
    nbytes: int


def ring_available() -> bool:
    """Whether this platform can run :class:`RingLoader` workers (it forks them)."""
    return "fork" in mp.get_all_start_methods()


@dataclass(frozen=True)
class _Failure:
    """An exception of a worker, in a form that always pickles."""

    worker: int
    """Worker number (-1: the main process)."""
    key: str
    kind: bytes | None
    """The pickled exception class (None when it does not pickle)."""
    kind_name: str
    message: str
    trace: str

    @classmethod
    def of(cls, worker: int, key: Any, exc: BaseException) -> _Failure:
        try:
            kind: bytes | None = pickle.dumps(type(exc))
        except Exception:  # noqa: BLE001  (a local class)
            kind = None
        return cls(worker, repr(key), kind, type(exc).__name__, str(exc), traceback.format_exc())

    def exception(self, dataset: Any) -> BaseException:
        where = f"ring loader worker {self.worker}" if self.worker >= 0 else "main process"
        text = f"{dataset!r} sample {self.key} ({where}): {self.message}"
        exc: BaseException | None
        try:
            kind = pickle.loads(self.kind) if self.kind is not None else None
            exc = kind(text) if isinstance(kind, type) and issubclass(kind, Exception) else None
        except Exception:  # noqa: BLE001  (a constructor that wants other arguments)
            exc = None
        if exc is None:
            exc = RuntimeError(f"{self.kind_name}: {text}")
        if self.worker >= 0 and hasattr(exc, "add_note"):
            exc.add_note(f"worker traceback:\n{self.trace}")
        return exc


def _single_threaded() -> None:
    """One compute thread per worker: BLAS/OpenMP in torch and blosc's decompression."""
    torch.set_num_threads(1)
    try:
        import numcodecs.blosc as blosc

        blosc.use_threads = False
        blosc.set_nthreads(1)
    except (ImportError, AttributeError):  # numcodecs without blosc
        pass


def _worker(
    wid: int,
    dataset: Any,
    buffers: dict[str, np.ndarray],
    tasks: Any,
    results: Any,
    stop: Any,
    parent: int,
    nice: int,
) -> None:
    """Worker loop: decode the samples of each task into its rows of the ring."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C
    _single_threaded()
    if nice:
        os.nice(nice)
    while not stop.is_set():
        try:
            task = tasks.get(timeout=WORKER_POLL_S)
        except queue.Empty:
            if os.getppid() != parent:
                return
            continue
        if task is None:
            return
        slot, offset, keys = task
        key = None
        try:
            for r, key in enumerate(keys):
                if stop.is_set():
                    return
                dataset.sample_into(key, {k: b[slot, offset + r, ...] for k, b in buffers.items()})
        except Exception as exc:  # noqa: BLE001  (reported to the main process)
            results.put((slot, _Failure.of(wid, key, exc)))
        else:
            results.put((slot, None))


class _Ring:
    """``slots`` batch buffers per field in one anonymous shared memory map."""

    def __init__(self, fields: dict[str, tuple[tuple[int, ...], np.dtype]], slots: int, batch: int):
        page = mmap.PAGESIZE
        spans, offset = {}, 0
        for name, (shape, dtype) in fields.items():
            n = slots * batch * int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            spans[name] = (offset, shape, np.dtype(dtype))
            offset += -(-n // page) * page  # page-aligned fields
        self.nbytes = max(offset, page)
        self.map: mmap.mmap | None = mmap.mmap(-1, self.nbytes)  # MAP_SHARED | MAP_ANONYMOUS
        self.arrays = {
            name: np.frombuffer(
                self.map, dtype=dt, count=slots * batch * int(np.prod(shape, dtype=np.int64)),
                offset=off,
            ).reshape(slots, batch, *shape)
            for name, (off, shape, dt) in spans.items()
        }  # fmt: skip
        self.tensors = {name: torch.from_numpy(a) for name, a in self.arrays.items()}
        self.address = int(next(iter(self.arrays.values())).ctypes.data)  # the first is at 0

    def close(self) -> None:
        self.arrays, self.tensors = {}, {}
        if self.map is not None:
            try:
                self.map.close()
            except BufferError:  # a view is still alive somewhere: the GC unmaps it later
                pass
            self.map = None


class RingLoader:
    """Batches of a store dataset, decoded by worker processes straight into a shared ring.

    Args:
        dataset: a dataset with ``fields()`` and ``sample_into(key, out)`` (the datasets of
            :mod:`spectralearth_build.train.data`) and no CPU ``transforms``.
        batch_sampler: an iterable of lists of sample keys, e.g. ``StepSampler`` of
            :mod:`.pretrain` or ``torch.utils.data.BatchSampler(EpochSampler(ds), 64, True)``;
            iterated anew by each ``iter(loader)``.
        num_workers: worker processes (0: decode in the calling process, one batch at a time).
        device: a CUDA device to copy batches to (page-locked ring, side-stream copies); None or
            a CPU device: batches stay on the CPU.
        slots: batch buffers in the ring (>= 1; on CUDA >= 2 so a copy overlaps decoding).
        chunk: samples per worker task (default ``ceil(batch / (2 * num_workers))``).
        batch_size: rows per slot (default: the size of the sampler's first batch); a later,
            larger batch is an error, a smaller one (a last partial batch) fits.
        pin: page-lock the ring when ``device`` is CUDA.
        nice: added to the workers' scheduling niceness (0: as the caller), so that the
            process feeding the GPU runs first when the cores are all busy.

    Iterating yields ``dict[str, Tensor]`` like ``DataLoader``'s default collate.  ``stats``
    counts batches, samples, the seconds the caller waited for workers (``wait_s``) and, on
    CUDA, the device seconds and bytes of the finished host-to-device copies (``copy_s``,
    ``copy_bytes``).
    """

    def __init__(
        self,
        dataset: Any,
        batch_sampler: Iterable[Sequence[Any]],
        *,
        num_workers: int = 0,
        device: str | torch.device | None = None,
        slots: int = 3,
        chunk: int | None = None,
        batch_size: int | None = None,
        pin: bool = True,
        nice: int = 0,
    ):
        if not (hasattr(dataset, "fields") and hasattr(dataset, "sample_into")):
            raise InputError(
                f"RingLoader needs a dataset with fields() and sample_into() (the store datasets "
                f"of spectralearth_build.train.data), got {type(dataset).__name__}; use a "
                f"torch DataLoader"
            )
        if getattr(dataset, "transforms", None) is not None:
            raise InputError(
                "RingLoader writes samples into fixed-shape buffers and cannot apply a dataset's "
                "CPU transforms; apply them to batches, or use a torch DataLoader"
            )
        for name, value, low in (
            ("num_workers", num_workers, 0), ("slots", slots, 1), ("nice", nice, 0)
        ):  # fmt: skip
            if not isinstance(value, int) or value < low:
                raise InputError(f"RingLoader {name} must be an integer >= {low}, got {value!r}")
        for name, opt in (("chunk", chunk), ("batch_size", batch_size)):
            if opt is not None and (not isinstance(opt, int) or opt < 1):
                raise InputError(f"RingLoader {name} must be an integer >= 1, got {opt!r}")
        if num_workers > 0 and not ring_available():
            raise InputError("RingLoader workers need the fork start method (Linux, macOS)")
        dev = torch.device(device) if device is not None else None
        if dev is not None and dev.type == "cuda":
            if dev.index is None:
                dev = torch.device("cuda", torch.cuda.current_device())
        elif dev is not None and dev.type != "cpu":
            raise InputError(f"RingLoader device must be CUDA or CPU, got {dev}")
        self.dataset = dataset
        self.batch_sampler = batch_sampler
        self.num_workers = num_workers
        self.device = dev if dev is not None and dev.type == "cuda" else None
        self.slots = slots
        self.chunk = chunk
        self.batch_size = batch_size
        self.pin = pin
        self.nice = nice
        self.fields: dict[str, tuple[tuple[int, ...], np.dtype]] = dict(dataset.fields())
        self.stats: dict[str, float] = {
            "batches": 0, "samples": 0, "wait_s": 0.0, "copy_s": 0.0, "copy_bytes": 0
        }  # fmt: skip
        self.pinned = False
        """Whether the current ring is page-locked."""
        self._ring: _Ring | None = None
        self._procs: list[Any] = []
        self._tasks: Any = None
        self._results: Any = None
        self._stop: Any = None
        self._stream: Any = None
        self._copies: deque[_Copy] = deque()
        self._capacity = 0
        self._failed: dict[int, _Failure] = {}
        self._gen: weakref.ref[Any] | None = None  # weak: dropping the iterator ends it

    # -- public ---------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.batch_sampler)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if self._ring is not None:
            raise RuntimeError("a RingLoader runs one iteration at a time; close() the other")
        gen = self._run()
        self._gen = weakref.ref(gen)
        return gen

    def settings(self) -> dict[str, Any]:
        """Workers, slots, chunk, rows per slot, ring size and pinning (for logs, benchmarks)."""
        cap = self._capacity if self._ring is not None else self.batch_size
        return {
            "loader": "ring",
            "num_workers": self.num_workers,
            "slots": self.slots,
            "chunk": self._chunk(cap) if cap else self.chunk,
            "batch_rows": cap,
            "ring_bytes": self._ring.nbytes if self._ring is not None else None,
            "device": str(self.device) if self.device is not None else "cpu",
            "pinned": self.pinned,
            "nice": self.nice,
        }

    def close(self) -> None:
        """Stop the workers and release the ring (an iterator in progress ends)."""
        ref, self._gen = self._gen, None
        gen = ref() if ref is not None else None
        if gen is not None:
            gen.close()  # runs the iterator's cleanup
        self._shutdown()

    def __enter__(self) -> RingLoader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self._shutdown()
        except Exception:  # noqa: BLE001  (interpreter shutdown)
            pass

    # -- the iteration ---------------------------------------------------------------------------
    def _chunk(self, batch: int) -> int:
        if self.chunk is not None:
            return self.chunk
        return max(1, math.ceil(batch / (2 * max(self.num_workers, 1))))

    def _run(self) -> Iterator[dict[str, torch.Tensor]]:
        batches = iter(self.batch_sampler)
        first = next(batches, None)
        if first is None:
            return
        if isinstance(first, tuple) and all(isinstance(k, int | np.integer) for k in first):
            raise InputError(
                f"the batch sampler yielded {first!r}, one sample key rather than a list of "
                f"them; wrap a sampler in torch.utils.data.BatchSampler(sampler, batch, drop_last)"
            )
        first = list(first)
        try:
            self._start(self.batch_size or len(first))
            yield from self._loop(first, batches)
        finally:
            self._shutdown()

    def _start(self, capacity: int) -> None:
        self._capacity = capacity
        self._ring = _Ring(self.fields, self.slots, capacity)
        if self.num_workers:
            ctx = mp.get_context("fork")
            self._tasks, self._results, self._stop = ctx.Queue(), ctx.Queue(), ctx.Event()
            parent = os.getpid()
            for w in range(self.num_workers):
                p = ctx.Process(
                    target=_worker,
                    args=(w, self.dataset, self._ring.arrays, self._tasks, self._results,
                          self._stop, parent, self.nice),
                    name=f"ring-loader-worker-{w}",
                    daemon=True,
                )  # fmt: skip
                p.start()
                self._procs.append(p)
        if self.device is not None:  # after the fork: children never see CUDA state
            self._stream = torch.cuda.Stream(self.device)
            if self.pin:
                self._register()

    def _register(self) -> None:
        assert self._ring is not None
        err = torch.cuda.cudart().cudaHostRegister(self._ring.address, self._ring.nbytes, 0)
        code = int(getattr(err, "value", err))
        if code != 0:
            warnings.warn(
                f"RingLoader: cudaHostRegister of the {self._ring.nbytes / 2**30:.2f} GiB ring "
                f"failed (cudaError {code}); batches are copied from pageable memory",
                RuntimeWarning,
                stacklevel=3,
            )
            return
        self.pinned = True

    def _loop(
        self, first: list[Any], batches: Iterator[Sequence[Any]]
    ) -> Iterator[dict[str, torch.Tensor]]:
        free = deque(range(self.slots))
        left = [0] * self.slots  # tasks not yet done per slot
        pending: deque[tuple[int, int]] = deque()  # (slot, rows) in sampler order
        # on CUDA a batch's copy starts as soon as it is decoded and the batch is handed out
        # one later, so the copy overlaps the caller's step instead of preceding it
        staged: deque[tuple[dict[str, torch.Tensor], Any]] = deque()
        nxt: list[Any] | None = first
        while True:
            # hand finished copies' slots back, then give every free slot a batch
            while self._copies and self._copies[0].done.query():
                free.append(self._copied())
            while free and nxt is not None and (self.num_workers or not pending):
                slot = free.popleft()
                self._submit(slot, nxt, left)
                pending.append((slot, len(nxt)))
                got = next(batches, None)
                nxt = None if got is None else list(got)
            if not pending:
                if nxt is None:
                    while staged:
                        yield self._hand(*staged.popleft())
                    return
                free.append(self._copied(wait=True))  # every slot is being copied from
                continue
            slot, rows = pending.popleft()
            t0 = time.perf_counter()
            while left[slot]:
                self._receive(left)
            self.stats["wait_s"] += time.perf_counter() - t0
            if slot in self._failed:
                while staged:  # the batches before it first, in sampler order
                    yield self._hand(*staged.popleft())
                raise self._failed.pop(slot).exception(self.dataset)
            self.stats["batches"] += 1
            self.stats["samples"] += rows
            if self.device is None:
                yield self._emit(slot, rows, free)
                continue
            staged.append(self._copy(slot, rows))
            if len(staged) > 1:
                yield self._hand(*staged.popleft())

    def _submit(self, slot: int, keys: list[Any], left: list[int]) -> None:
        if len(keys) > self._capacity:
            raise InputError(
                f"a batch of {len(keys)} samples exceeds the ring's {self._capacity} rows per "
                f"slot (the first batch's size); pass RingLoader(batch_size=...)"
            )
        assert self._ring is not None
        if not self.num_workers:
            arrays = self._ring.arrays
            for r, key in enumerate(keys):
                try:
                    self.dataset.sample_into(key, {k: a[slot, r, ...] for k, a in arrays.items()})
                except Exception as exc:
                    raise _Failure.of(-1, key, exc).exception(self.dataset) from exc
            return
        step = self._chunk(len(keys))
        for off in range(0, len(keys), step):
            self._tasks.put((slot, off, keys[off : off + step]))
            left[slot] += 1

    def _receive(self, left: list[int]) -> None:
        try:
            slot, failure = self._results.get(timeout=POLL_S)
        except queue.Empty:
            for w, p in enumerate(self._procs):
                if not p.is_alive():
                    raise RuntimeError(
                        f"ring loader worker {w} (pid {p.pid}) exited unexpectedly "
                        f"(exit code {p.exitcode})"
                    ) from None
            return
        if failure is not None and slot not in self._failed:
            self._failed[slot] = failure  # raised when its batch is due, in sampler order
        left[slot] -= 1

    def _emit(self, slot: int, rows: int, free: deque[int]) -> dict[str, torch.Tensor]:
        """Without a device: copies out of the slot, which is free again at once."""
        assert self._ring is not None
        out = {k: t[slot, :rows].clone() for k, t in self._ring.tensors.items()}
        free.append(slot)
        return out

    def _copy(self, slot: int, rows: int) -> tuple[dict[str, torch.Tensor], Any]:
        """Start copying ``slot``'s batch to the device on the side stream, at once.

        The device tensors come from the side stream's pool and are handed to the caller's
        stream with ``record_stream`` (:meth:`_hand`), so the copy waits for nothing the caller
        queued.  Had it waited (tensors from the caller's pool), it would start when the
        caller's previous step ends, exactly when the next step uploads its own small inputs
        (augmentation draws, masks); uploads from every stream share the copy engine in order,
        so they would wait behind the whole batch (61 ms of idle GPU per 3.4 GB MoCo batch).
        """
        assert self._ring is not None
        views = {k: t[slot, :rows] for k, t in self._ring.tensors.items()}
        start, done = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        with torch.cuda.stream(self._stream):
            out = {
                k: torch.empty(v.shape, dtype=v.dtype, device=self.device) for k, v in views.items()
            }
            start.record(self._stream)
            for k, v in views.items():
                out[k].copy_(v, non_blocking=True)
            done.record(self._stream)
        nbytes = sum(v.numel() * v.element_size() for v in views.values())
        self._copies.append(_Copy(slot, start, done, nbytes))
        return out, done

    def _copied(self, wait: bool = False) -> int:
        """Retire the oldest copy, its slot free again; ``wait``: for a copy still running.

        Counts the copy's device time and bytes in ``stats``.
        """
        copy = self._copies.popleft()
        if wait:
            copy.done.synchronize()
        self.stats["copy_s"] += copy.start.elapsed_time(copy.done) / 1e3
        self.stats["copy_bytes"] += copy.nbytes
        return copy.slot

    def _hand(self, out: dict[str, torch.Tensor], done: Any) -> dict[str, torch.Tensor]:
        """A copied batch for the caller, whose current stream waits for the copy and owns it.

        The tensors' memory is reused only once the work the caller queues on them has run.
        """
        consumer = torch.cuda.current_stream(self.device)
        consumer.wait_event(done)
        for t in out.values():
            _record_stream(t, consumer)
        return out

    def _shutdown(self) -> None:
        procs, self._procs = self._procs, []
        if self._stop is not None:
            self._stop.set()
        for _ in procs:
            try:
                self._tasks.put(None)
            except (OSError, ValueError):
                break
        deadline = time.monotonic() + JOIN_S
        while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
            try:  # read what workers still send, so none blocks on a full pipe at exit
                self._results.get(timeout=POLL_S)
            except (queue.Empty, OSError, ValueError, EOFError):
                pass
        for p in procs:
            p.join(timeout=max(0.0, deadline - time.monotonic()))
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(timeout=1.0)
            if p.is_alive():
                p.kill()
                p.join()
        for q in (self._tasks, self._results):
            if q is not None:
                q.cancel_join_thread()  # never block on unread tasks
                q.close()
        self._tasks = self._results = self._stop = None
        while self._copies:  # a copy still reading the ring finishes before it goes
            self._copied(wait=True)
        self._failed.clear()
        ring, self._ring = self._ring, None
        if ring is not None:
            if self.pinned:
                torch.cuda.cudart().cudaHostUnregister(ring.address)
                self.pinned = False
            ring.close()
        self._stream = None
