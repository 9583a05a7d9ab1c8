"""One Triton kernel for the device transforms: normalise, crop, resize, flip and blur a batch.

:func:`~.transforms.apply_params` writes the augmentation of a normalised batch as two batched
matrix products per sample, ``out[b, c] = rows[b] @ x[b, c] @ cols[b].T``. On the GPU the three
passes around them (normalise the int16 input to float32, the two products, the final layout and
dtype copy) each read and write the whole batch: about 20 GB for MAE's 256 float32 views of 202
x 128 x 128, some 10 ms of a 150 ms step.

Here one program takes one ``(sample, band)`` image: it reads the raw int16 (or float) rows of
the input in blocks of ``BLOCK_H``, normalises them in registers (``x * inv_std + shift``, the
same float32 operations as :meth:`~.transforms.DeviceTransform.normalize`), multiplies each
block by the column operator and accumulates the row operator's product, so the input is read
once and the output written once, in its final layout and dtype. The operators (a few hundred
KB per sample) come from the L2 cache for the 202 programs of a sample.

The products run in TF32 on CUDA, as the two-product path does there (relative error ~1e-3,
finer than the bf16 the models compute in); through Triton's interpreter
(``TRITON_INTERPRET=1``, CPU tensors) they run in float32, which the tests compare with the
two-product path. Sides (input height and width, output size) up to :data:`MAX_SIDE` pixels.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_SIDE = 128
"""Largest input side and output size a program holds (its accumulator is MAX_SIDE^2 floats)."""


@triton.jit
def _augment_kernel(
    x_ptr,
    scale_ptr,
    shift_ptr,
    rows_ptr,
    cols_ptr,
    out_ptr,
    H,
    W,
    S,
    sx_b,
    sx_c,
    sx_h,
    sx_w,
    so_b,
    so_c,
    so_h,
    so_w,
    BLOCK_S: tl.constexpr,
    BLOCK_W: tl.constexpr,
    BLOCK_H: tl.constexpr,
    PRECISION: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    c = tl.program_id(1).to(tl.int64)
    scale = tl.load(scale_ptr + c)
    shift = tl.load(shift_ptr + c)
    offs_s = tl.arange(0, BLOCK_S)
    offs_w = tl.arange(0, BLOCK_W)
    # the column operator transposed, (W, S): cols[b, s, w] at b*S*W + s*W + w
    cols_t = tl.load(
        cols_ptr + b * S * W + offs_s[None, :] * W + offs_w[:, None],
        mask=(offs_s[None, :] < S) & (offs_w[:, None] < W),
        other=0.0,
    )
    acc = tl.zeros((BLOCK_S, BLOCK_S), dtype=tl.float32)
    x_base = x_ptr + b * sx_b + c * sx_c
    for h0 in range(0, H, BLOCK_H):
        offs_h = h0 + tl.arange(0, BLOCK_H)
        inside = (offs_h[:, None] < H) & (offs_w[None, :] < W)
        xb = tl.load(x_base + offs_h[:, None] * sx_h + offs_w[None, :] * sx_w, mask=inside, other=0)
        xb = tl.where(inside, xb.to(tl.float32) * scale + shift, 0.0)
        t = tl.dot(xb, cols_t, input_precision=PRECISION)  # (BLOCK_H, BLOCK_S)
        r = tl.load(
            rows_ptr + b * S * H + offs_s[:, None] * H + offs_h[None, :],
            mask=(offs_s[:, None] < S) & (offs_h[None, :] < H),
            other=0.0,
        )  # (BLOCK_S, BLOCK_H)
        acc += tl.dot(r, t, input_precision=PRECISION)
    o = out_ptr + b * so_b + c * so_c + offs_s[:, None] * so_h + offs_s[None, :] * so_w
    tl.store(
        o, acc.to(out_ptr.dtype.element_ty), mask=(offs_s[:, None] < S) & (offs_s[None, :] < S)
    )


def _block(n: int) -> int:
    return max(16, triton.next_power_of_2(n))  # tl.dot needs sides of 16 or more


def supports(height: int, width: int, size: int) -> bool:
    """Whether the kernel takes images of ``height`` x ``width`` to ``size`` x ``size``."""
    return max(height, width, size) <= MAX_SIDE


def augment_fused(
    x: torch.Tensor,
    scale: torch.Tensor,
    shift: torch.Tensor,
    rows: torch.Tensor,
    cols: torch.Tensor,
    dtype: torch.dtype,
) -> torch.Tensor:
    """``rows[b] @ (x[b, c] * scale[c] + shift[c]) @ cols[b].T`` for every sample and band.

    Args:
        x: ``(B, C, H, W)`` int16 or float, any strides (e.g. one view of a pair batch).
        scale: ``1 / std`` per band, ``C`` values (any shape; used in float32).
        shift: ``-mean / std`` per band, likewise.
        rows: the row operator of :func:`~.transforms.axis_operators`, ``(B, S, H)``.
        cols: its column operator, ``(B, S, W)`` (both used in float32).
        dtype: dtype of the result.

    Returns:
        ``(B, C, S, S)`` contiguous, in ``dtype``.
    """
    b, c, h, w = x.shape
    s = rows.shape[1]
    if not supports(h, w, s):
        raise ValueError(f"augment_fused takes sides up to {MAX_SIDE} px, got {h}x{w} -> {s}")
    rows = rows.to(torch.float32).contiguous()
    cols = cols.to(torch.float32).contiguous()
    scale = scale.reshape(-1).to(torch.float32).contiguous()
    shift = shift.reshape(-1).to(torch.float32).contiguous()
    out = torch.empty(b, c, s, s, dtype=dtype, device=x.device)
    if out.numel() == 0:
        return out
    block_s = _block(s)
    _augment_kernel[(b, c)](
        x, scale, shift, rows, cols, out, h, w, s,
        *x.stride(), *out.stride(),
        BLOCK_S=block_s,
        BLOCK_W=_block(w),
        BLOCK_H=32 if block_s >= 64 else 16,
        PRECISION="tf32" if x.is_cuda else "ieee",
        num_warps=8 if block_s >= 128 else 4,
    )  # fmt: skip
    return out
