"""Calibration and held-out token batches from raw texts."""

from __future__ import annotations

from typing import Any

import torch

from tardis.config import FoldConfig
from tardis.errors import ConfigError


def join_tokens(tokenizer: Any, texts: list[str], limit: int | None = None) -> list[int]:
    """Token ids of the texts in order, each followed by the tokenizer's EOS token if it has one.

    Stops once `limit` ids are collected (the result may run past it by one text).
    """
    eos = getattr(tokenizer, "eos_token_id", None)
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(int(eos))
        if limit is not None and len(ids) >= limit:
            break
    return ids


def token_batches(
    tokenizer: Any, texts: list[str], config: FoldConfig
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Split texts into calibration and held-out batches of [batch, seq_len] token ids.

    Texts are tokenized in order and joined with the tokenizer's EOS token (if it has one); the
    first `calib_tokens` tokens (rounded down to whole sequences) calibrate, the next
    `heldout_tokens` are held out. Raises ConfigError naming the shortfall when the texts are too short.
    """
    seq = config.seq_len
    n_calib = max(1, config.calib_tokens // seq)
    n_held = config.heldout_tokens // seq
    need = (n_calib + n_held) * seq
    ids = join_tokens(tokenizer, texts, need)
    if len(ids) < need:
        raise ConfigError(
            f"the calibration texts give {len(ids)} tokens but calib_tokens + heldout_tokens need {need} "
            f"({n_calib} + {n_held} sequences of seq_len={seq}); pass more text or lower calib_tokens/heldout_tokens"
        )
    all_ids = torch.tensor(ids[:need], dtype=torch.long).view(-1, seq)
    calib, held = all_ids[:n_calib], all_ids[n_calib:]
    bs = config.batch_size
    return list(calib.split(bs)), list(held.split(bs)) if n_held else []
