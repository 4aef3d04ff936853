"""`tardis::greedy_step`: the greedy decode loop's bookkeeping after the LM head, as one op. From the last position's
logits [B, V] it takes each row's argmax (the first index of the largest value, a NaN counting as the largest, as
torch.argmax), writes it as the next step's input ids [B, 1] and into the output tokens [B, T] at column
min(step, T − 1), and advances the device-side step counter: what `argmax`, `clamp`, `index_copy_`, `copy_` and
`add_` do in five launches. At batch 1 PyTorch's argmax walks a 65024-wide row with one block (about 16 µs on an
H200); here the row is split over programs that each reduce a chunk, and one program merges the chunks and does
the writes (two launches, static grids: CUDA-graph safe). CUDA: Triton; CPU: those torch ops."""

from __future__ import annotations

import torch


def greedy_step_reference(logits: torch.Tensor, ids: torch.Tensor, tokens: torch.Tensor, step: torch.Tensor) -> None:
    """The writes as torch ops (five launches on a GPU): the CPU op, and what the kernels replace."""
    nxt = logits.argmax(-1, keepdim=True)
    tokens.index_copy_(1, step.clamp(max=tokens.shape[1] - 1), nxt)
    ids.copy_(nxt)
    step.add_(1)


@torch.library.custom_op("tardis::greedy_step", mutates_args=("ids", "tokens", "step"))
def _greedy_step_op(logits: torch.Tensor, ids: torch.Tensor, tokens: torch.Tensor, step: torch.Tensor) -> None:
    """ids[:, 0] = tokens[:, min(step, T − 1)] = argmax(logits, −1); step += 1 (see the module's doc)."""
    if logits.is_cuda:
        from tardis.kernels.greedy_triton import launch_greedy_step  # Triton only where there is a GPU

        launch_greedy_step(logits, ids, tokens, step)
        return
    greedy_step_reference(logits, ids, tokens, step)


@_greedy_step_op.register_fake
def _(logits: torch.Tensor, ids: torch.Tensor, tokens: torch.Tensor, step: torch.Tensor) -> None:
    return None


def greedy_step(logits: torch.Tensor, ids: torch.Tensor, tokens: torch.Tensor, step: torch.Tensor) -> None:
    """One greedy decode step's writes (`tardis::greedy_step`): logits [B, V] (floating; rows may be strided, e.g.
    the last position of [B, S, V]); ids [B, 1] and tokens [B, T] int64; step int64 [1], the column the step's
    tokens go to (clamped to T − 1), advanced by one. All on one device."""
    b = logits.shape[0]
    if logits.ndim != 2 or not logits.is_floating_point() or logits.shape[1] == 0:
        raise ValueError(f"greedy_step: logits {tuple(logits.shape)} {logits.dtype}: want floating [B, V], V ≥ 1")
    if tuple(ids.shape) != (b, 1) or tokens.ndim != 2 or tokens.shape[0] != b or tokens.shape[1] == 0:
        raise ValueError(
            f"greedy_step: ids {tuple(ids.shape)}, tokens {tuple(tokens.shape)}: want ids [B, 1] and tokens [B, T] "
            f"with B = {b} (the logits' rows) and T ≥ 1"
        )
    if tuple(step.shape) != (1,) or any(t.dtype != torch.int64 for t in (ids, tokens, step)):
        raise ValueError(
            f"greedy_step: ids {ids.dtype}, tokens {tokens.dtype}, step {tuple(step.shape)} {step.dtype}: want "
            "int64 ids and tokens and an int64 step of shape [1]"
        )
    if len({t.device for t in (logits, ids, tokens, step)}) != 1:
        raise ValueError("greedy_step: logits, ids, tokens and step must be on one device")
    torch.ops.tardis.greedy_step(logits, ids, tokens, step)
