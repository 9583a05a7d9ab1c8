"""Train/val/test splits of a task: ``random`` per location and leak-free ``spatial``.

``random``: a seeded permutation of the task's locations cut at 0.75 / 0.10 (/ 0.15), as
SpectralEarth splits its downstream sets (which lets neighbouring and overlapping locations
and one source tile fall into train and test).

``spatial``: no source product and no spatial block contributes to two splits.

1. Blocks are square cells of ``block_m`` metres of an equal-area grid (EPSG:6933) holding
   the location centres.  Blocks are assigned to splits greedily, largest first (ties in a
   seeded order): each goes to the split least filled so far (locations / target), plus a
   penalty for moving the split's class distribution away from the whole task's.
2. A location's tentative split is its block's; each source product goes to the split
   holding most of its locations (ties to the earlier split).
3. A location is kept only if every product it was cut from is in its block's split; the
   others are left out of every split (-1, counted as ``dropped``).  So each kept location's
   block and products belong to its split alone: no leak by construction, and the test
   checks it.

Everything here is numpy on plain arrays: the caller provides centres, products and class
histograms.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class SplitConfig:
    """Split settings: fractions (train, val, test), seed, block size (m), balance weight."""

    fractions: tuple[float, float, float] = (0.75, 0.10, 0.15)
    seed: int = 0
    block_m: float = 50_000.0
    balance_weight: float = 1.0

    def __post_init__(self) -> None:
        if len(self.fractions) != 3 or any(f < 0 for f in self.fractions):
            raise ValueError(f"fractions must be three non-negative numbers: {self.fractions}")
        if abs(sum(self.fractions) - 1.0) > 1e-6:
            raise ValueError(f"fractions must sum to 1: {self.fractions}")
        if self.block_m <= 0:
            raise ValueError(f"block_m must be positive: {self.block_m}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "fractions": list(self.fractions),
            "seed": self.seed,
            "block_m": self.block_m,
            "balance_weight": self.balance_weight,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SplitConfig:
        return cls(
            tuple(float(v) for v in d["fractions"]),  # type: ignore[arg-type]
            int(d["seed"]),
            float(d["block_m"]),
            float(d["balance_weight"]),
        )


def random_split(n: int, config: SplitConfig) -> np.ndarray:
    """int8 ``(n,)`` split codes (0 train, 1 val, 2 test) of a seeded permutation."""
    order = np.random.default_rng(config.seed).permutation(n)
    f = config.fractions
    n_train = int(round(f[0] * n))
    n_val = int(round(f[1] * n))
    codes = np.full(n, 2, dtype=np.int8)
    codes[order[:n_train]] = 0
    codes[order[n_train : n_train + n_val]] = 1
    return codes


def block_ids(x: np.ndarray, y: np.ndarray, block_m: float) -> np.ndarray:
    """int64 ``(n,)``: a dense block number per point (cells of ``block_m`` metres)."""
    bx = np.floor(np.asarray(x) / block_m).astype(np.int64)
    by = np.floor(np.asarray(y) / block_m).astype(np.int64)
    _, inv = np.unique(np.column_stack([bx, by]), axis=0, return_inverse=True)
    return np.asarray(inv, dtype=np.int64).ravel()


def _distribution(h: np.ndarray) -> np.ndarray:
    s = h.sum()
    return h / s if s > 0 else h


def assign_blocks(
    blocks: np.ndarray,
    hist: np.ndarray,
    config: SplitConfig,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Split of each block, int8 ``(n_blocks,)`` (greedy fill with class balance).

    ``weights`` scale the target of each split (see :func:`spatial_split`).
    """
    n_blocks = int(blocks.max()) + 1 if len(blocks) else 0
    sizes = np.bincount(blocks, minlength=n_blocks).astype(np.float64)
    block_hist = np.zeros((n_blocks, hist.shape[1]))
    np.add.at(block_hist, blocks, hist)
    whole = _distribution(block_hist.sum(axis=0))
    target = np.asarray(config.fractions) * sizes.sum()
    if weights is not None:
        target = target * weights
    rng = np.random.default_rng(config.seed)
    tie = rng.permutation(n_blocks)
    order = np.lexsort((tie, -sizes))
    filled = np.zeros(3)
    split_hist = np.zeros((3, hist.shape[1]))
    out = np.zeros(n_blocks, dtype=np.int8)
    for b in order:
        best, best_cost = 0, np.inf
        for s in range(3):
            if target[s] <= 0:
                continue
            fill = filled[s] / target[s]
            drift = np.abs(_distribution(split_hist[s] + block_hist[b]) - whole).sum()
            cost = fill + config.balance_weight * drift * min(1.0, fill)
            if cost < best_cost:
                best, best_cost = s, cost
        out[b] = best
        filled[best] += sizes[b]
        split_hist[best] += block_hist[b]
    return out


def spatial_split(
    x: np.ndarray,
    y: np.ndarray,
    products: list[list[str]],
    hist: np.ndarray,
    config: SplitConfig,
) -> np.ndarray:
    """int8 ``(n,)`` split codes, -1 for locations left out to keep splits leak-free.

    Args:
        x: location centres (easting, metres of an equal-area CRS), ``(n,)``.
        y: location centres (northing), ``(n,)``.
        products: source products of each location (its views).
        hist: ``(n, n_classes)`` class histogram per location (zeros: no balancing).
        config: fractions, seed, block size.
    """
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=np.int8)
    blocks = block_ids(x, y, config.block_m)
    hist = np.asarray(hist, dtype=np.float64)
    names = sorted({p for ps in products for p in ps})
    pid = {p: k for k, p in enumerate(names)}
    loc_of = np.repeat(np.arange(n), [len(ps) for ps in products])
    prod_of = np.fromiter((pid[p] for ps in products for p in ps), np.int64, len(loc_of))
    frac = np.asarray(config.fractions)
    weights = np.ones(3)
    best: np.ndarray | None = None
    best_err = np.inf
    for _ in range(ROUNDS):
        codes = _keep_consistent(
            assign_blocks(blocks, hist, config, weights)[blocks], loc_of, prod_of, len(names)
        )
        kept = np.bincount(codes[codes >= 0], minlength=3).astype(np.float64)
        if kept.sum() == 0:
            break
        err = np.abs(kept / kept.sum() - frac).max()
        if err < best_err:
            best, best_err = codes, err
        # splits that lost more locations at their borders get a larger target next round
        weights = np.where(
            kept > 0, weights * (frac * kept.sum() / np.maximum(kept, 1)), 2 * weights
        )
        weights = np.clip(weights / weights.mean(), 0.2, 5.0)
    return best if best is not None else codes


ROUNDS = 6
"""Rounds of block assignment that correct split targets for the locations left out."""


def _keep_consistent(
    tentative: np.ndarray, loc_of: np.ndarray, prod_of: np.ndarray, n_products: int
) -> np.ndarray:
    """Each product to the split of most of its locations; drop locations that disagree."""
    votes = np.zeros((n_products, 3), dtype=np.int64)
    np.add.at(votes, (prod_of, tentative[loc_of]), 1)
    product_split = np.argmax(votes, axis=1)
    bad = np.zeros(len(tentative), dtype=bool)
    bad[loc_of[product_split[prod_of] != tentative[loc_of]]] = True
    codes = tentative.astype(np.int8)
    codes[bad] = -1
    return codes


def leaks(codes: np.ndarray, groups: list[list[Any]]) -> dict[Any, set[int]]:
    """Groups (products, blocks) that appear in more than one split: ``group -> splits``.

    ``groups[i]`` lists the groups of location ``i``; locations with code -1 are ignored.
    """
    seen: dict[Any, set[int]] = {}
    for c, gs in zip(codes, groups):
        if c < 0:
            continue
        for g in gs:
            seen.setdefault(g, set()).add(int(c))
    return {g: s for g, s in seen.items() if len(s) > 1}
