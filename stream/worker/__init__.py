"""The worker: faust app, intake, batching, runtime process, metrics, triggers, erasure."""
