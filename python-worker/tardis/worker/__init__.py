"""The TARDIS worker: a gRPC WorkerService (protos/tardis/v1) with a job runner and ZeroMQ telemetry.

    python -m tardis.worker --listen 127.0.0.1:50551 --telemetry tcp://127.0.0.1:50552 --jobs-dir .tardis/jobs

Modules: server (transport: gRPC, health, reflection, signals), jobs (one job at a time, cancel,
checkpoints), calibration (the Calibrate and Evaluate work), engines (loaded variants, Generate,
Stats), sources (model and dataset references), messages (proto ↔ Python), errors (status codes),
telemetry (ZeroMQ PUB). Generated protobuf code lives in gen/ (scripts/gen_protos.sh).
"""
