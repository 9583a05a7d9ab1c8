"""Fused Triton kernels for the spectral adapter's first two layers.

The first two conv layers of the adapter (1->32 channels, then 32->64, kernels 7 and strides 5
along the bands) turn every pixel's 202 bands into 8 positions x 64 channels. Written as GEMMs
they materialise the widest tensor of the whole model: 40 positions x 32 channels = 1,280 values
per pixel after layer 1, about 10.7 GB in bf16 at batch 256 of 128 x 128 px, written, re-read,
passed through ReLU and, in the backward pass, read twice more. Here that tensor never leaves
the chip.

Block form: output position ``p`` of layer 2 reads layer-1 positions ``5p-1 .. 5p+5`` (7
positions), and those read bands ``25p-6 .. 25p+30`` (a 37-band window). A program takes a tile
of ``BLOCK_M`` pixels and one position ``p``, loads the (BLOCK_M, 64) band window straight from
the (B, bands, H, W) input (pixels are contiguous in that layout, so the load is coalesced and no
transposed copy of the input is made), and does two tensor-core products with one *block*
weight each, the same for every ``p``:

    h1 = x_win @ W1blk + b1blk            (64 bands x 8 positions*32 ch; rows 37.. are zero)
    a1 = relu(h1), zero at positions outside 0..39 (layer 2's padding)
    h2[:, p] = a1 @ W2blk + b2            (8 positions*32 ch x 64; position 7 is zero)

Layer 1's BatchNorm is folded into ``W1blk``/``b1blk`` by the caller (its statistics follow
from the input's first two moments, see ``adapter.py``), so the kernel is conv -> ReLU -> conv.
The block weights are gathers of the conv weights, so autograd carries their gradients back to
``Conv3d.weight``/``bias`` and to BatchNorm-1's parameters.

Backward recomputes ``h1`` from the input in two kernels, one accumulating ``dW2blk``/``db2``
(``a1^T @ dh2``) and one ``dW1blk``/``db1blk`` (``x^T @ (dh2 @ W2blk^T * relu'(h1))``). Each
program owns a fixed set of pixel tiles and writes its partial sums; the partials are added in a
fixed order, so gradients are deterministic (no atomics). The input never gets a gradient
(it is data); callers with an input that requires one use the GEMM path.

All products accumulate in float32; in bf16 the layer-1 activation is rounded to bf16 before the
second product, as the GEMM path under autocast does. In float32 the products run in IEEE
precision (no TF32), so the kernels can be checked against the Conv3d reference, on the CPU too
through Triton's interpreter (``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .adapter import ADAPTER_LAYERS, fixed_gather

#: band window per layer-2 position (power of two >= the 37 bands it needs)
WIN_BANDS = 64
#: layer-1 positions per window (power of two >= layer 2's kernel of 7)
WIN_POS = 8


@dataclass(frozen=True)
class BlockGeometry:
    """Sizes of the block form for one band count (see the module docstring)."""

    bands: int  #: input bands
    pos1: int  #: layer-1 output positions (40 for 202 bands)
    pos2: int  #: layer-2 output positions (8 for 202 bands)

    @property
    def out_features(self) -> int:
        """Features per pixel of the layer-2 output: positions x channels."""
        return self.pos2 * ADAPTER_LAYERS[1].out_ch


def _constants() -> dict[str, int]:
    l1, l2 = ADAPTER_LAYERS[0], ADAPTER_LAYERS[1]
    assert l1.in_ch == 1
    jmax = l1.stride * (l2.kernel - 1) + l1.kernel
    assert jmax <= WIN_BANDS and l2.kernel <= WIN_POS
    return {
        "C1": l1.out_ch,
        "C2": l2.out_ch,
        "K1": l1.kernel,
        "K2": l2.kernel,
        "S1": l1.stride,
        "S2": l2.stride,
        "PAD1": l1.padding,
        "PAD2": l2.padding,
        "JMAX": jmax,
    }


CONST = _constants()


@functools.lru_cache(maxsize=8)
def _block_indices(device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gather indices of the block weights (zero slot = one past the flattened weight).

    Returns:
        ``w1`` (WIN_BANDS, WIN_POS*C1) into ``cat([w1s.flatten(), 0])`` with w1s (C1, K1);
        ``b1`` (WIN_POS*C1,) into ``cat([b1, 0])``;
        ``w2`` (WIN_POS*C1, C2) into ``cat([conv2.weight.flatten(), 0])`` with (C2, C1, K2).
    """
    c1, c2, k1, k2, s1 = CONST["C1"], CONST["C2"], CONST["K1"], CONST["K2"], CONST["S1"]
    j = torch.arange(WIN_BANDS)[:, None]
    col = torch.arange(WIN_POS * c1)[None, :]
    r, c = col // c1, col % c1
    k = j - s1 * r
    ok = (k >= 0) & (k < k1) & (r < k2)
    w1 = torch.where(ok, c * k1 + k, torch.full_like(k, c1 * k1))
    rb = torch.arange(WIN_POS * c1)
    b1 = torch.where(rb // c1 < k2, rb % c1, torch.full_like(rb, c1))
    row = torch.arange(WIN_POS * c1)[:, None]
    co = torch.arange(c2)[None, :]
    r2, ci = row // c1, row % c1
    w2 = torch.where(r2 < k2, (co * c1 + ci) * k2 + r2, torch.full_like(co * r2, c2 * c1 * k2))
    return w1.to(device), b1.to(device), w2.to(device)


def block_weights(
    w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The block weights from the conv weights (differentiable gathers).

    Args:
        w1: layer-1 weight with BatchNorm-1 folded in, (C1, K1) (any shape of C1*K1 values).
        b1: layer-1 bias with BatchNorm-1 folded in, (C1,).
        w2: layer-2 conv weight, (C2, C1, K2, 1, 1) or (C2, C1, K2).

    Returns:
        (WIN_BANDS, WIN_POS*C1), (WIN_POS*C1,) and (WIN_POS*C1, C2) tensors.
    """
    i1, ib, i2 = _block_indices(str(w1.device))
    return fixed_gather(w1, i1), fixed_gather(b1, ib), fixed_gather(w2, i2)


@dataclass
class LaunchConfig:
    """Tile size and warps of a kernel; the backward one also sets programs per SM.

    The configurations are fixed, not autotuned: in the backward kernels the tile size and
    the number of programs set the order in which partial sums are added, and a timing-based
    choice could differ between runs and break bit-identical training. The values were chosen
    by timing on an H200 (``benchmarks/adapter_kernels.py``).
    """

    block_m: int
    num_warps: int
    programs_per_sm: int = 0


#: forward kernel; backward kernels (dW2 and dW1)
FWD = LaunchConfig(block_m=64, num_warps=4)
BWD = LaunchConfig(block_m=32, num_warps=4, programs_per_sm=4)
#: under Triton's interpreter (CPU): small tiles
INTERPRET = LaunchConfig(block_m=32, num_warps=4, programs_per_sm=16)


def _launch(cfg: LaunchConfig) -> LaunchConfig:
    """``cfg``, or the small tiles of ``INTERPRET`` under Triton's interpreter (CPU)."""
    return INTERPRET if os.environ.get("TRITON_INTERPRET") == "1" else cfg


def _programs(t: torch.Tensor, cfg: LaunchConfig) -> int:
    """Programs of a grid-stride kernel in all: ``programs_per_sm`` per SM (once on the CPU)."""
    if t.is_cuda:
        sms = torch.cuda.get_device_properties(t.device).multi_processor_count
        return cfg.programs_per_sm * sms
    return cfg.programs_per_sm


@triton.jit
def _window(
    x_ptr, n0, p, N, HW, C_IN,
    BLOCK_M: tl.constexpr, WB: tl.constexpr, S1: tl.constexpr, PAD1: tl.constexpr,
    S2: tl.constexpr, PAD2: tl.constexpr, JMAX: tl.constexpr,
):  # fmt: skip
    """The (BLOCK_M, WB) band window of layer-2 position ``p`` for pixels n0.. (zero outside)."""
    rows = n0 + tl.arange(0, BLOCK_M)
    row_ok = rows < N
    rows64 = rows.to(tl.int64)
    base = (rows64 // HW) * C_IN * HW + rows64 % HW
    j = tl.arange(0, WB)
    band = S1 * (S2 * p - PAD2) - PAD1 + j
    band_ok = (band >= 0) & (band < C_IN) & (j < JMAX)
    ptr = x_ptr + base[:, None] + band.to(tl.int64)[None, :] * HW
    xw = tl.load(ptr, mask=row_ok[:, None] & band_ok[None, :], other=0.0)
    return xw, rows64, row_ok


@triton.jit
def _layer1(
    xw, w1, b1, p, P1, WR: tl.constexpr, C1: tl.constexpr, S2: tl.constexpr,
    PAD2: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    """h1 (fp32) and its ReLU mask (positions inside layer 2's input and h1 > 0)."""
    h1 = tl.dot(xw, w1, input_precision=PREC) + b1[None, :]
    q = S2 * p - PAD2 + tl.arange(0, WR * C1) // C1
    keep = ((q >= 0) & (q < P1))[None, :] & (h1 > 0)
    return h1, keep


@triton.jit
def _fwd_kernel(
    x_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, out_ptr, N, HW, C_IN, P1, P2,
    BLOCK_M: tl.constexpr, WB: tl.constexpr, WR: tl.constexpr, C1: tl.constexpr,
    C2: tl.constexpr, S1: tl.constexpr, PAD1: tl.constexpr, S2: tl.constexpr,
    PAD2: tl.constexpr, JMAX: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    p = tl.program_id(1)
    xw, rows64, row_ok = _window(
        x_ptr, pid * BLOCK_M, p, N, HW, C_IN, BLOCK_M, WB, S1, PAD1, S2, PAD2, JMAX
    )
    k = tl.arange(0, WR * C1)
    w1 = tl.load(w1_ptr + tl.arange(0, WB)[:, None] * (WR * C1) + k[None, :])
    b1 = tl.load(b1_ptr + k)
    h1, keep = _layer1(xw, w1, b1, p, P1, WR, C1, S2, PAD2, PREC)
    c2 = tl.arange(0, C2)
    w2 = tl.load(w2_ptr + k[:, None] * C2 + c2[None, :])
    a1 = tl.where(keep, h1, 0.0).to(w2.dtype)
    h2 = tl.dot(a1, w2, input_precision=PREC) + tl.load(b2_ptr + c2)[None, :]
    optr = out_ptr + rows64[:, None] * (P2 * C2) + p * C2 + c2[None, :]
    tl.store(optr, h2.to(out_ptr.dtype.element_ty), mask=row_ok[:, None])


@triton.jit
def _bwd_w2_kernel(
    x_ptr, w1_ptr, b1_ptr, dh2_ptr, dw2_ptr, db2_ptr, N, HW, C_IN, P1, P2,
    BLOCK_M: tl.constexpr, WB: tl.constexpr, WR: tl.constexpr, C1: tl.constexpr,
    C2: tl.constexpr, S1: tl.constexpr, PAD1: tl.constexpr, S2: tl.constexpr,
    PAD2: tl.constexpr, JMAX: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    g = tl.program_id(0)
    p = tl.program_id(1)
    n_prog = tl.num_programs(0)
    k = tl.arange(0, WR * C1)
    c2 = tl.arange(0, C2)
    w1 = tl.load(w1_ptr + tl.arange(0, WB)[:, None] * (WR * C1) + k[None, :])
    b1 = tl.load(b1_ptr + k)
    acc = tl.zeros((WR * C1, C2), dtype=tl.float32)
    accb = tl.zeros((C2,), dtype=tl.float32)
    for tile in range(g, tl.cdiv(N, BLOCK_M), n_prog):
        xw, rows64, row_ok = _window(
            x_ptr, tile * BLOCK_M, p, N, HW, C_IN, BLOCK_M, WB, S1, PAD1, S2, PAD2, JMAX
        )
        h1, keep = _layer1(xw, w1, b1, p, P1, WR, C1, S2, PAD2, PREC)
        dptr = dh2_ptr + rows64[:, None] * (P2 * C2) + p * C2 + c2[None, :]
        dh2 = tl.load(dptr, mask=row_ok[:, None], other=0.0)
        a1 = tl.where(keep, h1, 0.0).to(dh2.dtype)
        acc += tl.dot(tl.trans(a1), dh2, input_precision=PREC)
        accb += tl.sum(dh2.to(tl.float32), axis=0)
    part = g * P2 + p
    wptr = dw2_ptr + part * (WR * C1 * C2) + k[:, None] * C2 + c2[None, :]
    tl.store(wptr, acc)
    tl.store(db2_ptr + part * C2 + c2, accb)


@triton.jit
def _bwd_w1_kernel(
    x_ptr, w1_ptr, b1_ptr, w2_ptr, dh2_ptr, dw1_ptr, db1_ptr, N, HW, C_IN, P1, P2,
    BLOCK_M: tl.constexpr, WB: tl.constexpr, WR: tl.constexpr, C1: tl.constexpr,
    C2: tl.constexpr, S1: tl.constexpr, PAD1: tl.constexpr, S2: tl.constexpr,
    PAD2: tl.constexpr, JMAX: tl.constexpr, PREC: tl.constexpr,
):  # fmt: skip
    g = tl.program_id(0)
    p = tl.program_id(1)
    n_prog = tl.num_programs(0)
    k = tl.arange(0, WR * C1)
    c2 = tl.arange(0, C2)
    jj = tl.arange(0, WB)
    w1 = tl.load(w1_ptr + jj[:, None] * (WR * C1) + k[None, :])
    b1 = tl.load(b1_ptr + k)
    w2t = tl.load(w2_ptr + k[None, :] * C2 + c2[:, None])  # (C2, WR*C1)
    acc = tl.zeros((WB, WR * C1), dtype=tl.float32)
    accb = tl.zeros((WR * C1,), dtype=tl.float32)
    for tile in range(g, tl.cdiv(N, BLOCK_M), n_prog):
        xw, rows64, row_ok = _window(
            x_ptr, tile * BLOCK_M, p, N, HW, C_IN, BLOCK_M, WB, S1, PAD1, S2, PAD2, JMAX
        )
        h1, keep = _layer1(xw, w1, b1, p, P1, WR, C1, S2, PAD2, PREC)
        dptr = dh2_ptr + rows64[:, None] * (P2 * C2) + p * C2 + c2[None, :]
        dh2 = tl.load(dptr, mask=row_ok[:, None], other=0.0)
        da1 = tl.dot(dh2, w2t, input_precision=PREC)
        dh1 = tl.where(keep & row_ok[:, None], da1, 0.0)
        acc += tl.dot(tl.trans(xw), dh1.to(xw.dtype), input_precision=PREC)
        accb += tl.sum(dh1, axis=0)
    part = g * P2 + p
    wptr = dw1_ptr + part * (WB * WR * C1) + jj[:, None] * (WR * C1) + k[None, :]
    tl.store(wptr, acc)
    tl.store(db1_ptr + part * (WR * C1) + k, accb)


def _meta(x: torch.Tensor) -> dict[str, int | str]:
    """The kernels' compile-time constants for input ``x``."""
    used = ("C1", "C2", "S1", "PAD1", "S2", "PAD2", "JMAX")
    return {
        "WB": WIN_BANDS,
        "WR": WIN_POS,
        "PREC": "ieee" if x.dtype == torch.float32 else "tf32",
        **{k: CONST[k] for k in used},
    }


class FusedLayers12(torch.autograd.Function):
    """h2 = conv2(relu(conv1_bnfolded(x))) in block form; see the module docstring.

    ``forward(x, w1blk, b1blk, w2blk, b2, geometry)`` with x (B, bands, H, W) contiguous in the
    compute dtype, block weights from ``block_weights`` (any float dtype; cast to x's), b2 (C2,);
    returns (B*H*W, pos2*C2) pixel rows in x's dtype, feature ``p*C2 + c``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        w1blk: torch.Tensor,
        b1blk: torch.Tensor,
        w2blk: torch.Tensor,
        b2: torch.Tensor,
        geometry: BlockGeometry,
    ) -> torch.Tensor:
        b, bands, hh, ww = x.shape
        n = b * hh * ww
        w1c = w1blk.to(x.dtype).contiguous()
        w2c = w2blk.to(x.dtype).contiguous()
        b1c = b1blk.float().contiguous()
        b2c = b2.float().contiguous()
        out = torch.empty((n, geometry.out_features), device=x.device, dtype=x.dtype)
        cfg = _launch(FWD)
        grid = (triton.cdiv(n, cfg.block_m), geometry.pos2)
        _fwd_kernel[grid](
            x, w1c, b1c, w2c, b2c, out, n, hh * ww, bands, geometry.pos1, geometry.pos2,
            BLOCK_M=cfg.block_m, num_warps=cfg.num_warps, num_stages=1, **_meta(x),
        )  # fmt: skip
        ctx.save_for_backward(x, w1c, b1c, w2c)
        ctx.geometry = geometry  # type: ignore[attr-defined]
        ctx.dtypes = (w1blk.dtype, b1blk.dtype, w2blk.dtype, b2.dtype)  # type: ignore[attr-defined]
        return out

    @staticmethod
    def backward(ctx, dh2: torch.Tensor):  # type: ignore[override]
        x, w1c, b1c, w2c = ctx.saved_tensors
        geo: BlockGeometry = ctx.geometry
        b, bands, hh, ww = x.shape
        n = b * hh * ww
        dh2 = dh2.to(x.dtype).contiguous()
        cfg = _launch(BWD)
        g = max(1, _programs(x, cfg) // geo.pos2)  # programs per layer-2 position
        parts = g * geo.pos2
        c1, c2 = CONST["C1"], CONST["C2"]
        f32 = {"device": x.device, "dtype": torch.float32}
        dw2 = torch.empty((parts, WIN_POS * c1, c2), **f32)
        db2 = torch.empty((parts, c2), **f32)
        dw1 = torch.empty((parts, WIN_BANDS, WIN_POS * c1), **f32)
        db1 = torch.empty((parts, WIN_POS * c1), **f32)
        meta = {
            "BLOCK_M": cfg.block_m,
            "num_warps": cfg.num_warps,
            "num_stages": 1,
            **_meta(x),
        }
        args = (n, hh * ww, bands, geo.pos1, geo.pos2)
        _bwd_w2_kernel[(g, geo.pos2)](x, w1c, b1c, dh2, dw2, db2, *args, **meta)
        _bwd_w1_kernel[(g, geo.pos2)](x, w1c, b1c, w2c, dh2, dw1, db1, *args, **meta)
        t1, tb1, t2, tb2 = ctx.dtypes
        return (
            None,
            dw1.sum(0).to(t1),
            db1.sum(0).to(tb1),
            dw2.sum(0).to(t2),
            db2.sum(0).to(tb2),
            None,
        )


@torch.compiler.disable
def fused_layers12(
    x: torch.Tensor,
    w1blk: torch.Tensor,
    b1blk: torch.Tensor,
    w2blk: torch.Tensor,
    b2: torch.Tensor,
    geometry: BlockGeometry,
) -> torch.Tensor:
    """``FusedLayers12.apply``, left out of ``torch.compile`` graphs (the kernels are tuned)."""
    out: torch.Tensor = FusedLayers12.apply(x, w1blk, b1blk, w2blk, b2, geometry)
    return out


# -- BatchNorm + ReLU over pixel rows -----------------------------------------------------------
# After layer 2 the adapter normalises (N*8, 64) and after layer 3 (N*2, 128) rows: 2**31 and
# 2**30 values at batch 256. As separate PyTorch ops (sums, scale-and-shift, ReLU and their
# autograd) that is a dozen passes, several in float32; here it is one reduction pass and one
# elementwise pass forward, the same backward (the ReLU mask is recomputed from the input,
# the arithmetic is float32 throughout).

#: rows per tile and programs per SM of the row kernels (fixed, see ``LaunchConfig``)
ROWS = LaunchConfig(block_m=128, num_warps=4, programs_per_sm=8)


@triton.jit
def _row_stats_kernel(h_ptr, part_ptr, M, C: tl.constexpr, BLOCK_R: tl.constexpr):
    """Partial per-channel sums and sums of squares of (M, C) rows, one pair per program."""
    g = tl.program_id(0)
    cols = tl.arange(0, C)
    acc_s = tl.zeros((C,), dtype=tl.float32)
    acc_q = tl.zeros((C,), dtype=tl.float32)
    for t in range(g, tl.cdiv(M, BLOCK_R), tl.num_programs(0)):
        rows = (t * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
        v = tl.load(h_ptr + rows[:, None] * C + cols[None, :], mask=(rows < M)[:, None], other=0.0)
        v = v.to(tl.float32)
        acc_s += tl.sum(v, axis=0)
        acc_q += tl.sum(v * v, axis=0)
    tl.store(part_ptr + g * 2 * C + cols, acc_s)
    tl.store(part_ptr + g * 2 * C + C + cols, acc_q)


@triton.jit
def _bn_relu_kernel(h_ptr, y_ptr, k_ptr, s_ptr, M, C: tl.constexpr, BLOCK_R: tl.constexpr):
    """Rows y = relu(h * k + s), per-channel k and s, (M, C) rows."""
    rows = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
    cols = tl.arange(0, C)
    off = rows[:, None] * C + cols[None, :]
    ok = (rows < M)[:, None]
    v = tl.load(h_ptr + off, mask=ok, other=0.0).to(tl.float32)
    y = tl.maximum(v * tl.load(k_ptr + cols)[None, :] + tl.load(s_ptr + cols)[None, :], 0.0)
    tl.store(y_ptr + off, y.to(y_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _bn_relu_bwd_reduce_kernel(
    dy_ptr, h_ptr, k_ptr, s_ptr, mean_ptr, part_ptr, M, C: tl.constexpr, BLOCK_R: tl.constexpr
):
    """Partial sums of dz and dz * (h - mean), dz = dy where relu's input > 0."""
    g = tl.program_id(0)
    cols = tl.arange(0, C)
    k = tl.load(k_ptr + cols)[None, :]
    s = tl.load(s_ptr + cols)[None, :]
    mean = tl.load(mean_ptr + cols)[None, :]
    acc1 = tl.zeros((C,), dtype=tl.float32)
    acc2 = tl.zeros((C,), dtype=tl.float32)
    for t in range(g, tl.cdiv(M, BLOCK_R), tl.num_programs(0)):
        rows = (t * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
        off = rows[:, None] * C + cols[None, :]
        ok = (rows < M)[:, None]
        v = tl.load(h_ptr + off, mask=ok, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + off, mask=ok, other=0.0).to(tl.float32)
        dz = tl.where(v * k + s > 0, dy, 0.0)
        acc1 += tl.sum(dz, axis=0)
        acc2 += tl.sum(dz * (v - mean), axis=0)
    tl.store(part_ptr + g * 2 * C + cols, acc1)
    tl.store(part_ptr + g * 2 * C + C + cols, acc2)


@triton.jit
def _bn_relu_bwd_kernel(
    dy_ptr, h_ptr, dh_ptr, k_ptr, s_ptr, mean_ptr, b_ptr, c_ptr, M,
    C: tl.constexpr, BLOCK_R: tl.constexpr,
):  # fmt: skip
    """Input gradient k * dz + b * (h - mean) + c per channel, dz = dy where relu's input > 0."""
    rows = (tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)).to(tl.int64)
    cols = tl.arange(0, C)
    off = rows[:, None] * C + cols[None, :]
    ok = (rows < M)[:, None]
    k = tl.load(k_ptr + cols)[None, :]
    v = tl.load(h_ptr + off, mask=ok, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + off, mask=ok, other=0.0).to(tl.float32)
    dz = tl.where(v * k + tl.load(s_ptr + cols)[None, :] > 0, dy, 0.0)
    xc = v - tl.load(mean_ptr + cols)[None, :]
    dh = k * dz + tl.load(b_ptr + cols)[None, :] * xc + tl.load(c_ptr + cols)[None, :]
    tl.store(dh_ptr + off, dh.to(dh_ptr.dtype.element_ty), mask=ok)


def row_moments(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and (biased) variance of contiguous (M, C) rows, float32."""
    m, c = h.shape
    cfg = _launch(ROWS)
    g = _programs(h, cfg)
    part = torch.empty((g, 2, c), device=h.device, dtype=torch.float32)
    _row_stats_kernel[(g,)](h, part, m, C=c, BLOCK_R=cfg.block_m, num_warps=cfg.num_warps)
    tot = part.sum(0)
    mean = tot[0] / m
    return mean, (tot[1] / m - mean.square()).clamp_min(0)


class BatchNormReLURows(torch.autograd.Function):
    """relu(BatchNorm(h)) of contiguous (M, C) rows with the given statistics.

    ``forward(h, weight, bias, mean, var, eps, batch_stats)``: ``mean``/``var`` (C,) float32
    are the batch statistics of ``h`` (``row_moments``) when ``batch_stats``, else the running
    ones (no gradient flows into them); ``weight``/``bias`` (C,) or None. The gradient is
    BatchNorm's: through the batch mean and variance when ``batch_stats``.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        h: torch.Tensor,
        weight: torch.Tensor | None,
        bias: torch.Tensor | None,
        mean: torch.Tensor,
        var: torch.Tensor,
        eps: float,
        batch_stats: bool,
    ) -> torch.Tensor:
        m, c = h.shape
        rstd = torch.rsqrt(var.float() + eps)
        k = rstd * weight.float() if weight is not None else rstd
        s = -mean.float() * k
        if bias is not None:
            s = s + bias.float()
        y = torch.empty_like(h)
        cfg = _launch(ROWS)
        grid = (triton.cdiv(m, cfg.block_m),)
        _bn_relu_kernel[grid](h, y, k, s, m, C=c, BLOCK_R=cfg.block_m, num_warps=cfg.num_warps)
        ctx.save_for_backward(h, k.contiguous(), s.contiguous(), mean.float(), rstd)
        ctx.batch_stats = batch_stats  # type: ignore[attr-defined]
        ctx.has = (weight is not None, bias is not None)  # type: ignore[attr-defined]
        ctx.dtypes = (  # type: ignore[attr-defined]
            weight.dtype if weight is not None else None,
            bias.dtype if bias is not None else None,
        )
        return y

    @staticmethod
    def backward(ctx, dy: torch.Tensor):  # type: ignore[override]
        h, k, s, mean, rstd = ctx.saved_tensors
        m, c = h.shape
        dy = dy.contiguous()
        cfg = _launch(ROWS)
        g = _programs(h, cfg)
        part = torch.empty((g, 2, c), device=h.device, dtype=torch.float32)
        meta = {"C": c, "BLOCK_R": cfg.block_m, "num_warps": cfg.num_warps}
        _bn_relu_bwd_reduce_kernel[(g,)](dy, h, k, s, mean, part, m, **meta)
        s1, s2 = part.sum(0)  # sum dz, sum dz * (h - mean)
        if ctx.batch_stats:
            b = -k * rstd.square() * s2 / m
            cc = -k * s1 / m
        else:
            b = torch.zeros_like(k)
            cc = torch.zeros_like(k)
        dh = torch.empty_like(h)
        grid = (triton.cdiv(m, cfg.block_m),)
        _bn_relu_bwd_kernel[grid](dy, h, dh, k, s, mean, b.contiguous(), cc.contiguous(), m, **meta)
        has_w, has_b = ctx.has
        dw_t, db_t = ctx.dtypes
        dw = (rstd * s2).to(dw_t) if has_w else None
        db = s1.to(db_t) if has_b else None
        return dh, dw, db, None, None, None, None


@torch.compiler.disable
def bn_relu_rows(
    h: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    mean: torch.Tensor,
    var: torch.Tensor,
    eps: float,
    batch_stats: bool,
) -> torch.Tensor:
    """``BatchNormReLURows.apply``, left out of ``torch.compile`` graphs."""
    out: torch.Tensor = BatchNormReLURows.apply(h, weight, bias, mean, var, eps, batch_stats)
    return out
