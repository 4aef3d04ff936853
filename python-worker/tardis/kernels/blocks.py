"""Named block sizes of the decode kernels (importable without Triton, e.g. to size the workspace)."""

from __future__ import annotations

WF_BLOCK_ROWS = 16  # folded rows per program (d/16 programs: several per SM)
WF_BLOCK_K = 256  # folded GEMV step along d
UP_BLOCK_NEURONS = 16  # listed neurons per up-gather item
UP_BLOCK_K = 128  # up-gather step along d
UP_SPLITS = 8  # d is split in about this many chunks per neuron block
DOWN_BLOCK_NEURONS = 32  # listed neurons per down-scatter item
DOWN_BLOCK_COLS = 256  # output columns per down-scatter item
PROGRAMS_PER_SM = 4  # persistent grid size of the up-gather and down-scatter kernels


def workspace_size(d: int) -> int:
    """int32 words of persistent workspace: [list count, items done, one ticket per column block]."""
    return 2 + -(-d // DOWN_BLOCK_COLS)
