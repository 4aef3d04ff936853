"""A vLLM worker extension: the TARDIS counters as worker methods, so `collective_rpc` reads them by name.

Enable it with `worker_extension_cls="tardis.engines.vllm.worker.TardisWorkerExtension"` (LLM argument)
or `--worker-extension-cls tardis.engines.vllm.worker.TardisWorkerExtension` (vllm serve). Calling
methods by name needs no pickled code crossing the engine's process boundary (vLLM refuses callables
there unless VLLM_ALLOW_INSECURE_SERIALIZATION=1).
"""

from __future__ import annotations

from typing import Any


class TardisWorkerExtension:
    """Mixed into vLLM's worker class; `self` is the worker."""

    def tardis_counters(self) -> list[dict[str, int]]:
        """This worker's per-layer counters (see TardisSites.counters)."""
        model: Any = self.get_model()  # type: ignore[attr-defined]
        sites = getattr(model, "tardis", None)
        if sites is None:
            raise RuntimeError(f"{type(model).__name__} is not a TARDIS model: serve a variant directory")
        counters: list[dict[str, int]] = sites.counters()
        return counters

    def tardis_reset_counters(self) -> None:
        """Zero this worker's counters."""
        model: Any = self.get_model()  # type: ignore[attr-defined]
        model.tardis.reset_counters()
