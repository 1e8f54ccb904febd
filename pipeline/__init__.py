"""Build, publish, smoke-test and promote multi-platform container images."""

__version__ = "0.1.0"
