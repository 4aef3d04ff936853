"""Loaded variants: the engine registry behind LoadVariant, UnloadVariant, Generate and Stats.

The HF engine (tardis.engines.hf) is the reference; vLLM is reported when installed but not wired
into this worker yet. Each loaded variant has a lock: one generation at a time per model.
"""

from __future__ import annotations

import importlib.util
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from tardis.engines import hf
from tardis.worker.errors import WorkerError, invalid, not_found
from tardis.worker.telemetry import Publisher, engine_topic

MAX_NEW_TOKENS = 4096


def available_engines() -> list[str]:
    """Engines LoadVariant accepts on this machine."""
    return ["hf"] + (["vllm"] if importlib.util.find_spec("vllm") is not None else [])


@dataclass
class LoadedVariant:
    """A variant in memory with its live counters."""

    variant_id: str
    engine: str
    device: str
    path: Path
    model: Any
    tokenizer: Any
    manifest: dict[str, Any]
    loaded_at: float = field(default_factory=time.time)
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: int = 0
    generated_tokens: int = 0
    generate_seconds: float = 0.0

    def layer_counters(self) -> list[dict[str, Any]]:
        """hf.counters per layer, with the live and the calibrated fallback rate."""
        calibrated = [row.get("measured_fallback_rate") for row in self.manifest["report"]["layers"]]
        rows = []
        for i, c in enumerate(hf.counters(self.model)):
            pairs = c["tokens"] * c["neurons"]
            rows.append(
                {
                    "layer": i,
                    **c,
                    "fallback_rate": c["flagged"] / pairs if pairs else None,
                    "calibrated_fallback_rate": calibrated[i] if i < len(calibrated) else None,
                }
            )
        return rows

    def stats(self) -> dict[str, Any]:
        """Counters and throughput of this variant."""
        layers = self.layer_counters()
        pairs = sum(r["tokens"] * r["neurons"] for r in layers)
        return {
            "variant_id": self.variant_id,
            "engine": self.engine,
            "device": self.device,
            "layers": layers,
            "fallback_rate": sum(r["flagged"] for r in layers) / pairs if pairs else None,
            "requests": self.requests,
            "generated_tokens": self.generated_tokens,
            "tokens_per_second": self.generated_tokens / self.generate_seconds if self.generate_seconds else None,
            "loaded_seconds": time.time() - self.loaded_at,
        }


@dataclass(frozen=True)
class GenerateParams:
    """Sampling parameters of one Generate call."""

    max_new_tokens: int = 32
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()


class EngineRegistry:
    """Variants loaded on this worker, by variant id."""

    def __init__(self, device: str, publisher: Publisher):
        self.device = device
        self.publisher = publisher
        self._lock = threading.Lock()
        self._loaded: dict[str, LoadedVariant] = {}

    def ids(self) -> list[str]:
        """Ids of the loaded variants."""
        return sorted(self._loaded)

    def load(self, path: str, engine: str, device: str | None, prefill: str | None) -> tuple[LoadedVariant, bool]:
        """Load (hashes verified) or find the variant at `path`; returns it and whether it was loaded already."""
        if engine not in ("hf", "vllm"):
            raise invalid(f"engine {engine!r} is unknown: expected 'hf' or 'vllm'")
        if engine == "vllm":
            if "vllm" not in available_engines():
                raise WorkerError("FAILED_PRECONDITION", "vLLM is not installed on this worker; load with engine 'hf'")
            raise WorkerError(
                "UNIMPLEMENTED", "the vLLM engine is not wired into the worker yet; load with engine 'hf'"
            )
        if prefill not in (None, "dense", "tardis"):
            raise invalid(f"prefill {prefill!r} is invalid: expected 'dense' or 'tardis'")
        root = Path(path).expanduser()
        if not root.is_dir():
            raise not_found(
                f"variant path {str(root)!r} is not a directory on the worker; pass a variant artifact directory"
            )
        manifest_file = root / "manifest.json"
        if not manifest_file.is_file():
            raise WorkerError("FAILED_PRECONDITION", f"{root} is not a TARDIS variant: manifest.json is missing")
        variant_id = str(json.loads(manifest_file.read_text())["variant_id"])
        with self._lock:
            if variant_id in self._loaded:
                return self._loaded[variant_id], True
        dev = device or self.device
        model, tokenizer = hf.load(root, device=dev)  # verifies every hash: ArtifactError → FAILED_PRECONDITION
        if prefill:
            hf.set_prefill(model, prefill)
        manifest = json.loads(manifest_file.read_text())
        loaded = LoadedVariant(variant_id, engine, dev, root, model, tokenizer, manifest)
        with self._lock:
            self._loaded.setdefault(variant_id, loaded)
        self.publisher.publish(
            engine_topic(variant_id), "loaded", {"variant_id": variant_id, "engine": engine, "device": dev}
        )
        return self._loaded[variant_id], False

    def unload(self, variant_id: str) -> None:
        """Drop a loaded variant and free its memory."""
        with self._lock:
            loaded = self._loaded.pop(variant_id, None)
        if loaded is None:
            raise not_found(f"variant {variant_id!r} is not loaded on this worker; loaded: {self.ids()}")
        with loaded.lock:  # let a running generation finish first
            del loaded.model
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.publisher.publish(engine_topic(variant_id), "unloaded", {"variant_id": variant_id})

    def get(self, variant_id: str) -> LoadedVariant:
        """A loaded variant, or NOT_FOUND naming the loaded ones."""
        loaded = self._loaded.get(variant_id)
        if loaded is None:
            raise not_found(
                f"variant {variant_id!r} is not loaded on this worker; call LoadVariant first (loaded: {self.ids()})"
            )
        return loaded

    def stats(self, variant_id: str) -> list[dict[str, Any]]:
        """Stats of one variant, or of all when `variant_id` is empty."""
        targets = [self.get(variant_id)] if variant_id else [self._loaded[i] for i in self.ids()]
        return [v.stats() for v in targets]

    def generate(self, variant_id: str, prompt: str, params: GenerateParams) -> Iterator[dict[str, Any]]:
        """Token chunks {index, token_id, text}, then a final one with finish_reason and usage."""
        if not 1 <= params.max_new_tokens <= MAX_NEW_TOKENS:
            raise invalid(f"max_new_tokens={params.max_new_tokens} is invalid: expected 1..{MAX_NEW_TOKENS}")
        v = self.get(variant_id)
        if v.model.get_output_embeddings() is None:  # an encoder (BertModel): no LM head to sample from
            raise WorkerError(
                "FAILED_PRECONDITION",
                f"variant {variant_id} is a {type(v.model).__name__}, not a causal LM: Generate needs a decoder",
            )
        if v.tokenizer is None:
            raise WorkerError("FAILED_PRECONDITION", f"variant {variant_id} has no tokenizer in its artifact")
        with v.lock:
            yield from self._decode(v, prompt, params)

    @torch.no_grad()
    def _decode(self, v: LoadedVariant, prompt: str, params: GenerateParams) -> Iterator[dict[str, Any]]:
        tok, model = v.tokenizer, v.model
        ids = tok(prompt, add_special_tokens=False)["input_ids"] or [tok.eos_token_id or 0]
        before = hf.counters(model)
        gen = torch.Generator().manual_seed(params.seed)
        eos = tok.eos_token_id
        hold = max((len(s) for s in params.stop), default=1) - 1  # text that may still become a stop string
        t0 = time.perf_counter()
        ttft = 0.0
        out: list[int] = []
        sent, past, step_ids, finish = "", None, torch.tensor([ids], device=v.device), "length"
        for i in range(params.max_new_tokens):
            res = model(input_ids=step_ids, past_key_values=past, use_cache=True)
            past = res.past_key_values
            logits = res.logits[0, -1].float().cpu()
            nxt = _pick(logits, params, gen)
            if i == 0:
                ttft = time.perf_counter() - t0
            if eos is not None and nxt == eos:
                finish = "eos"
                break
            out.append(nxt)
            text = tok.decode(out, skip_special_tokens=True)
            cut = min((text.find(s) for s in params.stop if s in text), default=-1)
            if cut >= 0:
                text, finish = text[:cut], "stop"
            ready = text if finish == "stop" else text[: max(len(sent), len(text) - hold)]
            if ready.endswith("\ufffd"):  # an incomplete multi-byte character: wait for the next token
                ready = sent
            yield {"index": i, "token_id": nxt, "text": ready[len(sent) :]}
            sent = ready
            if finish == "stop":
                break
            step_ids = torch.tensor([[nxt]], device=v.device)
        final = tok.decode(out, skip_special_tokens=True)
        if finish != "stop" and len(final) > len(sent):
            yield {"index": len(out), "token_id": -1, "text": final[len(sent) :]}  # held-back tail
        seconds = time.perf_counter() - t0
        v.requests += 1
        v.generated_tokens += len(out)
        v.generate_seconds += seconds
        after = hf.counters(model)
        flagged = sum(a["flagged"] - b["flagged"] for a, b in zip(after, before, strict=True))
        pairs = sum((a["tokens"] - b["tokens"]) * a["neurons"] for a, b in zip(after, before, strict=True))
        usage = {
            "prompt_tokens": len(ids),
            "completion_tokens": len(out),
            "seconds": seconds,
            "tokens_per_second": len(out) / seconds if seconds else 0.0,
            "time_to_first_token": ttft,
            "fallback_rate": flagged / pairs if pairs else None,
        }
        layers = [  # this request's per-layer fallback rates, for live dashboards (telemetry only)
            {"layer": i, "fallback_rate": (a["flagged"] - b["flagged"]) / ((a["tokens"] - b["tokens"]) * a["neurons"])}
            for i, (a, b) in enumerate(zip(after, before, strict=True))
            if a["tokens"] > b["tokens"] and a["neurons"]
        ]
        self.publisher.publish(
            engine_topic(v.variant_id), "generate", {"variant_id": v.variant_id, **usage, "layers": layers}
        )
        yield {"index": len(out), "finish_reason": finish, "usage": usage}


def _pick(logits: torch.Tensor, params: GenerateParams, gen: torch.Generator) -> int:
    """Greedy at temperature 0, else nucleus sampling with the request's seed."""
    if params.temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(0) - sorted_p < params.top_p
        probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
    return int(torch.multinomial(probs, 1, generator=gen))
