"""The worker service against a real `python -m tardis.worker` process: gRPC, health, jobs, telemetry."""

from __future__ import annotations

import json
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import transformers
import zmq
from conftest import saved_model, synthetic_texts
from grpc_health.v1 import health_pb2, health_pb2_grpc

import tardis
from tardis.worker import messages
from tardis.worker.gen import common_pb2, worker_pb2, worker_pb2_grpc

PYTHON_WORKER = Path(__file__).resolve().parents[1]

# Small and fast: 2 layers, d = 64, f = 256. LONG has enough batches (16 per pass) that a kill or
# cancel sent on its first events lands mid-calibration.
QUICK = common_pb2.FoldConfig(
    calib_tokens=1024, heldout_tokens=256, seq_len=64, batch_size=8, group_size=32, histogram_bins=64
)
LONG = common_pb2.FoldConfig(
    calib_tokens=2048, heldout_tokens=512, seq_len=64, batch_size=2, group_size=32, histogram_bins=64
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class WorkerProcess:
    """A worker subprocess on free loopback ports, with a stub ready once health is SERVING."""

    def __init__(self, jobs_dir: Path, log_path: Path):
        self.port, self.telemetry = free_port(), f"tcp://127.0.0.1:{free_port()}"
        self.log_path = log_path
        self.terminating = False
        args = [sys.executable, "-m", "tardis.worker", "--listen", f"127.0.0.1:{self.port}"]
        args += ["--telemetry", self.telemetry, "--jobs-dir", str(jobs_dir), "--device", "cpu", "--grace", "10"]
        self.log = open(log_path, "ab")  # noqa: SIM115 (closed in stop/kill)
        self.proc = subprocess.Popen(args, cwd=PYTHON_WORKER, stdout=self.log, stderr=subprocess.STDOUT)
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.port}")
        self.stub = worker_pb2_grpc.WorkerServiceStub(self.channel)
        self._wait_serving()

    def _wait_serving(self, timeout: float = 60.0) -> None:
        health = health_pb2_grpc.HealthStub(self.channel)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log_path.read_text()}")
            try:
                reply = health.Check(health_pb2.HealthCheckRequest(service="tardis.v1.WorkerService"), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"worker not SERVING after {timeout} s:\n{self.log_path.read_text()}")

    def terminate(self) -> None:
        self.terminating = True
        self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.proc.kill()  # before closing the channel: a closed call would cancel the job cooperatively first
        self.proc.wait()
        self.channel.close()
        self.log.close()

    def stop(self) -> int:
        """SIGTERM (graceful drain) unless already sent; returns the exit code."""
        if self.proc.poll() is None and not self.terminating:
            self.terminate()
        code = self.proc.wait(timeout=30)
        self.channel.close()
        self.log.close()
        return code


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> dict[str, Path]:
    """A tiny GPT-2 model directory with its tokenizer, a calibration text file, a gated (Llama) model dir."""
    root = tmp_path_factory.mktemp("worker-assets")
    saved_model("gpt2", len(tokenizer), root)
    tokenizer.save_pretrained(root / "gpt2")
    texts = root / "texts.txt"
    texts.write_text("\n".join(synthetic_texts(120, seed=1)) + "\n")
    gated = root / "llama"
    transformers.LlamaConfig(
        hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=4
    ).save_pretrained(gated)
    return {"model": root / "gpt2", "texts": texts, "gated": gated, "root": root}


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProcess]:
    root = tmp_path_factory.mktemp("worker")
    w = WorkerProcess(root / "jobs", root / "worker.log")
    yield w
    assert w.stop() == 0, w.log_path.read_text()


def calibrate_request(assets: dict[str, Path], job_id: str, config: common_pb2.FoldConfig, **kw: Any) -> Any:
    return worker_pb2.CalibrateRequest(
        job_id=job_id,
        model=common_pb2.ModelRef(path=str(assets["model"])),
        dataset=common_pb2.DatasetRef(path=str(assets["texts"])),
        config=config,
        **kw,
    )


def run_to_end(stub: Any, request: Any) -> list[Any]:
    return list(stub.Calibrate(request, timeout=120))


def subscriber(endpoint: str, topic: str) -> zmq.Socket[Any]:
    sock = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, topic.encode())
    sock.setsockopt(zmq.RCVTIMEO, 2000)
    sock.connect(endpoint)
    time.sleep(0.3)  # ZeroMQ's slow joiner: let the subscription reach the publisher
    return sock


def drain(sock: zmq.Socket[Any]) -> list[dict[str, Any]]:
    out = []
    while True:
        try:
            topic, payload = sock.recv_multipart()
        except zmq.Again:
            return out
        msg = json.loads(payload)
        assert msg["topic"] == topic.decode()
        out.append(msg)


def sidecar_tensors(path: Path) -> tuple[dict[str, Any], bytes]:
    """A safetensors file's tensor table (names, dtypes, shapes, offsets) and its raw data bytes.

    The `__metadata__` entry is left out: safetensors writes its keys in hash-map order, which
    differs between processes, so whole-file hashes of identical tensors can differ.
    """
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    header.pop("__metadata__", None)
    return header, raw[8 + n :]


@pytest.fixture(scope="module")
def calibrated(worker: WorkerProcess, assets: dict[str, Path]) -> dict[str, Any]:
    """One quick calibration, with its events and the telemetry a real SUB socket got meanwhile."""
    sub = subscriber(worker.telemetry, "job.quick")
    events = run_to_end(worker.stub, calibrate_request(assets, "quick", QUICK))
    return {"events": events, "telemetry": drain(sub)}


def test_health_goes_serving_and_describe_answers(worker: WorkerProcess) -> None:
    d = worker.stub.Describe(worker_pb2.DescribeRequest(), timeout=10)
    assert d.api_version == "tardis.v1"
    assert d.worker_version == tardis.__version__
    assert d.device == "cpu" and d.gpu_name == ""
    assert {"gpt2", "gpt_neox", "bert"} <= set(d.supported_families)
    assert "hf" in d.engines
    assert d.telemetry_endpoint == worker.telemetry
    assert {"python", "torch", "transformers", "grpcio", "pyzmq"} <= set(d.versions)


def test_calibration_streams_every_layer_and_ends_with_a_verified_manifest(calibrated: dict[str, Any]) -> None:
    events = calibrated["events"]
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    kinds = [e.WhichOneof("event") for e in events]
    assert kinds[0] == "started" and kinds[-1] == "completed" and kinds.count("completed") == 1
    phases = {e.progress.phase for e in events if e.HasField("progress")}
    # The GPTQ predictor (the default predictor_method) adds a "hessian" pass before the others, the
    # default band tolerance a "depth" pass after the fit (margins are measured against the band);
    # "predictors" is the quantization of each W1 (one step a layer).
    assert phases == {"load", "hessian", "predictors", "moments", "histograms", "fit", "depth", "heldout"}
    layers = [e.layer for e in events if e.HasField("layer")]
    assert [x.layer for x in layers] == [0, 1] and all(x.layers == 2 and not x.resumed for x in layers)
    assert all(x.stats.neurons == 256 and x.stats.calib_tokens == 1024 for x in layers)

    done = events[-1].completed
    manifest = tardis.verify_artifact(done.manifest.path)  # every recorded hash checks out
    assert done.manifest.variant_id == manifest["variant_id"]
    assert (
        dict(done.manifest.files) == manifest["files"]
        and dict(done.manifest.base_files) == manifest["base_model"]["files"]
    )
    assert done.manifest.layers == 2 and done.manifest.family == "gpt2"
    assert messages.fold_config_from_proto(done.manifest.method) == tardis.FoldConfig.from_dict(manifest["method"])
    assert done.metrics.ffn_reduction_paper == pytest.approx(manifest["report"]["ffn_reduction_paper"])
    assert 0 < done.metrics.measured_fallback_rate < 1


def test_telemetry_reaches_a_real_zeromq_subscriber(calibrated: dict[str, Any]) -> None:
    msgs = calibrated["telemetry"]
    assert msgs, "no telemetry received"
    assert all(m["topic"] == "job.quick" and m["job_id"] == "quick" and m["ts"] > 1e9 for m in msgs)
    kinds = {m["kind"] for m in msgs}
    assert {"progress", "layer", "completed"} <= kinds
    done = next(m for m in msgs if m["kind"] == "completed")
    assert done["variant_id"] == calibrated["events"][-1].completed.manifest.variant_id


def test_load_generate_stats_and_unload_a_variant(worker: WorkerProcess, calibrated: dict[str, Any]) -> None:
    path = calibrated["events"][-1].completed.manifest.path
    loaded = worker.stub.LoadVariant(worker_pb2.LoadVariantRequest(variant_path=path), timeout=60)
    vid = loaded.manifest.variant_id
    assert loaded.engine == "hf" and not loaded.already_loaded
    assert worker.stub.LoadVariant(worker_pb2.LoadVariantRequest(variant_path=path), timeout=60).already_loaded
    sub = subscriber(worker.telemetry, f"engine.{vid}")
    chunks = list(
        worker.stub.Generate(
            worker_pb2.GenerateRequest(variant_id=vid, prompt="The city", max_new_tokens=6), timeout=60
        )
    )
    final = chunks[-1]
    assert final.finish_reason in ("length", "eos") and final.usage.prompt_tokens > 0
    assert final.usage.completion_tokens == len([c for c in chunks[:-1] if c.token_id >= 0]) <= 6
    stats = worker.stub.Stats(worker_pb2.StatsRequest(variant_id=vid), timeout=10).variants[0]
    assert stats.requests == 1 and stats.generated_tokens == final.usage.completion_tokens
    assert len(stats.layers) == 2 and all(
        layer.neurons == 256 and layer.HasField("calibrated_fallback_rate") for layer in stats.layers
    )
    assert any(m["kind"] == "generate" for m in drain(sub))
    worker.stub.UnloadVariant(worker_pb2.UnloadVariantRequest(variant_id=vid), timeout=10)
    with pytest.raises(grpc.RpcError) as e:
        list(worker.stub.Generate(worker_pb2.GenerateRequest(variant_id=vid, prompt="x"), timeout=10))
    assert e.value.code() == grpc.StatusCode.NOT_FOUND and "LoadVariant" in e.value.details()


def test_evaluate_reports_base_and_variant_perplexity(
    worker: WorkerProcess, assets: dict[str, Path], calibrated: dict[str, Any]
) -> None:
    path = calibrated["events"][-1].completed.manifest.path
    req = worker_pb2.EvaluateRequest(
        job_id="eval",
        variant_path=path,
        dataset=common_pb2.DatasetRef(path=str(assets["texts"])),
        max_tokens=512,
        context=64,
        stride=32,
    )
    events = list(worker.stub.Evaluate(req, timeout=120))
    assert events[-1].WhichOneof("event") == "completed", events[-1]
    m = events[-1].completed.metrics
    assert m.perplexity_base > 1 and m.perplexity_variant > 1
    assert m.perplexity_ratio == pytest.approx(m.perplexity_variant / m.perplexity_base)
    assert 0 < m.live_fallback_rate < 1 and m.eval_tokens >= 256


def test_evaluate_compares_dense_tardis_and_wanda_at_the_same_ffn_reduction_with_samples(
    worker: WorkerProcess, assets: dict[str, Path], calibrated: dict[str, Any]
) -> None:
    completed = calibrated["events"][-1].completed
    texts = common_pb2.DatasetRef(path=str(assets["texts"]))
    req = worker_pb2.EvaluateRequest(
        job_id="eval-baselines",
        variant_path=completed.manifest.path,
        dataset=texts,
        max_tokens=512,
        context=64,
        stride=32,
        baselines=["wanda", "magnitude"],
        calibration=texts,
        calibration_tokens=256,
        sample_prompt="The",
        sample_tokens=5,
    )
    events = list(worker.stub.Evaluate(req, timeout=120))
    done = events[-1].completed
    rows = {r.name: r for r in done.comparison}
    assert [r.name for r in done.comparison] == ["dense", "tardis", "wanda", "magnitude"]
    assert rows["dense"].perplexity == pytest.approx(done.metrics.perplexity_base)
    assert rows["tardis"].perplexity == pytest.approx(done.metrics.perplexity_variant)
    reduction = completed.metrics.ffn_reduction_paper
    assert rows["tardis"].ffn_reduction == pytest.approx(reduction)
    for name in ("wanda", "magnitude"):
        assert rows[name].ffn_reduction == pytest.approx(reduction, abs=1e-3)
        assert rows[name].perplexity_ratio == pytest.approx(rows[name].perplexity / rows["dense"].perplexity)
    assert all(r.sample for r in done.comparison) and all(r.seconds > 0 for r in done.comparison)
    with pytest.raises(grpc.RpcError) as e:
        list(
            worker.stub.Evaluate(
                worker_pb2.EvaluateRequest(
                    job_id="eval-bad", variant_path=completed.manifest.path, dataset=texts, baselines=["sparsegpt"]
                ),
                timeout=30,
            )
        )
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "sparsegpt" in e.value.details()


def test_cancel_job_stops_within_one_layer_and_a_busy_worker_refuses_a_second_job(
    worker: WorkerProcess, assets: dict[str, Path]
) -> None:
    stream = worker.stub.Calibrate(calibrate_request(assets, "long", LONG), timeout=120)
    seen = []
    for event in stream:
        seen.append(event)
        if event.HasField("progress") and event.progress.phase == "moments":
            break
    with pytest.raises(grpc.RpcError) as busy:
        run_to_end(worker.stub, calibrate_request(assets, "second", QUICK))
    assert busy.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "'long'" in busy.value.details()
    assert worker.stub.CancelJob(worker_pb2.CancelJobRequest(job_id="long", reason="test"), timeout=10).cancelling
    rest = list(stream)
    assert sum(e.HasField("layer") for e in rest) <= 1
    assert rest[-1].WhichOneof("event") == "cancelled" and rest[-1].cancelled.reason == "test"
    assert [e.seq for e in seen + rest] == list(range(1, len(seen) + len(rest) + 1))
    with pytest.raises(grpc.RpcError) as gone:
        worker.stub.CancelJob(worker_pb2.CancelJobRequest(job_id="long"), timeout=10)
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND


def test_bad_requests_get_the_right_status_code_and_an_actionable_message(
    worker: WorkerProcess, assets: dict[str, Path], calibrated: dict[str, Any]
) -> None:
    def status(request: Any) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.RpcError) as e:
            run_to_end(worker.stub, request)
        return e.value.code(), e.value.details()

    code, msg = status(calibrate_request({**assets, "model": assets["gated"]}, "gated", QUICK))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "gated FFN" in msg and "gpt2" in msg
    code, msg = status(calibrate_request({**assets, "model": assets["root"] / "nope"}, "missing", QUICK))
    assert code == grpc.StatusCode.NOT_FOUND and "nope" in msg and "does not exist" in msg
    code, msg = status(calibrate_request(assets, "bits", common_pb2.FoldConfig(predictor_bits=5)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "predictor_bits=5" in msg
    code, msg = status(calibrate_request(assets, "quick", QUICK))  # the fixture's job, again without resume
    assert code == grpc.StatusCode.ALREADY_EXISTS and "resume=true" in msg
    code, msg = status(calibrate_request(assets, "../escape", QUICK))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "job_id" in msg
    # A problem found once the job runs ends its stream with a `failed` event carrying the code.
    events = run_to_end(worker.stub, calibrate_request(assets, "short", common_pb2.FoldConfig(calib_tokens=10**6)))
    failed = events[-1].failed
    assert failed.code == "INVALID_ARGUMENT" and "lower calib_tokens" in failed.message, events[-1]
    # A refused request leaves no job directory behind, so the same id can be retried.
    assert not (Path(worker_jobs_dir(worker)) / "gated").exists()


def worker_jobs_dir(worker: WorkerProcess) -> str:
    return str(worker.stub.Describe(worker_pb2.DescribeRequest(), timeout=10).jobs_dir)


def test_sigkill_mid_calibration_then_resume_gives_byte_identical_tensors(
    worker: WorkerProcess, assets: dict[str, Path], tmp_path: Path
) -> None:
    reference = run_to_end(worker.stub, calibrate_request(assets, "reference", LONG))[-1].completed.manifest

    jobs = tmp_path / "jobs"
    doomed = WorkerProcess(jobs, tmp_path / "worker.log")
    stream = doomed.stub.Calibrate(calibrate_request(assets, "crash", LONG), timeout=120)
    for event in stream:
        if event.HasField("progress") and event.progress.phase == "histograms":
            break
    doomed.kill()  # SIGKILL: no drain, no cleanup
    assert not (jobs / "crash" / "variant").exists(), "the job finished before the kill"

    again = WorkerProcess(jobs, tmp_path / "worker.log")
    try:
        events = run_to_end(again.stub, calibrate_request(assets, "crash", LONG, resume=True))
        assert events[0].started.resumed
        # The passes finished before the kill are restored, not recomputed.
        assert "moments" not in {e.progress.phase for e in events if e.HasField("progress")}
        done = events[-1].completed.manifest
        assert done.variant_id, events[-1]
        assert sidecar_tensors(Path(done.path) / "tardis.safetensors") == sidecar_tensors(
            Path(reference.path) / "tardis.safetensors"
        )

        # SIGTERM while a job runs: the job stops at a boundary with a CANCELLED event, the process exits 0.
        stream = again.stub.Calibrate(calibrate_request(assets, "drained", LONG), timeout=120)
        for event in stream:
            if event.HasField("progress") and event.progress.phase == "moments":
                break
        again.terminate()
        last = list(stream)[-1]
        assert last.WhichOneof("event") == "cancelled" and "resume=true" in last.cancelled.reason
    finally:
        assert again.stop() == 0, again.log_path.read_text()


def test_proto_fold_config_mirrors_the_python_one() -> None:
    import dataclasses

    assert [f.name for f in common_pb2.FoldConfig.DESCRIPTOR.fields] == [
        f.name for f in dataclasses.fields(tardis.FoldConfig)
    ]
    assert messages.fold_config_from_proto(common_pb2.FoldConfig()) == tardis.FoldConfig()
    full = messages.fold_config_to_proto(tardis.FoldConfig(coverage=0.8, clip_search=False).to_dict())
    assert messages.fold_config_from_proto(full) == tardis.FoldConfig(coverage=0.8, clip_search=False)
