"""Running a child whose output is both shown to the user and read by us, without deadlocking on its pipes.

A pipe holds about 64 KiB. A child that fills one stream while we read the other to its end blocks, and we
block with it: buildx writes its progress (megabytes on a real build) to stderr. So both streams are read
at the same time, one thread each, line by line, and only a bounded tail is kept (a build log can be
large; concatenating it would cost memory and quadratic time).
"""

from __future__ import annotations

import collections
import os
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

LineHandler = Callable[[str], None]
TAIL_LINES = 200


@dataclass
class Finished:
    returncode: int
    stdout_tail: list[str] = field(default_factory=list)
    stderr_tail: list[str] = field(default_factory=list)


def _pump(stream: IO[str], handle: LineHandler, tail: collections.deque[str]) -> None:
    with stream:
        for line in stream:
            tail.append(line)
            handle(line)


def run_streaming(
    argv: Sequence[str],
    *,
    on_stdout: LineHandler,
    on_stderr: LineHandler,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    tail_lines: int = TAIL_LINES,
) -> Finished:
    """Run `argv`, hand every line of each stream to its handler as it comes, keep the last lines of both.

    Handlers run on reader threads; each handler only ever sees its own stream, in order.
    """
    process = subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
        env=None if env is None else dict(env),
        cwd=cwd,
    )
    assert process.stdout is not None and process.stderr is not None
    tails: tuple[collections.deque[str], collections.deque[str]] = (
        collections.deque(maxlen=tail_lines),
        collections.deque(maxlen=tail_lines),
    )
    readers = [
        threading.Thread(target=_pump, args=(stream, handler, tail), daemon=True)
        for stream, handler, tail in (
            (process.stdout, on_stdout, tails[0]),
            (process.stderr, on_stderr, tails[1]),
        )
    ]
    for reader in readers:
        reader.start()
    try:
        returncode = process.wait()
        for reader in readers:
            reader.join()
    except BaseException:
        # Ctrl-C or a signal turned into an exception: the child must not outlive us.
        process.kill()
        process.wait()
        raise
    return Finished(returncode, list(tails[0]), list(tails[1]))


def pid_exists(pid: int) -> bool:
    """Whether a process with this id exists, ours or not (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True
