"""The variant artifact on disk (ARCHITECTURE.md): manifest, tardis.safetensors, a loadable model dir.

Written to a temporary sibling directory and renamed into place; loading verifies every recorded
hash and names the file that is missing or changed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file, save_file

from tardis.config import FoldConfig
from tardis.core.hashing import sha256_file, sha256_text
from tardis.core.layer import FoldedLayer
from tardis.errors import ArtifactError

if TYPE_CHECKING:
    from tardis.variant import Variant

SCHEMA_VERSION = 1
SIDECAR = "tardis.safetensors"
MANIFEST = "manifest.json"
ARCH_PREFIX = "Tardis"


def _tool_versions() -> dict[str, str]:
    import safetensors
    import transformers

    from tardis._version import __version__

    return {
        "tardis": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "python": sys.version.split()[0],
    }


def _write_base_weights(variant: Variant, out: Path, mode: str, model: Any) -> dict[str, str]:
    """Link or copy the base weight files into `out`; returns {name: sha256}."""
    from tardis.variant import base_weight_files

    base_path = variant.base.get("path")
    if mode not in ("link", "copy"):
        raise ArtifactError(f"base_weights={mode!r} is invalid: expected 'link' or 'copy'")
    if base_path is None:
        if mode == "copy" and model is not None:
            model.save_pretrained(out, safe_serialization=True)
            (out / "config.json").unlink(missing_ok=True)
            (out / "generation_config.json").unlink(missing_ok=True)
            return {p.name: sha256_file(p) for p in base_weight_files(out)}
        raise ArtifactError(
            "the base model has no weight files on disk (it was built in memory), so the variant cannot link "
            "them; save it with model.save_pretrained(DIR) and load it from DIR before calibrating, or call "
            "variant.save(path, base_weights='copy', model=model)"
        )
    recorded: dict[str, str] = variant.base["files"]
    for name in recorded:
        src = Path(base_path) / name
        if not src.exists():
            raise ArtifactError(
                f"base weight file {src} is missing; the base model moved or was deleted after calibration"
            )
        if mode == "link":
            os.symlink(src.resolve(), out / name)
        else:
            shutil.copy2(src, out / name)
    return dict(recorded)


def _model_config(variant: Variant) -> dict[str, Any]:
    cfg = dict(variant.base["config"])
    cfg["architectures"] = [ARCH_PREFIX + variant.base["architecture"]]
    cfg["tardis"] = {
        "schema_version": SCHEMA_VERSION,
        "base_architecture": variant.base["architecture"],
        "sidecar": SIDECAR,
        "note": "serve with the TARDIS plugin installed; without it this directory must not be served",
    }
    return cfg


def write_variant(variant: Variant, path: Path, *, base_weights: str, model: Any, overwrite: bool) -> Path:
    """Write the artifact for `variant` at `path` atomically; sets variant.variant_id."""
    path = path.resolve()
    if path.exists() and not overwrite:
        raise ArtifactError(f"{path} already exists; choose a new path or pass overwrite=True")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        tensors: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(variant.layers):
            tensors.update(layer.to_tensors(f"layers.{i}."))
        # One metadata key: the header's key order is not stable across processes, and the id hashes this file.
        save_file(tensors, str(tmp / SIDECAR), metadata={"format": f"tardis-v{SCHEMA_VERSION}"})
        base_files = _write_base_weights(variant, tmp, base_weights, model)
        (tmp / "config.json").write_text(json.dumps(_model_config(variant), indent=2, sort_keys=True, default=str))
        if variant.tokenizer is not None:
            variant.tokenizer.save_pretrained(str(tmp))
        if variant.base.get("path"):
            gen = Path(variant.base["path"]) / "generation_config.json"
            if gen.exists():
                shutil.copy2(gen, tmp / "generation_config.json")
        own = sorted(p for p in tmp.iterdir() if p.name not in base_files and p.name != MANIFEST)
        files = {p.name: sha256_file(p) for p in own}
        variant_id = sha256_text(json.dumps({"files": files, "base": base_files}, sort_keys=True))
        variant.variant_id = variant_id
        first = variant.layers[0]
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "variant_id": variant_id,
            "created_at": datetime.now(UTC).isoformat(),
            "base_model": {
                "path": variant.base.get("path") if base_weights == "link" else None,
                "linked": base_weights == "link",
                "architecture": variant.base["architecture"],
                "model_type": variant.base["model_type"],
                "files": base_files,
            },
            "architecture": {
                "family": variant.family,
                "layers": len(variant.layers),
                "hidden_size": int(first.wf.shape[0]),
                "ffn_size": int(first.lo.shape[0]),
                "activation": first.act,
            },
            "method": variant.config.to_dict(),
            "predictor": {"bits": first.predictor.bits, "group_size": first.predictor.group_size, "kind": "rtn"},
            "report": {k: v for k, v in variant.report().items() if k not in ("method",)},
            "files": files,
            "tool_versions": _tool_versions(),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def verify_artifact(path: str | Path) -> dict[str, Any]:
    """Check every recorded file of the variant at `path`; returns the manifest.

    Raises ArtifactError naming the missing or mismatched file and what to do about it.
    """
    root = Path(path)
    mpath = root / MANIFEST
    if not mpath.exists():
        raise ArtifactError(f"{root} is not a TARDIS variant: {MANIFEST} is missing")
    try:
        manifest: dict[str, Any] = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{mpath} is not valid JSON ({e}); the artifact is corrupt, re-run calibration") from e
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ArtifactError(
            f"{mpath}: schema_version {manifest.get('schema_version')!r} is not supported (expected {SCHEMA_VERSION})"
        )
    expected = {**manifest["files"], **manifest["base_model"]["files"]}
    for name, digest in sorted(expected.items()):
        f = root / name
        if not f.exists():
            hint = " (a linked base weight file: the base model moved or was deleted)" if f.is_symlink() else ""
            raise ArtifactError(f"{f} is missing{hint}; the variant cannot be loaded, re-run calibration or restore it")
        actual = sha256_file(f)
        if actual != digest:
            raise ArtifactError(
                f"{f} does not match its recorded sha256 (expected {digest[:16]}…, found {actual[:16]}…): the file was "
                "modified or corrupted after the variant was written; restore it or re-run calibration"
            )
    return manifest


def read_variant(path: str | Path) -> Variant:
    """Verify and read a variant artifact (folded layers on the CPU, no base model)."""
    from tardis.variant import Variant

    root = Path(path)
    manifest = verify_artifact(root)
    tensors = load_file(str(root / SIDECAR))
    arch, pred = manifest["architecture"], manifest["predictor"]
    report = manifest["report"]
    layers = [
        FoldedLayer.from_tensors(
            tensors,
            f"layers.{i}.",
            act=arch["activation"],
            bits=pred["bits"],
            group_size=pred["group_size"],
            in_features=arch["hidden_size"],
        )
        for i in range(arch["layers"])
    ]
    config_json = json.loads((root / "config.json").read_text())
    base = {
        "architecture": manifest["base_model"]["architecture"],
        "model_type": manifest["base_model"]["model_type"],
        "path": manifest["base_model"]["path"],
        "files": manifest["base_model"]["files"],
        "config": {k: v for k, v in config_json.items() if k not in ("architectures", "tardis")},
    }
    return Variant(
        # a manifest written before band_tolerance existed was folded without a band
        config=FoldConfig.from_dict({"band_tolerance": 0.0, **manifest["method"]}),
        family=arch["family"],
        base=base,
        layers=layers,
        layer_stats=report["layers"],
        metrics=report.get("metrics", {}),
        variant_id=manifest["variant_id"],
    )
