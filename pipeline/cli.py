"""`pipeline` / `python -m pipeline`: one entry point, one error printer.

Each stage module registers its own subcommand (a `register(subparsers)` function) so that the CLI and the
nox sessions run the same code. Every expected failure is a PipelineError, printed here as one line.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.logging import RichHandler

from pipeline import __version__, signals
from pipeline.errors import Interrupted, PipelineError, PreflightError

# Subcommand -> the module that registers it (`register(subparsers)`, setting `handler`). Only the module
# of the command being run is imported, so that `pipeline plan` does not pay for the lint or smoke code.
COMMANDS = {
    "release": "pipeline.release",
    "plan": "pipeline.plan",
    "build": "pipeline.fanout",
    "merge": "pipeline.fanout",
    "smoke": "pipeline.smoke",
    "lint": "pipeline.lint",
    "registry": "pipeline.registry",
    "engine": "pipeline.engine",
    "verify": "pipeline.sign.cli",
    "cosign": "pipeline.sign.cli",
    "deploy": "pipeline.deploy",
}

log = logging.getLogger("pipeline")
Handler = Callable[[argparse.Namespace], int]


def _wanted_command(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line, if any (the first word that is not an option)."""
    words = iter(argv)
    for word in words:
        if word == "--config":
            next(words, None)
        elif not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pipeline",
        description="Build, publish, smoke-test and promote multi-platform container images.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="pipeline.toml or pyproject.toml (default: found in the cwd)",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more detail (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    wanted = _wanted_command(sys.argv[1:] if argv is None else argv)
    for module_name in dict.fromkeys([COMMANDS[wanted]] if wanted else COMMANDS.values()):
        importlib.import_module(module_name).register(subparsers)
    return parser


def configure_logging(verbosity: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbosity >= 2 else logging.INFO)
    from pipeline.report import wide_console

    handler = RichHandler(
        console=wide_console(stderr=True),
        show_time=False,
        show_path=False,
        markup=False,
        rich_tracebacks=False,
    )
    logging.basicConfig(level=level, format="%(message)s", handlers=[handler], force=True)
    # python-on-whales logs every command line at debug; keep ours readable unless -vv.
    logging.getLogger("python_on_whales").setLevel(logging.WARNING if verbosity < 2 else logging.DEBUG)
    logging.getLogger("git").setLevel(logging.WARNING)


def error_line(error: BaseException) -> str:
    """The single line printed for a failure: the message only, never a traceback."""
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split()) if "\n" not in text else text.splitlines()[0].strip()


def error_lines(error: PipelineError) -> list[str]:
    """A preflight names every problem it found, one line each; any other error is one line."""
    if isinstance(error, PreflightError):
        return [" ".join(problem.split()) for problem in error.problems]
    return [error_line(error)]


def main(argv: Sequence[str] | None = None) -> int:
    previous = signals.install()
    try:
        return _main(argv)
    finally:
        signals.restore(previous)


def _main(argv: Sequence[str] | None) -> int:
    try:
        parser = build_parser(argv)
    except KeyboardInterrupt as error:
        return error.exit_code if isinstance(error, Interrupted) else 130
    args = parser.parse_args(argv)
    configure_logging(args.verbose, args.quiet)
    handler: Handler = args.handler
    try:
        return handler(args)
    except PipelineError as error:
        for line in error_lines(error):
            print(f"error: {line}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt as error:
        code = error.exit_code if isinstance(error, Interrupted) else 130
        name = "SIGTERM" if code == 143 else "SIGINT"
        print(
            f"error: interrupted ({name}); stopped and cleaned up, the report says what moved",
            file=sys.stderr,
        )
        return code
    except Exception as error:  # one line for the unexpected too: it is still a bug to report, not a dump
        from python_on_whales.exceptions import DockerException

        if isinstance(error, DockerException):
            detail = (error.stderr or "").strip().splitlines()
            message = detail[-1] if detail else error_line(error)
            print(f"error: docker: {message}", file=sys.stderr)
            return 1
        if args.verbose >= 2:
            raise
        print(
            f"error: unexpected {type(error).__name__}: {error_line(error)} (rerun with -vv for the traceback)",
            file=sys.stderr,
        )
        return 1
