"""`python -m tardis.worker`: run one TARDIS worker (gRPC WorkerService + ZeroMQ telemetry)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

try:
    from tardis.worker.server import Worker, WorkerOptions
except ModuleNotFoundError as e:  # the generated protobuf code is built, not committed
    if "tardis.worker.gen" not in str(e):
        raise
    raise SystemExit("tardis.worker.gen is missing: run scripts/gen_protos.sh (scripts/setup.sh does)") from e


def main(argv: list[str] | None = None) -> int:
    """Parse flags, serve until SIGTERM/SIGINT, drain; returns the exit code."""
    ap = argparse.ArgumentParser(prog="python -m tardis.worker", description=__doc__)
    ap.add_argument("--listen", default="127.0.0.1:50551", help="gRPC HOST:PORT (loopback by default; port 0 = any)")
    ap.add_argument(
        "--telemetry", default=None, help="ZeroMQ PUB endpoint to bind, e.g. tcp://127.0.0.1:50552 (off if unset)"
    )
    ap.add_argument("--jobs-dir", type=Path, default=Path(".tardis/jobs"), help="job checkpoints and default artifacts")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu, cuda or cuda:N")
    ap.add_argument("--grace", type=float, default=30.0, help="seconds to drain on SIGTERM")
    ap.add_argument("--log-level", default="INFO")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    options = WorkerOptions(
        listen=args.listen, telemetry=args.telemetry, jobs_dir=args.jobs_dir, device=args.device, grace_s=args.grace
    )
    Worker(options).serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
