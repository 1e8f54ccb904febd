"""The hostile run (issue 17): >= 100 runs of the real CLI with bad inputs, faults, signals in every phase,
concurrent releases and secret scans, against real loopback registries. Not part of `nox -s tests`:

    .nox/tests/bin/python -m tests.hostile [--only PATTERN] [--list]

The case list is `tests/hostile/cases.py`; docs/hostile-cases.md is generated from it (`--list`).
"""
