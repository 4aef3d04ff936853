"""Named block sizes of the decode kernels (importable without Triton, e.g. to size the workspace)."""

from __future__ import annotations

WF_BLOCK_ROWS = 16  # folded rows per program (d/16 programs: several per SM)
WF_BLOCK_K = 256  # folded GEMV step along d
UP_BLOCK_NEURONS = 16  # listed neurons per up-gather item
UP_BLOCK_K = 128  # up-gather step along d
UP_SPLITS = 8  # d is split in about this many chunks per neuron block
DOWN_BLOCK_NEURONS = 32  # listed neurons per down-scatter item
DOWN_BLOCK_COLS = 256  # output columns per down-scatter item
SMALL_BATCH = 0  # batches up to this many tokens run the v2 "small" kernels by default (they take 1..4;
# superseded by the plane kernel, see bench/NOTES.md)
PLANE_BATCH = 4  # batches up to this many tokens run the plane-order predictor kernel by default (1..4)
PLANE_TILES = 1  # 64-row predictor tiles per program of the plane kernel
PLANE_WARPS = 4  # warps per program of the plane kernel
SMALL_MAX_BATCH = 4  # the most tokens the small-batch kernels take (small=True)
SMALL_GROUPS_PER_STEP = 4  # predictor groups loaded per loop step in the small-batch stacked kernel
SMALL_WARPS = 8  # warps per program of the small-batch stacked kernel
PROGRAMS_PER_SM = 4  # persistent grid size of the up-gather and down-scatter kernels


def workspace_size(d: int) -> int:
    """int32 words of persistent workspace: [list count, items done, one ticket per column block]."""
    return 2 + -(-d // DOWN_BLOCK_COLS)
