"""Benchmarks: `make bench` (or `python -m benchmarks.run`) prints figures measured in one run."""
