"""Host-to-device copy bandwidth by kind of host memory, alone and beside training-like work.

The store-fed training step moves every view to the GPU as int16 (6.6 MB a view, 3.4 GB a
MoCo batch of 256 pairs), so the copy's bandwidth bounds the end-to-end rate.  This measures,
in one run, ``Tensor.copy_(non_blocking=True)`` on a side stream of ``--mib`` MiB from:

* ``torch_pinned``: ``torch.empty(pin_memory=True)`` (the caching host allocator);
* ``registered``: an anonymous shared ``mmap`` (the ring loader's buffers) page-locked with
  ``cudaHostRegister``; ``registered_hugepage``: the same after ``madvise(MADV_HUGEPAGE)``;
* ``pageable``: plain process memory;

each alone, then ``registered`` while the default stream runs bf16 matrix products (the
products' rate is reported with and without the copy), and while ``--writers`` processes
stream through their own memory (the decoding workers' memory traffic).

    python benchmarks/host_to_device.py            # H200: about 30 s

Writes ``benchmarks/results/host_to_device.json`` (``--out``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mmap
import multiprocessing as mp
import platform
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        return f"unreadable: {exc}"


def _pcie() -> str:
    try:
        return subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=pcie.link.gen.current,pcie.link.gen.max,"
                "pcie.link.width.current,pcie.link.width.max",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"unavailable: {exc}"


def _mapped(nbytes: int, huge: bool) -> tuple[mmap.mmap, torch.Tensor]:
    m = mmap.mmap(-1, nbytes)
    if huge and hasattr(m, "madvise") and hasattr(mmap, "MADV_HUGEPAGE"):
        m.madvise(mmap.MADV_HUGEPAGE)
    a = np.frombuffer(m, dtype=np.uint8)
    a[:] = 1  # touch every page
    return m, torch.from_numpy(a)


def _copy_gbps(src: torch.Tensor, dst: torch.Tensor, stream: torch.cuda.Stream, reps: int) -> float:
    with torch.cuda.stream(stream):
        dst.copy_(src, non_blocking=True)
    stream.synchronize()
    rates = []
    for _ in range(reps):
        t = time.perf_counter()
        with torch.cuda.stream(stream):
            dst.copy_(src, non_blocking=True)
        stream.synchronize()
        rates.append(src.numel() * src.element_size() / (time.perf_counter() - t) / 1e9)
    return round(statistics.median(rates), 2)


def _stream(stop: Any, nbytes: int) -> None:
    a = np.ones(nbytes, dtype=np.uint8)
    b = np.empty_like(a)
    while not stop.is_set():
        np.copyto(b, a)


@contextlib.contextmanager
def memory_load(processes: int, nbytes: int = 256 << 20) -> Iterator[None]:
    """``processes`` spawned processes copying between two ``nbytes`` buffers over and over
    inside the block (started 3 s before it: a stand-in for decoding workers' memory load)."""
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    procs = [ctx.Process(target=_stream, args=(stop, nbytes)) for _ in range(processes)]
    for p in procs:
        p.start()
    time.sleep(3)
    try:
        yield
    finally:
        stop.set()
        for p in procs:
            p.join()


def _matmul_rate(n: int, reps: int, side: tuple | None = None) -> tuple[float, float | None]:
    """bf16 TFLOP/s of ``reps`` (n x n) products, with ``side`` = (src, dst, stream) copying
    over and over meanwhile; returns (TFLOP/s, copy GB/s or None)."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    torch.cuda.synchronize()
    copies = 0
    t = time.perf_counter()
    ev = torch.cuda.Event()
    for _ in range(reps):
        a @ b
    ev.record()
    if side is not None:
        src, dst, stream = side
        while not ev.query():
            with torch.cuda.stream(stream):
                dst.copy_(src, non_blocking=True)
            stream.synchronize()
            copies += 1
    torch.cuda.synchronize()
    dt = time.perf_counter() - t
    tflops = round(2 * n**3 * reps / dt / 1e12, 1)
    if side is None:
        return tflops, None
    src = side[0]
    return tflops, round(copies * src.numel() * src.element_size() / dt / 1e9, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mib", type=int, default=1024, help="bytes per copy (MiB)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--writers", type=int, default=10, help="memory-streaming processes")
    ap.add_argument("--out", default=str(ROOT / "results" / "host_to_device.json"))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("host_to_device needs a CUDA device")
    nbytes = args.mib << 20
    stream = torch.cuda.Stream()
    dst = torch.empty(nbytes, dtype=torch.uint8, device="cuda")
    out: dict = {
        "benchmark": "host_to_device",
        "device_name": torch.cuda.get_device_name(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "pcie_gen_cur_max_width_cur_max": _pcie(),
        "thp_enabled": _read("/sys/kernel/mm/transparent_hugepage/enabled"),
        "thp_shmem_enabled": _read("/sys/kernel/mm/transparent_hugepage/shmem_enabled"),
        "copy_mib": args.mib,
        "alone_gbps": {},
    }
    pinned = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    pinned.fill_(1)
    out["alone_gbps"]["torch_pinned"] = _copy_gbps(pinned, dst, stream, args.reps)
    del pinned
    cudart = torch.cuda.cudart()
    kept = []
    for name, huge in (("registered", False), ("registered_hugepage", True)):
        m, t = _mapped(nbytes, huge)
        code = int(getattr(e := cudart.cudaHostRegister(t.data_ptr(), nbytes, 0), "value", e))
        out["alone_gbps"][name] = _copy_gbps(t, dst, stream, args.reps) if code == 0 else None
        if code == 0:
            kept.append((name, m, t))
        else:
            out[f"{name}_register_error"] = code
    page = torch.ones(nbytes, dtype=torch.uint8)
    out["alone_gbps"]["pageable"] = _copy_gbps(page, dst, stream, args.reps)
    del page
    meminfo = {
        k: v for k, v in (line.split(":", 1) for line in _read("/proc/meminfo").splitlines())
        if "Huge" in k
    }  # fmt: skip
    out["meminfo_huge"] = {k: v.strip() for k, v in meminfo.items()}
    src = kept[0][2] if kept else torch.ones(nbytes, dtype=torch.uint8)
    n, reps = 8192, 400
    out["matmul_tflops_alone"], _ = _matmul_rate(n, reps)
    tf, gbps = _matmul_rate(n, reps, (src, dst, stream))
    out["matmul_tflops_with_copy"], out["copy_gbps_with_matmul"] = tf, gbps
    out["writers"] = args.writers
    with memory_load(args.writers):
        out["copy_gbps_with_writers"] = _copy_gbps(src, dst, stream, args.reps)
        tf, gbps = _matmul_rate(n, reps, (src, dst, stream))
    out["matmul_tflops_with_copy_and_writers"], out["copy_gbps_with_matmul_and_writers"] = tf, gbps
    for _, _, t in kept:
        cudart.cudaHostUnregister(t.data_ptr())
    print(json.dumps(out, indent=1))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
