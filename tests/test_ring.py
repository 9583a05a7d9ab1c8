"""The ring loader: DataLoader's batches from shared buffers, worker errors, clean shutdown."""

from __future__ import annotations

import contextlib
import gc
import multiprocessing as mp
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler, DataLoader
from trainkit import labelled_store

from spectralearth_build.errors import InputError
from spectralearth_build.train import ring
from spectralearth_build.train.data import (
    AllViews,
    EpochSampler,
    LabelTask,
    SingleView,
    StoreDataset,
    TemporalPair,
)
from spectralearth_build.train.pretrain import StepSampler
from spectralearth_build.train.ring import RingLoader

DATASETS = {
    "SingleView": lambda p: SingleView(p, seed=3),
    "TemporalPair": lambda p: TemporalPair(p, seed=3),
    "TemporalPair-bands": lambda p: TemporalPair(p, seed=3, wavelength_ranges=[(900, 1400)]),
    "AllViews": lambda p: AllViews(p, seed=3, max_views=2),
    "LabelTask-corine": lambda p: LabelTask(p, "corine", "train", view="random", seed=3),
    "LabelTask-cdl": lambda p: LabelTask(p, "cdl", None, seed=3),
}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return labelled_store(tmp_path_factory)


def epoch_batches(ds: StoreDataset, batch: int = 8, epoch: int = 1) -> BatchSampler:
    """Shuffled batches of one epoch, the last one partial (as ``make_loader`` without drop)."""
    sampler = EpochSampler(ds, seed=5, shard_aware=True)
    sampler.set_epoch(epoch)
    return BatchSampler(sampler, batch, drop_last=False)


def assert_same_batches(want: list[dict], got: list[dict]) -> None:
    assert len(got) == len(want) > 0
    for a, b in zip(want, got):
        assert list(b) == list(a)
        for k in a:
            assert b[k].dtype == a[k].dtype and b[k].shape == a[k].shape, k
            assert torch.equal(b[k], a[k]), k


def ring_workers() -> list:
    return [p for p in mp.active_children() if p.name.startswith("ring-loader-worker")]


@pytest.mark.parametrize("workers", [0, 1, 2])
@pytest.mark.parametrize("name", sorted(DATASETS))
def test_batches_equal_the_dataloaders_whatever_the_workers(store, name, workers):
    ds = DATASETS[name](store)
    want = list(DataLoader(ds, batch_sampler=epoch_batches(ds), num_workers=workers))
    loader = RingLoader(ds, epoch_batches(ds), num_workers=workers, slots=2, chunk=3)
    got = list(loader)  # kept: every yielded batch is the caller's own
    assert_same_batches(want, got)
    assert loader.stats["samples"] == len(ds) and not ring_workers()


def test_resumes_with_the_step_sampler_it_is_given(store):
    ds = TemporalPair(store, seed=1)
    full = list(RingLoader(ds, StepSampler(len(ds), 4, 2, 1, 0, 7, 0, 6), num_workers=2))
    rest = list(RingLoader(ds, StepSampler(len(ds), 4, 2, 1, 0, 7, 4, 6), num_workers=1))
    assert len(full) == 12 and len(rest) == 4  # steps 4, 5 in two micro-batches each
    assert_same_batches(full[8:], rest)


def corrupt_view(store: Path, position: int) -> None:
    """Zero the encoded bytes of view 0 of dataset position ``position`` (its index stays)."""
    ds = SingleView(store)
    reader = ds.reader
    assert reader is not None
    slot = int(ds.slots[position])
    key = (slot // reader.shards[0], 0, 0, 0, 0)
    path = reader.root / "/".join(["c", *map(str, key)])
    within = int(np.ravel_multi_index((slot % reader.shards[0], 0, 0, 0, 0), reader.per_shard))
    with open(path, "r+b") as f:
        end = path.stat().st_size - reader.crc_bytes
        f.seek(end - reader.index_bytes + 16 * within)
        offset, nbytes = np.frombuffer(f.read(16), dtype="<u8").tolist()
        f.seek(offset)
        f.write(bytes(nbytes))


@pytest.mark.parametrize("workers", [0, 2])
def test_a_worker_error_names_the_sample_and_stops_the_workers(store, tmp_path, workers):
    bad = tmp_path / "store"
    shutil.copytree(store, bad)
    ds = SingleView(bad)
    j = int(np.flatnonzero(ds.n_views == 1)[0])  # its only view is read
    corrupt_view(bad, j)
    others = [i for i in range(len(ds)) if i != j]
    batches = [others[:4], [others[4], j, others[5]], others[6:10], others[10:14]]
    loader = RingLoader(ds, batches, num_workers=workers, slots=2, chunk=1)
    it = iter(loader)
    assert torch.equal(next(it)["index"], torch.tensor(others[:4]))
    with pytest.raises(InputError, match=rf"sample {j} .*does not decode") as err:
        next(it)
    assert "c/0/0/0/0/0" in str(err.value)
    assert not ring_workers() and loader._ring is None


def test_close_with_garbage_collection_and_interrupts_stop_the_workers(store):
    ds = TemporalPair(store)
    batches = [list(range(i, i + 4)) for i in range(0, 32, 4)]
    with RingLoader(ds, batches, num_workers=2) as loader:
        it = iter(loader)
        next(it)
        assert len(ring_workers()) == 2
        shared = loader._ring.map
    assert not ring_workers() and loader._ring is None  # left the with block
    assert shared.closed  # unmapped: no batch tensor kept a view of the ring
    loader = RingLoader(ds, batches, num_workers=2)
    it = iter(loader)
    next(it)
    del it  # the iterator dropped mid-run
    gc.collect()
    assert not ring_workers() and loader._ring is None
    assert len(list(loader)) == len(batches)  # the loader iterates again afterwards

    def interrupted():
        yield from batches[:2]
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        for _ in RingLoader(ds, interrupted(), num_workers=2):
            pass
    assert not ring_workers()


def test_refuses_what_does_not_fit_fixed_buffers(store):
    ds = SingleView(store, transforms=lambda s: s)
    with pytest.raises(InputError, match="CPU transforms"):
        RingLoader(ds, [[0, 1]])
    with pytest.raises(InputError, match="fields"):
        RingLoader(list(range(4)), [[0, 1]])
    with pytest.raises(InputError, match="exceeds the ring"):
        list(RingLoader(SingleView(store), [[0, 1], [2, 3, 4]]))
    with pytest.raises(InputError, match="BatchSampler"):  # a sampler of keys, not of batches
        list(RingLoader(SingleView(store), EpochSampler(8)))


class WhereDecoded:
    """Samples that record the niceness of the process that wrote them."""

    def __len__(self) -> int:
        return 8

    def fields(self) -> dict:
        return {"nice": ((), np.dtype(np.int64))}

    def sample_into(self, key: int, out: dict) -> None:
        out["nice"][...] = os.nice(0)


def test_workers_run_with_the_niceness_asked_for():
    batches = [[0, 1, 2, 3], [4, 5, 6, 7]]
    default = list(RingLoader(WhereDecoded(), batches, num_workers=2))
    assert all(int(b["nice"].unique()) == os.nice(0) for b in default)
    got = list(RingLoader(WhereDecoded(), batches, num_workers=2, nice=3))
    assert all(int(b["nice"].unique()) == min(os.nice(0) + 3, 19) for b in got)
    assert os.nice(0) == int(default[0]["nice"][0])  # the caller's own niceness is untouched
    with pytest.raises(InputError, match="nice"):
        RingLoader(WhereDecoded(), batches, nice=-1)


class FakeCuda:
    """The CUDA calls of the ring's device path, recorded; copies finish after a few polls."""

    def __init__(self, register_code: int):
        self.log: list[str] = []
        self.code = register_code
        fake = self

        class Event:
            def __init__(self, enable_timing: bool = False) -> None:
                self.polls = 0

            def elapsed_time(self, end: object) -> float:
                return 1.0  # ms

            def record(self, stream: object) -> None:
                fake.log.append("record")

            def query(self) -> bool:
                self.polls += 1
                return self.polls > 2

            def synchronize(self) -> None:
                fake.log.append("synchronize")

        class Stream:
            def __init__(self, *args: object) -> None:
                pass

            def wait_event(self, event: object) -> None:
                fake.log.append("wait")

            def wait_stream(self, stream: object) -> None:
                fake.log.append("wait_stream")

        self.Event, self.Stream = Event, Stream

    def install(self, monkeypatch) -> None:  # noqa: ANN001
        fake = self

        class Cudart:
            def cudaHostRegister(self, ptr: int, n: int, flags: int) -> int:
                fake.log.append("register")
                return fake.code

            def cudaHostUnregister(self, ptr: int) -> int:
                fake.log.append("unregister")
                return 0

        monkeypatch.setattr(torch.cuda, "Event", self.Event)
        monkeypatch.setattr(torch.cuda, "Stream", self.Stream)
        monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
        monkeypatch.setattr(torch.cuda, "current_stream", lambda d=None: self.Stream())
        monkeypatch.setattr(torch.cuda, "cudart", Cudart)
        monkeypatch.setattr(ring, "_record_stream", lambda t, s: fake.log.append("record_stream"))


@pytest.mark.parametrize(("slots", "code"), [(1, 0), (2, 0), (3, 2)])
def test_device_path_reuses_a_slot_only_after_its_copy(store, monkeypatch, slots, code):
    """The CUDA control flow with the CUDA calls stubbed (the real one needs a GPU, below)."""
    ds = TemporalPair(store, seed=2)
    want = list(DataLoader(ds, batch_sampler=epoch_batches(ds)))
    fake = FakeCuda(code)
    fake.install(monkeypatch)
    loader = RingLoader(ds, epoch_batches(ds), num_workers=2, slots=slots)
    loader.device = torch.device("cpu")  # stands in for the GPU
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = list(loader)
    assert_same_batches(want, got)
    n = len(want)
    assert fake.log.count("wait") == n and "wait_stream" not in fake.log  # copies wait for none
    assert fake.log.count("record_stream") == sum(len(b) for b in want)  # the caller owns them
    assert fake.log.count("record") == 2 * n  # the copy's start and end
    assert loader.stats["copy_s"] == pytest.approx(n * 1e-3)  # every copy retired once
    nbytes = sum(v.numel() * v.element_size() for b in want for v in b.values())
    assert loader.stats["copy_bytes"] == nbytes
    assert fake.log.count("register") == 1
    assert fake.log.count("unregister") == (1 if code == 0 else 0)
    assert any("cudaHostRegister" in str(w.message) for w in caught) == (code != 0)
    if slots == 1:  # every later batch waited for the copy of the one before
        assert fake.log.count("synchronize") >= n - 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_are_the_dataloaders_on_the_device(tmp_path):
    from spectralearth_build.synthstore import write_synthetic_store  # no GDAL on GPU nodes

    store = tmp_path / "store"
    write_synthetic_store(store, 20, max_views=3, patch_px=16, seed=1)
    ds = TemporalPair(store, seed=2)
    want = list(DataLoader(ds, batch_sampler=epoch_batches(ds), num_workers=2))
    loader = RingLoader(ds, epoch_batches(ds), num_workers=2, device="cuda", slots=2)
    got = list(loader)
    assert all(v.is_cuda for b in got for v in b.values())
    assert_same_batches(want, [{k: v.cpu() for k, v in b.items()} for b in got])
