"""Conversions between tardis.v1 protobuf messages and the worker's Python values (no logic)."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from tardis.config import FoldConfig
from tardis.worker.gen import common_pb2 as pb

METRIC_KEYS = tuple(f.name for f in pb.Metrics.DESCRIPTOR.fields)
LAYER_STAT_KEYS = tuple(f.name for f in pb.LayerStats.DESCRIPTOR.fields)


def timestamp(seconds: float) -> Timestamp:
    """A Timestamp from Unix seconds."""
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def fold_config_from_proto(msg: pb.FoldConfig) -> FoldConfig:
    """FoldConfig from the message: set fields override the defaults (validated by FoldConfig)."""
    # Only fields both sides know: a FoldConfig field not (yet) in the proto keeps its Python default.
    known = {f.name for f in pb.FoldConfig.DESCRIPTOR.fields}
    values = {
        f.name: getattr(msg, f.name) for f in dataclasses.fields(FoldConfig) if f.name in known and msg.HasField(f.name)
    }
    return FoldConfig.from_dict(values)


def fold_config_to_proto(values: dict[str, Any]) -> pb.FoldConfig:
    """The message for a FoldConfig dict (a manifest's `method`); unknown keys are skipped."""
    known = {f.name for f in pb.FoldConfig.DESCRIPTOR.fields}
    return pb.FoldConfig(**{k: v for k, v in values.items() if k in known and v is not None})


def _present(values: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: values[k] for k in keys if values.get(k) is not None}


def layer_stats_to_proto(stats: dict[str, Any]) -> pb.LayerStats:
    """One row of report.layers; absent or null values stay unset."""
    return pb.LayerStats(**_present(stats, LAYER_STAT_KEYS))


def metrics_to_proto(values: dict[str, Any]) -> pb.Metrics:
    """Metrics from a report or evaluation dict (keys named like the message's fields)."""
    return pb.Metrics(**_present(values, METRIC_KEYS))


def manifest_to_proto(manifest: dict[str, Any], path: str) -> pb.VariantManifest:
    """Summary of a verified manifest.json; the whole manifest rides along as JSON."""
    base, arch, pred, report = (
        manifest["base_model"],
        manifest["architecture"],
        manifest["predictor"],
        manifest["report"],
    )
    created = Timestamp()
    created.FromDatetime(datetime.fromisoformat(manifest["created_at"]))
    return pb.VariantManifest(
        variant_id=manifest["variant_id"],
        path=path,
        schema_version=manifest["schema_version"],
        created_at=created,
        family=arch["family"],
        base_architecture=base["architecture"],
        base_path=base.get("path") or "",
        base_linked=bool(base.get("linked")),
        layers=arch["layers"],
        hidden_size=arch["hidden_size"],
        ffn_size=arch["ffn_size"],
        activation=arch["activation"],
        predictor_bits=pred["bits"],
        predictor_group_size=pred["group_size"],
        method=fold_config_to_proto(manifest["method"]),
        files=manifest["files"],
        base_files=base["files"],
        layer_stats=[layer_stats_to_proto(s) for s in report["layers"]],
        metrics=metrics_to_proto({**report, **(report.get("metrics") or {})}),
        tool_versions=manifest.get("tool_versions", {}),
        manifest_json=json.dumps(manifest, sort_keys=True, default=str),
    )


def job_event_to_proto(event: dict[str, Any]) -> pb.JobEvent:
    """A runner event dict (tardis.worker.jobs) as a JobEvent."""
    msg = pb.JobEvent(job_id=event["job_id"], seq=event["seq"], time=timestamp(event["ts"]))
    kind = event["type"]
    if kind == "started":
        msg.started.CopyFrom(pb.JobStarted(kind=event["job_kind"], resumed=event["resumed"], job_dir=event["job_dir"]))
    elif kind == "progress":
        msg.progress.CopyFrom(
            pb.JobProgress(
                phase=event["phase"], step=event["step"], steps=event["steps"], resumed=bool(event.get("resumed"))
            )
        )
    elif kind == "layer":
        msg.layer.CopyFrom(
            pb.LayerDone(
                layer=event["layer"],
                layers=event["layers"],
                resumed=event["resumed"],
                stats=layer_stats_to_proto(event["stats"]),
            )
        )
    elif kind == "completed":
        done = pb.JobCompleted(metrics=metrics_to_proto({**event.get("metrics", {}), "seconds": event["seconds"]}))
        if event.get("manifest"):
            done.manifest.CopyFrom(manifest_to_proto(event["manifest"], event["path"]))
        for row in event.get("comparison", []):
            done.comparison.append(pb.ModelComparison(**{k: v for k, v in row.items() if v is not None}))
        msg.completed.CopyFrom(done)
    elif kind == "failed":
        msg.failed.CopyFrom(pb.JobFailed(code=event["code"], message=event["message"], error_type=event["error_type"]))
    elif kind == "cancelled":
        msg.cancelled.CopyFrom(pb.JobCancelled(reason=event["reason"], layers_done=event["layers_done"]))
    else:
        raise ValueError(f"unknown job event type {kind!r}")
    return msg
