"""Training, the trainer service and the evaluation: builds on ``stream``, never the reverse."""
