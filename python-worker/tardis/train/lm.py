"""Train one of the project's small non-gated decoder LMs and ship it as an HF model directory.

Three architectures, one recipe: `gpt2` (GPT2LMHeadModel, gelu_new), `neox` (GPTNeoXForCausalLM,
gelu) and `opt` (OPTForCausalLM, relu). FFNs are plain two-matrix MLPs with f = 4d, which is what
TARDIS folds. Training: random contiguous windows of the pre-tokenized corpus (drawn from a seeded
generator), AdamW, linear warm-up then cosine decay, bf16 autocast on CUDA. The weights are stored
in float16; the held-out evaluation runs on the stored float16 weights loaded back in float32, the
way the tests and the evaluation harness load them.

    python -m tardis.train.lm --arch gpt2 --corpus .corpus --time-budget 75 \
        --out /tmp/models/tardis-tiny-gpt2 --log train.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    GPT2Config,
    GPTNeoXConfig,
    OPTConfig,
    PretrainedConfig,
    PreTrainedModel,
)

EOT_ID = 0  # `<|endoftext|>` is the tokenizer's first (and only) special token
ARCH_CLASSES = {"gpt2": "GPT2LMHeadModel", "neox": "GPTNeoXForCausalLM", "opt": "OPTForCausalLM"}
ARCH_ACTIVATIONS = {"gpt2": "gelu_new", "neox": "gelu", "opt": "relu"}
EVAL_CONTEXT = 256
EVAL_STRIDE = 128
SLICE_TOKENS = 2048  # the deterministic held-out slice that the tests re-measure on CPU


@dataclass(frozen=True)
class Hparams:
    """Model shape and optimisation settings of one training run."""

    arch: str
    d_model: int = 256
    n_layer: int = 6
    n_head: int = 4
    context: int = 256
    vocab_size: int = 8192
    dropout: float = 0.1
    batch_size: int = 64
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    seed: int = 1234


def make_config(hp: Hparams) -> PretrainedConfig:
    """Build the HF config of `hp.arch` with a non-gated f = 4d FFN and tied embeddings."""
    ffn = 4 * hp.d_model
    common: dict[str, Any] = {"vocab_size": hp.vocab_size, "bos_token_id": EOT_ID, "eos_token_id": EOT_ID}
    if hp.arch == "gpt2":
        return GPT2Config(
            n_embd=hp.d_model,
            n_layer=hp.n_layer,
            n_head=hp.n_head,
            n_inner=ffn,
            n_positions=hp.context,
            activation_function="gelu_new",
            resid_pdrop=hp.dropout,
            embd_pdrop=hp.dropout,
            attn_pdrop=0.0,
            tie_word_embeddings=True,
            **common,
        )
    if hp.arch == "neox":
        return GPTNeoXConfig(
            hidden_size=hp.d_model,
            num_hidden_layers=hp.n_layer,
            num_attention_heads=hp.n_head,
            intermediate_size=ffn,
            max_position_embeddings=hp.context,
            hidden_act="gelu",
            hidden_dropout=hp.dropout,
            attention_dropout=0.0,
            tie_word_embeddings=True,
            **common,
        )
    if hp.arch == "opt":
        return OPTConfig(
            hidden_size=hp.d_model,
            num_hidden_layers=hp.n_layer,
            num_attention_heads=hp.n_head,
            ffn_dim=ffn,
            max_position_embeddings=hp.context,
            word_embed_proj_dim=hp.d_model,
            activation_function="relu",
            dropout=hp.dropout,
            attention_dropout=0.0,
            do_layer_norm_before=True,
            tie_word_embeddings=True,
            pad_token_id=EOT_ID,
            **common,
        )
    raise ValueError(f"unknown arch {hp.arch!r}: expected one of {sorted(ARCH_CLASSES)}")


def lr_at(step: int, total_steps: int, hp: Hparams) -> float:
    """Learning rate at `step`: linear warm-up to `hp.lr`, then cosine down to `min_lr_ratio·lr`."""
    if step < hp.warmup_steps:
        return hp.lr * (step + 1) / hp.warmup_steps
    progress = min(1.0, (step - hp.warmup_steps) / max(1, total_steps - hp.warmup_steps))
    floor = hp.lr * hp.min_lr_ratio
    return floor + 0.5 * (hp.lr - floor) * (1.0 + math.cos(math.pi * progress))


def window_starts(n_tokens: int, context: int, stride: int) -> list[int]:
    """Starts of full-length sliding windows covering `n_tokens` tokens (the last one flush right)."""
    if n_tokens <= context:
        return [0]
    starts = list(range(0, n_tokens - context + 1, stride))
    if starts[-1] + context < n_tokens:
        starts.append(n_tokens - context)
    return starts


@torch.no_grad()
def sliding_window_nll(
    model: torch.nn.Module, ids: torch.Tensor, context: int, stride: int, batch_size: int = 32
) -> tuple[float, int]:
    """Summed next-token NLL (nats) and token count over `ids` [N] with sliding windows.

    Every token but the first is scored exactly once; each scored token sees at least
    `context − stride` tokens of left context (all of them inside the first window). A stride of
    `context` or more is clamped to `context − 1`.
    """
    device = next(model.parameters()).device
    ids = ids.to(device=device, dtype=torch.long)
    n = ids.numel()
    win = min(context, n)
    # a window predicts its own tokens 1..win-1, so consecutive windows must overlap by one token
    starts = window_starts(n, win, max(1, min(stride, win - 1)))
    # score_from[k]: first window position whose *target* is new in window k
    score_from, prev_end = [], 1
    for s in starts:
        score_from.append(prev_end - s - 1)
        prev_end = s + win
    offsets = torch.arange(win, device=device)
    total, count = 0.0, 0
    for b in range(0, len(starts), batch_size):
        st = torch.tensor(starts[b : b + batch_size], device=device)
        x = ids[st[:, None] + offsets]
        logits = model(input_ids=x).logits[:, :-1].float()
        nll = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1), reduction="none"
        ).view(x.shape[0], win - 1)
        first = torch.tensor(score_from[b : b + batch_size], device=device)
        mask = offsets[None, : win - 1] >= first[:, None]
        total += float(nll[mask].sum())
        count += int(mask.sum())
    return total, count


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """AdamW groups: decay matrices (embeddings included), not biases or norm gains."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def train(
    hp: Hparams,
    train_ids: np.ndarray,
    steps: int | None,
    time_budget: float | None,
    device: torch.device,
    probe_steps: int = 60,
    max_epochs: float = 15.0,
) -> tuple[PreTrainedModel, dict[str, object]]:
    """Train a fresh model; fix the step count up front or from throughput measured while warming up.

    With `time_budget`, the steps that fit in it are counted after `probe_steps` (still inside the
    warm-up, whose learning rates do not depend on the total), capped at `max_epochs` passes.
    """
    if (steps is None) == (time_budget is None):
        raise ValueError("give exactly one of steps or time_budget")
    probe_steps = max(3, min(probe_steps, hp.warmup_steps))
    torch.manual_seed(hp.seed)
    model = AutoModelForCausalLM.from_config(make_config(hp)).to(device)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    cuda = device.type == "cuda"
    opt = torch.optim.AdamW(_param_groups(model, hp.weight_decay), lr=hp.lr, betas=(0.9, 0.95), eps=1e-8, fused=cuda)
    data = torch.from_numpy(train_ids.astype(np.int64)).to(device)
    gen = torch.Generator().manual_seed(hp.seed)
    offsets = torch.arange(hp.context)
    total_steps = steps if steps is not None else 10**9
    losses: list[torch.Tensor] = []
    history: list[dict[str, float]] = []
    t0 = time.perf_counter()
    t_probe = 0.0
    step = 0
    while step < total_steps:
        lr = lr_at(step, total_steps, hp)
        for group in opt.param_groups:
            group["lr"] = lr
        starts = torch.randint(0, data.numel() - hp.context, (hp.batch_size,), generator=gen)
        x = data[(starts[:, None] + offsets).to(device, non_blocking=True)]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), hp.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())
        step += 1
        if time_budget is not None and step == probe_steps // 3:
            if cuda:
                torch.cuda.synchronize()
            t_probe = time.perf_counter()
        if time_budget is not None and step == probe_steps:
            if cuda:
                torch.cuda.synchronize()
            now = time.perf_counter()
            rate = (probe_steps - probe_steps // 3) / (now - t_probe)
            remaining = max(0.0, time_budget - (now - t0))
            by_time = probe_steps + int(remaining * rate)
            by_epochs = int(max_epochs * train_ids.size / (hp.batch_size * hp.context))
            total_steps = max(probe_steps, hp.warmup_steps + 50, min(by_time, by_epochs) // 50 * 50)
        if step % 100 == 0 or step == total_steps:
            chunk = torch.stack(losses[-100:]).float().mean().item()
            history.append({"step": step, "loss": chunk, "lr": lr, "seconds": time.perf_counter() - t0})
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    tail = torch.stack(losses[-100:]).float()
    log: dict[str, object] = {
        "params": n_params,
        "steps": total_steps,
        "steps_chosen_from_time_budget": time_budget is not None,
        "time_budget_s": time_budget,
        "max_epochs": max_epochs,
        "tokens_per_step": hp.batch_size * hp.context,
        "tokens_seen": total_steps * hp.batch_size * hp.context,
        "epochs": total_steps * hp.batch_size * hp.context / train_ids.size,
        "train_seconds": seconds,
        "final_train_loss": float(tail.mean()),
        "final_train_loss_window": int(tail.numel()),
        "history": history,
    }
    return model, log


def evaluate(
    model: torch.nn.Module,
    heldout: np.ndarray,
    heldout_meta: dict[str, int],
    context: int = EVAL_CONTEXT,
    stride: int = EVAL_STRIDE,
) -> dict[str, float | int | None]:
    """Held-out NLL as token perplexity, bits per byte and word-level perplexity, plus the slice ppl."""
    ids = torch.from_numpy(heldout.astype(np.int64))
    model.eval()
    total, count = sliding_window_nll(model, ids, context, stride, batch_size=64)
    s_total, s_count = sliding_window_nll(model, ids[:SLICE_TOKENS], context, stride)
    whole = ids.numel() == heldout_meta["tokens"]  # bytes and words are known for the whole file only
    return {
        "context": context,
        "stride": stride,
        "tokens_scored": count,
        "nll_per_token": total / count,
        "ppl_token": math.exp(total / count),
        "bits_per_byte": total / math.log(2) / heldout_meta["bytes"] if whole else None,
        "ppl_word": math.exp(total / heldout_meta["words"]) if whole else None,
        "slice_tokens": SLICE_TOKENS,
        "slice_ppl_token": math.exp(s_total / s_count),
    }


def ship(model: PreTrainedModel, out_dir: Path, tokenizer_dir: Path, hp: Hparams) -> None:
    """Save the model in float16 (safetensors) with its generation config and tokenizer files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model = model.cpu().half()
    model.generation_config = GenerationConfig(bos_token_id=EOT_ID, eos_token_id=EOT_ID, pad_token_id=EOT_ID)
    model.save_pretrained(str(out_dir))
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(tokenizer_dir / name, out_dir / name)


def model_card(name: str, hp: Hparams, meta: dict, log: dict, command: str) -> str:
    """Render the model card (README.md) from the corpus metadata and the measured run log."""
    ev = log["heldout"]
    if log["steps_chosen_from_time_budget"]:
        epoch_cap = int(log["max_epochs"] * meta["train_tokens"] / log["tokens_per_step"]) // 50 * 50
        bound = (
            f"the {log['max_epochs']:g}-epoch cap, reached before the {log['time_budget_s']:g} s time budget"
            if log["steps"] == epoch_cap
            else f"the steps that fit its {log['time_budget_s']:g} s time budget at the measured speed"
        )
        steps_note = (
            f"The script fixed the step count after its first steps: {bound}.\n"
            f"Pass `--steps {log['steps']}` to repeat it exactly."
        )
    else:
        steps_note = f"The step count was fixed with `--steps {log['steps']}`."
    last_n = log["final_train_loss_window"]
    bpb = "n/a" if ev["bits_per_byte"] is None else f"{ev['bits_per_byte']:.3f}"
    ppl_word = "n/a" if ev["ppl_word"] is None else f"{ev['ppl_word']:.1f}"
    rows = "\n".join(
        f"| {src} | {s['documents']} | {s['chars']:,} | {s['tokens']:,} |" for src, s in meta["sources"].items()
    )
    return f"""---
library_name: transformers
license: other
language: en
pipeline_tag: text-generation
---

# {name}

A tiny {ARCH_CLASSES[hp.arch]} ({log["params"]:,} parameters, tied embeddings) trained from scratch
by the TARDIS project as a test and benchmark model for FFN folding. Not a useful language model:
it is small and saw a few million tokens of public-domain and CC BY-SA text, many times over.

| | |
|---|---|
| architecture | `{ARCH_CLASSES[hp.arch]}`, {hp.n_layer} layers, d = {hp.d_model}, {hp.n_head} heads |
| FFN | non-gated, f = {4 * hp.d_model} (4d), activation `{ARCH_ACTIVATIONS[hp.arch]}` |
| context | {hp.context} tokens |
| tokenizer | project-trained byte-level BPE, vocab {hp.vocab_size}, `<|endoftext|>` = id {EOT_ID} |
| weights | float16 safetensors (load with `dtype=torch.float32` for evaluation) |

## Training data ({meta["train_tokens"]:,} tokens; documents joined by `<|endoftext|>`)

| source | documents | characters | tokens |
|---|---|---|---|
{rows}

Sources: WikiText-2 *validation* split (CC BY-SA 3.0), Tiny Shakespeare (public domain), the King
James Bible from Debian `bible-kjv-text` (public domain), and the English Wikipedia excerpt and Lee
news corpus from the PyPI `gensim` 4.4.0 wheel's test data (markup stripped). WikiText-2 *test* is
held out and never trained on.

## Training

| | |
|---|---|
| steps | {log["steps"]:,} |
| batch | {hp.batch_size} × {hp.context} = {log["tokens_per_step"]:,} tokens |
| tokens seen | {log["tokens_seen"]:,} ({log["epochs"]:.1f} epochs) |
| optimizer | AdamW, β = (0.9, 0.95), weight decay {hp.weight_decay}, grad clip {hp.grad_clip} |
| lr schedule | linear warm-up {hp.warmup_steps} steps to {hp.lr:g}, cosine to {hp.lr * hp.min_lr_ratio:g} |
| dropout | {hp.dropout} (residual/hidden), seed {hp.seed} |
| precision | {log["precision"]} on {log["device"]}, {log["train_seconds"]:.0f} s of training |
| final train loss | {log["final_train_loss"]:.3f} (mean of the last {last_n} steps, dropout on) |

{steps_note}

## Held-out evaluation: WikiText-2 test

Sliding window, context {ev["context"]}, stride {ev["stride"]}, float16 weights evaluated in
float32; every token but the first scored once ({ev["tokens_scored"]:,} tokens).

| metric | value |
|---|---|
| perplexity per BPE token | {ev["ppl_token"]:.2f} |
| bits per byte | {bpb} |
| word-level perplexity (whitespace words) | {ppl_word} |
| perplexity on the first {ev["slice_tokens"]} tokens (the test slice) | {ev["slice_ppl_token"]:.2f} |

## Reproduce

```
{command}
```
"""


def main(argv: list[str] | None = None) -> None:
    """Command line: train, evaluate and ship one model; append its numbers to a JSON log."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", choices=sorted(ARCH_CLASSES), required=True)
    p.add_argument("--corpus", type=Path, default=Path(".corpus"))
    p.add_argument("--out", type=Path, required=True, help="model directory to write")
    p.add_argument("--log", type=Path, required=True, help="JSON log to add this run to")
    p.add_argument("--name", default=None, help="model name (default tardis-tiny-<arch>)")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--steps", type=int)
    g.add_argument("--time-budget", type=float, help="seconds of training; steps fixed after a probe")
    for field in ("d_model", "n_layer", "n_head", "context", "batch_size", "warmup_steps", "seed"):
        p.add_argument("--" + field.replace("_", "-"), type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--max-epochs", type=float, default=15.0, help="cap on the steps a time budget allows")
    p.add_argument("--eval-tokens", type=int, default=0, help="evaluate on a prefix only (smoke runs)")
    args = p.parse_args(argv)

    overrides = {k: v for k, v in vars(args).items() if k in Hparams.__dataclass_fields__ and v is not None}
    overrides.pop("arch", None)
    meta = json.loads((args.corpus / "meta.json").read_text())
    hp = Hparams(arch=args.arch, vocab_size=meta["tokenizer"]["vocab_size"], **overrides)
    name = args.name or f"tardis-tiny-{args.arch}"
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")

    train_ids = np.load(args.corpus / "train_ids.npy")
    model, log = train(hp, train_ids, args.steps, args.time_budget, device, max_epochs=args.max_epochs)
    cuda = device.type == "cuda"
    log["device"] = torch.cuda.get_device_name(device) if cuda else f"CPU ({platform.machine()})"
    log["precision"] = "bf16 autocast, fp32 master weights" if cuda else "fp32"
    ship(model, args.out, args.corpus / "tokenizer", hp)
    shipped = AutoModelForCausalLM.from_pretrained(str(args.out), dtype=torch.float32)
    shipped = torch.nn.Module.to(shipped, device)
    heldout = np.load(args.corpus / "heldout_ids.npy")
    if args.eval_tokens:
        heldout = heldout[: args.eval_tokens]  # smoke runs only; the shipped numbers use all of it
    context = min(EVAL_CONTEXT, hp.context)
    log["heldout"] = evaluate(shipped, heldout, meta["heldout"], context, min(EVAL_STRIDE, context // 2))
    log["hparams"] = asdict(hp)
    log["config"] = shipped.config.to_dict()
    log["safetensors_bytes"] = (args.out / "model.safetensors").stat().st_size
    log["torch"] = torch.__version__
    command = (
        "bash bench/train_models.sh prepare   # here: corpus + tokenizer (needs apt and PyPI)\n"
        "bash bench/train_models.sh           # on one H200: trains all three models\n"
        "# or this model alone, with the same step count:\n"
        f"python -m tardis.train.lm --arch {args.arch} --corpus .corpus --steps {log['steps']} "
        f"--out models/{name} --log train.json"
    )
    (args.out / "README.md").write_text(model_card(name, hp, meta, log, command))

    runs = json.loads(args.log.read_text()) if args.log.exists() else {"corpus": meta, "runs": {}}
    runs["runs"][name] = log
    args.log.write_text(json.dumps(runs, indent=2) + "\n")
    summary = {k: log[k] for k in ("steps", "train_seconds", "final_train_loss")}
    print(name, json.dumps(summary), json.dumps(log["heldout"]), flush=True)


if __name__ == "__main__":
    main()
