# Before any import: a signal during the imports exits 130/143 quietly instead of a KeyboardInterrupt
# traceback or a bare kill. The full policy (stop children, clean up, report) replaces this at once.
import signal
import sys


def _exit_early(signum: int, frame: object) -> None:
    sys.exit(128 + signum)


signal.signal(signal.SIGINT, _exit_early)
signal.signal(signal.SIGTERM, _exit_early)

from pipeline import signals  # noqa: E402 - after the early handler on purpose

signals.install()

try:
    from pipeline.cli import main
except KeyboardInterrupt as error:
    raise SystemExit(getattr(error, "exit_code", 130)) from None

raise SystemExit(main())
