# The signal policy first, so that a Ctrl-C or SIGTERM while the rest is imported also exits 130/143.
from pipeline import signals

signals.install()

try:
    from pipeline.cli import main
except KeyboardInterrupt as error:
    raise SystemExit(getattr(error, "exit_code", 130)) from None

raise SystemExit(main())
