"""Test support shared by the suite and the benchmarks: isolated deployments on a real broker,
the producers and readers they use, the audit of "nothing lost, nothing applied twice" and a
sample model version. Not part of the installed product."""
