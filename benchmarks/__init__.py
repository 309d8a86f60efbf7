"""Benchmarks: figures, not tests (run ``python -m benchmarks.relay``)."""
