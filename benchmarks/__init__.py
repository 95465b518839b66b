"""Benchmarks print figures; they are never timed tests."""
