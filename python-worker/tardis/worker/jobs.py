"""The job runner: one job at a time, events in order with a monotonic seq, cooperative cancellation.

A job is a function run on its own thread with a JobContext: it emits events, polls
`should_cancel()` between batches and layers, and returns the `completed` payload. The runner turns
its outcome into exactly one terminal event (completed, failed or cancelled) and mirrors every event
to telemetry under `job.<id>`. Job directories (checkpoints, default artifacts) live under jobs_dir.
"""

from __future__ import annotations

import logging
import queue
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tardis.errors import CalibrationCancelled
from tardis.worker.errors import WorkerError, classify, invalid
from tardis.worker.telemetry import Publisher, job_topic

log = logging.getLogger(__name__)

JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
TERMINAL = frozenset({"completed", "failed", "cancelled"})


@dataclass
class Job:
    """A running job: its id, directory, event queue and cancellation flag."""

    job_id: str
    kind: str
    job_dir: Path
    resumed: bool
    events: queue.Queue[dict[str, Any]] = field(default_factory=queue.Queue)
    cancel_reason: str | None = None
    layers_done: int = 0
    started_at: float = field(default_factory=time.time)
    _seq: int = 0
    _seq_lock: threading.Lock = field(default_factory=threading.Lock)
    done: threading.Event = field(default_factory=threading.Event)

    def should_cancel(self) -> bool:
        """Polled by the work between batches and layers."""
        return self.cancel_reason is not None

    def stream(self) -> Iterator[dict[str, Any]]:
        """Every event in order, ending with the terminal one."""
        while True:
            event = self.events.get()
            yield event
            if event["type"] in TERMINAL:
                return


class JobContext:
    """What a job's work function sees: emit events, check for cancellation, its directory."""

    def __init__(self, job: Job, publisher: Publisher):
        self.job = job
        self._publisher = publisher

    @property
    def job_dir(self) -> Path:
        """The job's own directory (checkpoints, default artifact path)."""
        return self.job.job_dir

    def should_cancel(self) -> bool:
        """True once cancellation was requested."""
        return self.job.should_cancel()

    def emit(self, type_: str, **fields: Any) -> None:
        """Queue an event for the job's stream and publish it as telemetry."""
        job = self.job
        if type_ == "layer":
            job.layers_done += 1
        with job._seq_lock:
            job._seq += 1
            event = {"type": type_, "job_id": job.job_id, "seq": job._seq, "ts": time.time(), **fields}
            job.events.put(event)
        # Telemetry stays small: the manifest travels only in the gRPC stream.
        small = {k: v for k, v in event.items() if k not in ("type", "manifest")}
        if "manifest" in event:
            small["variant_id"] = event["manifest"]["variant_id"]
        self._publisher.publish(job_topic(job.job_id), type_, small)


Work = Callable[[JobContext], dict[str, Any]]


class JobRunner:
    """Runs one job at a time under `jobs_dir`; a second start while busy is RESOURCE_EXHAUSTED."""

    def __init__(self, jobs_dir: Path, publisher: Publisher):
        self.jobs_dir = jobs_dir
        self.publisher = publisher
        self._lock = threading.Lock()
        self._running: Job | None = None

    @property
    def running(self) -> Job | None:
        """The job running now, if any."""
        return self._running

    def reserve(self, job_id: str, kind: str, *, resume: bool) -> Job:
        """Claim the job slot and the job's directory; raises WorkerError when busy or the id is bad."""
        job_id = job_id or f"{kind}-{uuid.uuid4().hex[:12]}"
        if not JOB_ID.match(job_id):
            raise invalid(
                f"job_id {job_id!r} is invalid: use 1-128 characters of [A-Za-z0-9._-], starting alphanumeric"
            )
        job_dir = self.jobs_dir / job_id
        with self._lock:
            if self._running is not None:
                raise WorkerError(
                    "RESOURCE_EXHAUSTED",
                    f"worker is busy with job {self._running.job_id!r} ({self._running.kind}); it runs one job at a "
                    "time: retry when it finishes, cancel it with CancelJob, or use another worker",
                )
            if job_dir.exists() and not resume:
                raise WorkerError(
                    "ALREADY_EXISTS",
                    f"job {job_id!r} already has a directory ({job_dir}); pass resume=true to continue it "
                    "from its checkpoints, or use a new job_id",
                )
            resumed = resume and job_dir.exists()  # an earlier attempt left its checkpoints there
            job_dir.mkdir(parents=True, exist_ok=True)
            self._running = Job(job_id=job_id, kind=kind, job_dir=job_dir, resumed=resumed)
            return self._running

    def release(self, job: Job, *, remove_dir: bool = False) -> None:
        """Give back a reserved job that never started (its request failed validation)."""
        with self._lock:
            if self._running is job:
                self._running = None
        if remove_dir and not job.resumed:
            shutil.rmtree(job.job_dir, ignore_errors=True)

    def launch(self, job: Job, work: Work) -> None:
        """Run `work` on a thread; its result or error becomes the terminal event."""
        ctx = JobContext(job, self.publisher)
        try:
            ctx.emit("started", job_kind=job.kind, resumed=job.resumed, job_dir=str(job.job_dir))
            threading.Thread(target=self._run, args=(ctx, work), name=f"job-{job.job_id}", daemon=True).start()
        except BaseException:
            self.release(job)
            raise

    def _run(self, ctx: JobContext, work: Work) -> None:
        job = ctx.job
        try:
            terminal: tuple[str, dict[str, Any]] = ("completed", work(ctx))
            terminal[1]["seconds"] = time.time() - job.started_at
        except CalibrationCancelled:
            terminal = ("cancelled", {"reason": job.cancel_reason or "cancelled", "layers_done": job.layers_done})
        except BaseException as e:  # every failure must end the stream with a terminal event
            code, message = classify(e)
            if code == "INTERNAL":
                log.exception("job %s failed", job.job_id)
            else:
                log.warning("job %s failed: %s %s", job.job_id, code, message)
            terminal = ("failed", {"code": code, "message": message, "error_type": type(e).__name__})
        # Free the slot before the terminal event, so a client that saw it can start the next job at once.
        with self._lock:
            if self._running is job:
                self._running = None
        ctx.emit(terminal[0], **terminal[1])
        job.done.set()

    def cancel(self, job_id: str, reason: str) -> bool:
        """Ask the job to stop; False when `job_id` is not running."""
        job = self._running
        if job is None or job.job_id != job_id:
            return False
        if job.cancel_reason is None:
            job.cancel_reason = reason or "cancelled by request"
            log.info("job %s: cancelling (%s)", job_id, job.cancel_reason)
        return True

    def cancel_all(self, reason: str) -> Job | None:
        """Cancel the running job (shutdown); returns it so the caller can wait for it."""
        job = self._running
        if job is not None:
            self.cancel(job.job_id, reason)
        return job
