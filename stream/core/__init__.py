"""The batch pipeline without I/O: records and dead letters, user state, scoring, explanations."""
