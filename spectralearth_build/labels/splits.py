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
4. Small archives: if that leaves a split empty, repairs are tried and the best one that
   fills every split is taken.  *Search*: with few products, every assignment of products to
   splits is tried (a location is kept where all its products and its block agree).
   *Carving*: one block moves to the empty split with all of its locations' products
   (locations elsewhere cut from those products are dropped).  *Groups*: the independent
   groups (connected components of locations linked by a shared product or block) are
   assigned whole, greedily as blocks are, then the smallest group of a split that has
   several moves to each empty one; nothing is dropped and no group is split, so with at
   least 3 groups train, val and test are never empty.  With fewer, a split may stay empty:
   :func:`split_warning` says so with the counts.

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
    codes = np.full(n, -1, dtype=np.int8)
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
    codes = best if best is not None else codes
    if not _empty_splits(codes, frac):
        return codes
    candidates = []
    if (int(blocks.max()) + 1) * n <= SEARCH_CELLS:
        candidates.append(_carve(codes, blocks, loc_of, prod_of, len(names), frac))
    searched = _search_products(blocks, loc_of, prod_of, len(names), hist, frac)
    if searched is not None:
        candidates.append(searched)
    groups = independent_groups(blocks, loc_of, prod_of, len(names))
    if groups.max() >= 2:
        candidates.append(_assign_groups(groups, hist, config))
    full = [c for c in candidates if not _empty_splits(c, frac)]
    if not full:
        return codes
    return min(full, key=lambda c: _score(c, hist, frac))


def _empty_splits(codes: np.ndarray, frac: np.ndarray) -> list[int]:
    """Splits with a positive target fraction and no location."""
    kept = np.bincount(codes[codes >= 0], minlength=3)
    return [s for s in range(3) if frac[s] > 0 and kept[s] == 0]


def _score(codes: np.ndarray, hist: np.ndarray, frac: np.ndarray) -> float:
    """Lower is better: share left out + split size error + largest class drift."""
    kept = codes >= 0
    if not kept.any():
        return np.inf
    sizes = np.bincount(codes[kept], minlength=3) / kept.sum()
    whole = _distribution(hist[kept].sum(axis=0))
    drift = max(
        (np.abs(_distribution(hist[codes == s].sum(axis=0)) - whole).max() for s in range(3)),
        default=0.0,
    )
    return float((1 - kept.mean()) + np.abs(sizes - frac).max() + drift)


def independent_groups(
    blocks: np.ndarray, loc_of: np.ndarray, prod_of: np.ndarray, n_products: int
) -> np.ndarray:
    """int64 ``(n,)``: connected component of each location (shared product or block)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(blocks)
    n_blocks = int(blocks.max()) + 1 if n else 0
    # bipartite graph: locations 0..n-1, products n.., blocks n+n_products..
    rows = np.concatenate([loc_of, np.arange(n)])
    cols = np.concatenate([n + prod_of, n + n_products + blocks])
    size = n + n_products + n_blocks
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(size, size))
    _, labels = connected_components(graph, directed=False)
    _, dense = np.unique(labels[:n], return_inverse=True)
    return np.asarray(dense, dtype=np.int64).ravel()


def _assign_groups(groups: np.ndarray, hist: np.ndarray, config: SplitConfig) -> np.ndarray:
    """Whole independent groups to splits, every split with a positive fraction non-empty."""
    split = assign_blocks(groups, hist, config)
    sizes = np.bincount(groups)
    frac = np.asarray(config.fractions)
    for s in [s for s in range(3) if frac[s] > 0]:
        if (split == s).any():
            continue
        counts = np.bincount(split, minlength=3)
        donors = [g for g in np.argsort(sizes, kind="stable") if counts[split[g]] > 1]
        if donors:
            split[donors[0]] = s
    return split[groups].astype(np.int8)


def _carve(
    codes: np.ndarray,
    blocks: np.ndarray,
    loc_of: np.ndarray,
    prod_of: np.ndarray,
    n_products: int,
    frac: np.ndarray,
) -> np.ndarray:
    """Fill each empty split with the block (and its locations' products) that costs least.

    A block moves to the split with every product its locations use; locations elsewhere cut
    from those products are dropped.  Among the moves that fill the split and empty no other,
    the one that keeps most locations, then comes closest to the split's target, is taken.
    """
    n_blocks = int(blocks.max()) + 1
    block_split = np.full(n_blocks, -1, dtype=np.int64)
    kept = codes >= 0
    block_split[blocks[kept]] = codes[kept]
    # blocks without kept locations: the split their locations' block would have had
    block_split[block_split < 0] = 0
    votes = np.zeros((n_products, 3), dtype=np.int64)
    np.add.at(votes, (prod_of, block_split[blocks][loc_of]), 1)
    product_split = np.argmax(votes, axis=1)
    out = codes.copy()
    for s in _empty_splits(out, frac):
        need = [k for k in range(3) if k == s or (out == k).any()]
        best, best_key = None, None
        for b in range(n_blocks):
            if block_split[b] == s:
                continue
            bs = block_split.copy()
            bs[b] = s
            ps = product_split.copy()
            ps[prod_of[blocks[loc_of] == b]] = s
            trial = _codes_from(bs, ps, blocks, loc_of, prod_of)
            counts = np.bincount(trial[trial >= 0], minlength=3)
            if any(counts[k] == 0 for k in need):
                continue
            key = (-(trial >= 0).sum(), abs(counts[s] / max(counts.sum(), 1) - frac[s]))
            if best_key is None or key < best_key:
                best, best_key = (bs, ps, trial), key
        if best is None:
            return out
        block_split, product_split, out = best
    return out


SEARCH_CELLS = 4_000_000
"""Repairs run only on small archives: the product search while ``3 ** products * locations``,
carving while ``blocks * locations`` stays below this."""


def _search_products(
    blocks: np.ndarray,
    loc_of: np.ndarray,
    prod_of: np.ndarray,
    n_products: int,
    hist: np.ndarray,
    frac: np.ndarray,
    shortlist: int = 256,
) -> np.ndarray | None:
    """Best assignment of few products to splits, tried exhaustively (None: too many).

    For each of the ``3 ** products`` assignments a location is kept in split ``s`` if all its
    products are in ``s``; within a block only the split with most kept locations stays.  Of
    the assignments that leave no split empty, the ``shortlist`` keeping most locations closest
    to the fractions are scored as the other repairs are (:func:`_score`, with class drift).
    """
    import itertools

    n = len(blocks)
    if 3**n_products * max(n, 1) > SEARCH_CELLS:
        return None
    member = np.zeros((n, n_products))
    member[loc_of, prod_of] = 1.0
    n_of = member.sum(axis=1)
    assign = np.array(list(itertools.product(range(3), repeat=n_products)), dtype=np.int8)
    codes = np.full((len(assign), n), -1, dtype=np.int8)
    for k in range(3):
        full = ((assign == k).astype(np.float64) @ member.T) == n_of
        codes[full] = k
    n_blocks = int(blocks.max()) + 1
    in_block = np.zeros((n, n_blocks))
    in_block[np.arange(n), blocks] = 1.0
    per_block = np.stack([(codes == k).astype(np.float64) @ in_block for k in range(3)], axis=2)
    choice = np.argmax(per_block, axis=2)[:, blocks]
    codes = np.where(codes == choice, codes, -1).astype(np.int8)
    sizes = np.stack([(codes == k).sum(axis=1) for k in range(3)], axis=1)
    ok = np.all((sizes > 0) | (frac <= 0), axis=1)
    if not ok.any():
        return None
    kept = sizes.sum(axis=1)
    error = np.abs(sizes / np.maximum(kept, 1)[:, None] - frac).max(axis=1)
    rough = np.where(ok, kept - error, -np.inf)
    top = np.argsort(-rough, kind="stable")[: min(shortlist, int(ok.sum()))]
    return min((codes[k] for k in top), key=lambda c: _score(c, hist, frac))


def _codes_from(
    block_split: np.ndarray,
    product_split: np.ndarray,
    blocks: np.ndarray,
    loc_of: np.ndarray,
    prod_of: np.ndarray,
) -> np.ndarray:
    """Each location in its block's split, -1 if one of its products is in another."""
    codes = block_split[blocks].astype(np.int8)
    bad = np.zeros(len(codes), dtype=bool)
    bad[loc_of[product_split[prod_of] != codes[loc_of]]] = True
    codes[bad] = -1
    return codes


def split_warning(
    codes: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    products: list[list[str]],
    config: SplitConfig,
) -> str | None:
    """A one-line warning if a split with a positive fraction is empty, else None."""
    frac = np.asarray(config.fractions)
    empty = _empty_splits(np.asarray(codes), frac)
    if not empty or not len(codes):
        return None
    blocks = block_ids(x, y, config.block_m)
    names = sorted({p for ps in products for p in ps})
    pid = {p: k for k, p in enumerate(names)}
    loc_of = np.repeat(np.arange(len(codes)), [len(ps) for ps in products])
    prod_of = np.fromiter((pid[p] for ps in products for p in ps), np.int64, len(loc_of))
    groups = int(independent_groups(blocks, loc_of, prod_of, len(names)).max()) + 1
    which = " and ".join(SPLIT_NAMES[s] for s in empty)
    return (
        f"too small for a leak-free spatial split: {which} empty ({len(codes)} locations in "
        f"{int(blocks.max()) + 1} blocks of {config.block_m / 1000:g} km from {len(names)} "
        f"products, {groups} independent group(s) sharing no product or block; 3 guarantee a "
        "split): use smaller blocks (--block-km) or the random scheme"
    )


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
