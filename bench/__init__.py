"""Benchmarks: bin/bench."""
