"""Benchmarks: taskservice side by side with the raw tools it wraps (``python -m bench.run``)."""
