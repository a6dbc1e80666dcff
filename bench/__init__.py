"""Throughput benchmarks for xdrec, each figure measured beside a peer in the same run.

Run ``python -m bench`` from the repository root. This package file imports nothing, because
some child processes (the quix-streams app) run under an interpreter without xdrec's stack.
"""
