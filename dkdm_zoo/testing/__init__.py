"""Fixtures for tests and benchmarks: folders that look like what users download (random weights)."""
