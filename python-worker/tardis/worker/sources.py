"""Model and dataset references from requests: checked cheaply up front, loaded on the job thread."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import transformers

from tardis.arch.registry import adapter_for
from tardis.worker.errors import WorkerError, invalid, not_found

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "auto": "auto"}
BUILTIN_CORPORA = ("lee",)


def check_model_dir(path: str, dtype: str | None) -> transformers.PretrainedConfig:
    """The model directory's config, after checking it exists and TARDIS can fold its family.

    Raises NOT_FOUND for a missing path, INVALID_ARGUMENT for a directory that is not an HF model, a
    bad dtype, or a gated / unknown family (GatedFFNError, UnsupportedModelError).
    """
    if not path:
        raise invalid("model.path is empty: pass the local directory of a Hugging Face model")
    root = Path(path).expanduser()
    if not root.exists():
        raise not_found(
            f"model path {str(root)!r} does not exist on the worker; pass a local Hugging Face model directory "
            "(config.json, weights, tokenizer) that the worker process can read"
        )
    if not (root / "config.json").is_file():
        raise invalid(f"{root} is not a Hugging Face model directory: config.json is missing")
    if dtype is not None and dtype not in DTYPES:
        raise invalid(f"model.dtype {dtype!r} is invalid: expected one of {sorted(DTYPES)}")
    config = transformers.AutoConfig.from_pretrained(str(root))
    adapter_for(config)  # GatedFFNError / UnsupportedModelError name the family and the supported ones
    return config


def load_model(path: str, dtype: str | None, device: str) -> tuple[Any, Any]:
    """(model, tokenizer) of a model directory, in eval mode on `device`; the saved class is used."""
    config = transformers.AutoConfig.from_pretrained(path)
    archs = list(getattr(config, "architectures", None) or [])
    cls: Any = getattr(transformers, archs[0], None) if archs else None
    if cls is None:
        cls = transformers.AutoModelForCausalLM
    model = cls.from_pretrained(path, dtype=DTYPES[dtype or "float32"]).to(device).eval()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise WorkerError(
            "FAILED_PRECONDITION", f"{path} has no usable tokenizer ({e}); save one with tokenizer.save_pretrained"
        ) from e
    return model, tokenizer


def read_texts(path: str, builtin: str, *, heldout: bool) -> list[str]:
    """Documents of a dataset reference: a text file (one per non-empty line) or a builtin corpus."""
    if path:
        f = Path(path).expanduser()
        if not f.is_file():
            raise not_found(
                f"dataset path {str(f)!r} is not a file on the worker; pass a UTF-8 text file, one document per line"
            )
        texts = [line.strip() for line in f.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        if not texts:
            raise invalid(f"dataset {f} has no non-empty lines")
        return texts
    if builtin == "lee":
        from tardis.corpora import lee_calibration, lee_heldout

        try:
            return lee_heldout() if heldout else lee_calibration()
        except FileNotFoundError as e:
            raise WorkerError("FAILED_PRECONDITION", str(e)) from e
    if builtin:
        raise invalid(f"dataset.builtin {builtin!r} is unknown: expected one of {list(BUILTIN_CORPORA)}")
    raise invalid("dataset is empty: set dataset.path (a text file) or dataset.builtin ('lee')")
