# ruff: noqa: N802  (handler names are the proto's rpc names)
"""The gRPC transport: WorkerService handlers, health, reflection, keepalive and graceful drain.

Handlers only translate: request messages → validated specs → jobs/engines, Python values →
reply messages, exceptions → status codes (tardis.worker.errors). Long work runs on job threads.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import grpc
import torch
import transformers
import zmq
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

import tardis
from tardis.arch.registry import ADAPTERS
from tardis.worker import messages
from tardis.worker.calibration import (
    CalibrationSpec,
    EvaluationSpec,
    check_comparison,
    run_calibration,
    run_evaluation,
)
from tardis.worker.engines import EngineRegistry, GenerateParams, available_engines
from tardis.worker.errors import WorkerError, classify, invalid
from tardis.worker.gen import common_pb2, worker_pb2, worker_pb2_grpc
from tardis.worker.jobs import Job, JobRunner
from tardis.worker.sources import check_model_dir, read_texts
from tardis.worker.telemetry import Publisher

log = logging.getLogger(__name__)

SERVICE_NAME = worker_pb2.DESCRIPTOR.services_by_name["WorkerService"].full_name
API_VERSION = "tardis.v1"

# Calibration steps can hold a call silent for minutes: accept client pings every 10 s with or
# without calls, never GOAWAY for "too many pings", and ping idle clients every 60 s ourselves.
SERVER_OPTIONS = [
    ("grpc.keepalive_time_ms", 60_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 0),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]

T = TypeVar("T")


def _abort(context: grpc.ServicerContext, exc: BaseException) -> NoReturn:
    code, message = classify(exc)
    if code == "INTERNAL":
        log.exception("request failed")
    context.abort(grpc.StatusCode[code], message)
    raise AssertionError("unreachable")  # context.abort raises


def _unary(fn: Callable[[], T], context: grpc.ServicerContext) -> T:
    try:
        return fn()
    except Exception as e:
        _abort(context, e)


def _opt(msg: Any, name: str, default: Any = None) -> Any:
    return getattr(msg, name) if msg.HasField(name) else default


@dataclass
class WorkerOptions:
    """Command-line settings of one worker process."""

    listen: str = "127.0.0.1:50551"
    telemetry: str | None = None
    jobs_dir: Path = Path(".tardis/jobs")
    device: str = "cpu"
    grace_s: float = 30.0
    max_workers: int = 16


class WorkerService(worker_pb2_grpc.WorkerServiceServicer):
    """tardis.v1.WorkerService over a JobRunner and an EngineRegistry."""

    def __init__(self, options: WorkerOptions, runner: JobRunner, engines: EngineRegistry, publisher: Publisher):
        self.options = options
        self.runner = runner
        self.engines = engines
        self.publisher = publisher
        self.draining = False

    def _check_open(self) -> None:
        if self.draining:
            raise WorkerError("UNAVAILABLE", "worker is shutting down; retry on another worker or after restart")

    def Describe(
        self, request: worker_pb2.DescribeRequest, context: grpc.ServicerContext
    ) -> worker_pb2.DescribeResponse:
        """What this worker is and can do."""
        job = self.runner.running
        device = torch.device(self.options.device)
        gpu = torch.cuda.get_device_name(device.index or 0) if device.type == "cuda" else ""
        versions = {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "grpcio": grpc.__version__,
            "pyzmq": zmq.__version__,
        }
        if "vllm" in available_engines():
            import vllm

            versions["vllm"] = vllm.__version__
        return worker_pb2.DescribeResponse(
            worker_version=tardis.__version__,
            api_version=API_VERSION,
            device=self.options.device,
            gpu_name=gpu,
            versions=versions,
            supported_families=sorted(ADAPTERS),
            engines=available_engines(),
            running_job_id=job.job_id if job else "",
            loaded_variants=self.engines.ids(),
            telemetry_endpoint=self.publisher.endpoint,
            jobs_dir=str(self.options.jobs_dir),
        )

    def _stream_job(self, job: Job, context: grpc.ServicerContext) -> Iterator[common_pb2.JobEvent]:
        # The call ending early (client cancel, deadline, disconnect) cancels the job; its checkpoints stay.
        context.add_callback(
            lambda: self.runner.cancel(job.job_id, "the Calibrate/Evaluate call ended (client cancelled)")
        )
        for event in job.stream():
            yield messages.job_event_to_proto(event)

    def _start(
        self,
        request: Any,
        kind: str,
        resume: bool,
        prepare: Callable[[Job], Callable[[Any], dict[str, Any]]],
        context: grpc.ServicerContext,
    ) -> Job:
        try:
            self._check_open()
            job = self.runner.reserve(request.job_id, kind, resume=resume)
        except Exception as e:
            _abort(context, e)
        try:
            work = prepare(job)
        except Exception as e:
            self.runner.release(job, remove_dir=True)
            _abort(context, e)
        self.runner.launch(job, work)
        return job

    def Calibrate(
        self, request: worker_pb2.CalibrateRequest, context: grpc.ServicerContext
    ) -> Iterator[common_pb2.JobEvent]:
        """Validate, then run a calibration job and stream its events."""

        def prepare(job: Job) -> Callable[[Any], dict[str, Any]]:
            dtype = _opt(request.model, "dtype")
            check_model_dir(request.model.path, dtype)
            texts = read_texts(request.dataset.path, request.dataset.builtin, heldout=False)
            config = messages.fold_config_from_proto(request.config)
            output = Path(_opt(request, "output_path") or job.job_dir / "variant").expanduser()
            if output.exists() and not request.resume:
                raise WorkerError(
                    "ALREADY_EXISTS", f"output_path {output} already exists; choose another path or pass resume=true"
                )
            spec = CalibrationSpec(
                model_path=str(Path(request.model.path).expanduser()),
                dtype=dtype,
                device=self.options.device,
                texts=texts,
                config=config,
                output_path=output,
                base_weights="copy" if request.copy_base_weights else "link",
                overwrite=request.resume,
            )
            return lambda ctx: run_calibration(spec, ctx)

        job = self._start(request, "calibrate", request.resume, prepare, context)
        yield from self._stream_job(job, context)

    def Evaluate(
        self, request: worker_pb2.EvaluateRequest, context: grpc.ServicerContext
    ) -> Iterator[common_pb2.JobEvent]:
        """Validate, then run an evaluation job and stream its events."""

        def prepare(job: Job) -> Callable[[Any], dict[str, Any]]:
            variant = Path(request.variant_path).expanduser()
            if not (variant / "manifest.json").is_file():
                raise WorkerError(
                    "NOT_FOUND", f"variant_path {str(variant)!r} is not a variant artifact (no manifest.json)"
                )
            manifest = json.loads((variant / "manifest.json").read_text())  # hf.load verifies every hash
            base_ref = _opt(request, "base")
            base_path = base_ref.path if base_ref else manifest["base_model"].get("path")
            if not base_path:
                raise invalid(f"variant {variant} does not record its base model path (weights copied); set `base`")
            base_dtype = _opt(base_ref, "dtype") if base_ref else None
            check_model_dir(base_path, base_dtype)
            prefill = _opt(request, "prefill", "tardis")
            if prefill not in ("dense", "tardis"):
                raise invalid(f"prefill {prefill!r} is invalid: expected 'dense' or 'tardis'")
            spec = EvaluationSpec(
                variant_path=variant,
                base_path=base_path,
                base_dtype=base_dtype,
                device=self.options.device,
                texts=read_texts(request.dataset.path, request.dataset.builtin, heldout=True),
                context=_opt(request, "context", 256),
                stride=_opt(request, "stride", 128),
                max_tokens=_opt(request, "max_tokens"),
                prefill=prefill,
                baselines=tuple(request.baselines),
                calibration_texts=calibration_texts(request),
                calibration_tokens=_opt(request, "calibration_tokens", 4096),
                sample_prompt=_opt(request, "sample_prompt"),
                sample_tokens=_opt(request, "sample_tokens", 24),
            )
            check_comparison(spec)
            if spec.context < 2 or not 1 <= spec.stride <= spec.context:
                raise invalid(
                    f"context={spec.context}, stride={spec.stride}: expected context ≥ 2 and 1 ≤ stride ≤ context"
                )
            return lambda ctx: run_evaluation(spec, ctx)

        def calibration_texts(request: worker_pb2.EvaluateRequest) -> list[str]:
            if not request.baselines:
                return []
            ref = _opt(request, "calibration")
            return read_texts(ref.path, ref.builtin, heldout=False) if ref else read_texts("", "lee", heldout=False)

        job = self._start(request, "evaluate", True, prepare, context)
        yield from self._stream_job(job, context)

    def CancelJob(
        self, request: worker_pb2.CancelJobRequest, context: grpc.ServicerContext
    ) -> worker_pb2.CancelJobResponse:
        """Ask a running job to stop at its next batch or layer boundary."""

        def cancel() -> worker_pb2.CancelJobResponse:
            if not self.runner.cancel(request.job_id, request.reason or "cancelled by CancelJob"):
                running = self.runner.running
                raise WorkerError(
                    "NOT_FOUND",
                    f"job {request.job_id!r} is not running on this worker"
                    + (f" (running: {running.job_id!r})" if running else " (no job is running)"),
                )
            return worker_pb2.CancelJobResponse(cancelling=True)

        return _unary(cancel, context)

    def LoadVariant(
        self, request: worker_pb2.LoadVariantRequest, context: grpc.ServicerContext
    ) -> worker_pb2.LoadVariantResponse:
        """Load a variant artifact (hashes verified) into an engine."""

        def load() -> worker_pb2.LoadVariantResponse:
            self._check_open()
            t0 = time.perf_counter()
            engine = _opt(request, "engine", "hf")
            loaded, already = self.engines.load(
                request.variant_path, engine, _opt(request, "device"), _opt(request, "prefill")
            )
            return worker_pb2.LoadVariantResponse(
                manifest=messages.manifest_to_proto(loaded.manifest, str(loaded.path)),
                engine=loaded.engine,
                device=loaded.device,
                load_seconds=time.perf_counter() - t0,
                already_loaded=already,
            )

        return _unary(load, context)

    def UnloadVariant(
        self, request: worker_pb2.UnloadVariantRequest, context: grpc.ServicerContext
    ) -> worker_pb2.UnloadVariantResponse:
        """Unload a variant."""
        _unary(lambda: self.engines.unload(request.variant_id), context)
        return worker_pb2.UnloadVariantResponse()

    def Generate(
        self, request: worker_pb2.GenerateRequest, context: grpc.ServicerContext
    ) -> Iterator[worker_pb2.GenerateChunk]:
        """Stream generated tokens from a loaded variant."""
        params = GenerateParams(
            max_new_tokens=_opt(request, "max_new_tokens", 32),
            temperature=_opt(request, "temperature", 0.0),
            top_p=_opt(request, "top_p", 1.0),
            seed=_opt(request, "seed", 0),
            stop=tuple(request.stop),
        )
        try:
            self._check_open()
            for chunk in self.engines.generate(request.variant_id, request.prompt, params):
                if not context.is_active():
                    return
                usage = chunk.get("usage")
                yield worker_pb2.GenerateChunk(
                    index=chunk["index"],
                    token_id=chunk.get("token_id", -1),
                    text=chunk.get("text", ""),
                    finish_reason=chunk.get("finish_reason", ""),
                    usage=worker_pb2.GenerateUsage(**{k: v for k, v in usage.items() if v is not None})
                    if usage
                    else None,
                )
        except Exception as e:
            _abort(context, e)

    def Stats(self, request: worker_pb2.StatsRequest, context: grpc.ServicerContext) -> worker_pb2.StatsResponse:
        """Live counters of loaded variants."""

        def stats() -> worker_pb2.StatsResponse:
            out = []
            for s in self.engines.stats(request.variant_id):
                layers = [
                    worker_pb2.LayerCounters(**{k: v for k, v in row.items() if v is not None}) for row in s["layers"]
                ]
                fields = {k: v for k, v in s.items() if k != "layers" and v is not None}
                out.append(worker_pb2.VariantStats(layers=layers, **fields))
            return worker_pb2.StatsResponse(variants=out)

        return _unary(stats, context)


class Worker:
    """One worker process: gRPC server, health, telemetry, jobs and engines, with graceful drain."""

    def __init__(self, options: WorkerOptions):
        self.options = options
        self.publisher = Publisher(options.telemetry)
        options.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.runner = JobRunner(options.jobs_dir.resolve(), self.publisher)
        self.engines = EngineRegistry(options.device, self.publisher)
        self.service = WorkerService(options, self.runner, self.engines, self.publisher)
        self.health = health.HealthServicer()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=options.max_workers), options=SERVER_OPTIONS)
        worker_pb2_grpc.add_WorkerServiceServicer_to_server(self.service, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.port = self.server.add_insecure_port(options.listen)
        if self.port == 0:
            raise OSError(f"cannot listen on {options.listen!r} (address in use or invalid)")
        self._stop = threading.Event()

    def _set_health(self, status: int) -> None:
        for name in ("", SERVICE_NAME):
            self.health.set(name, status)

    def start(self) -> None:
        """Start serving; health turns SERVING once the device answers."""
        self.server.start()
        torch.zeros(1, device=self.options.device).add_(1)  # the device is usable (CUDA context created)
        self._set_health(health_pb2.HealthCheckResponse.SERVING)
        host = self.options.listen.rsplit(":", 1)[0]
        log.info(
            "tardis worker serving on %s:%d (device %s, telemetry %s, jobs %s)",
            host,
            self.port,
            self.options.device,
            self.publisher.endpoint or "off",
            self.options.jobs_dir,
        )

    def request_stop(self, signum: int = 0, _frame: object = None) -> None:
        """Signal handler: begin the graceful drain."""
        log.info("signal %s: draining", signum)
        self._stop.set()

    def drain(self) -> None:
        """NOT_SERVING, refuse new work, cancel the running job (it keeps its checkpoints), then stop."""
        self.health.enter_graceful_shutdown()
        self.service.draining = True
        job = self.runner.cancel_all("worker is shutting down; call Calibrate again with resume=true to continue")
        if job is not None:
            job.done.wait(self.options.grace_s)
        self.server.stop(grace=self.options.grace_s).wait()
        self.publisher.close()
        log.info("tardis worker stopped")

    def serve_forever(self) -> None:
        """Start, wait for SIGTERM/SIGINT, drain."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        self.start()
        self._stop.wait()
        self.drain()
