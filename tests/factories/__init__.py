"""Builders of test data, one module per feature. They go through the HTTP API where it
exists, so tests exercise the same paths as clients."""
