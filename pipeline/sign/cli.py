"""The `verify` and `cosign` commands."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from rich.table import Table

from pipeline.errors import SignError
from pipeline.report import wide_console
from pipeline.sign.cosign import ensure_cosign
from pipeline.sign.verify import Verification, optional_config, registry_of, verifier_for, verify_image


def print_verification(result: Verification) -> None:
    table = Table(title=f"verify {result.reference} ({'passed' if result.passed else 'FAILED'})")
    for column in ("check", "result", "detail"):
        table.add_column(column, overflow="fold")
    for check in result.checks:
        table.add_row(check.name, "ok" if check.passed else "FAILED", check.detail)
    wide_console().print(table)


def _run_verify(args: argparse.Namespace) -> int:
    from pipeline.publish import isolated_docker_config, login_all

    config = optional_config(args.config)
    verifier = verifier_for(config, args.key)
    registry = registry_of(config, args.reference)
    with isolated_docker_config():
        if registry is not None:
            with _stdout_to_stderr():  # `docker login` prints to stdout, which is the JSON's
                login_all([registry])
        result = verify_image(args.reference, verifier, registry=registry)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print_verification(result)
    failed = result.first_failure()
    if failed is not None:
        raise SignError(f"{args.reference}: {failed.name} check failed: {failed.detail}")
    return 0


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Child processes' stdout goes to stderr meanwhile (file descriptor level: they inherit it)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="check an image's cosign signature and smoke-test attestation (covering every platform)",
    )
    parser.add_argument("reference", metavar="REF", help="host[:port]/repository[:tag|@sha256:...]")
    parser.add_argument(
        "--key", type=Path, default=None, help="cosign public key (default: [sign] public_key)"
    )
    parser.add_argument("--json", action="store_true", help="print the checks as JSON instead of a table")
    parser.set_defaults(handler=_run_verify)
    provision = subparsers.add_parser(
        "cosign",
        help="print the cosign binary the pipeline uses, provisioning it (Debian trixie's) if missing",
    )
    provision.set_defaults(handler=_run_cosign)


def _run_cosign(args: argparse.Namespace) -> int:
    print(ensure_cosign())
    return 0
