"""One signal policy for a whole run: SIGINT (Ctrl-C) and SIGTERM (what CI sends on cancel) both stop our
child processes, then raise `Interrupted` in the main thread, so that every `finally` and context manager
cleans up (throwaway docker config, temporary layouts, smoke containers) and the report is written.

Only children in our own session are stopped: a helper started in a session of its own on purpose (the
detached embedded registry) is meant to outlive the run. Signals that arrive while the first one is being
handled are ignored, so that the cleanup it started is not cut short.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from pipeline.errors import Interrupted

log = logging.getLogger(__name__)
HANDLED = (signal.SIGINT, signal.SIGTERM)
_CHILD_GRACE = 5.0
_state = {"interrupted": 0}


def _parent_and_session(pid: int) -> tuple[int, int] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: fields after the last ')' are fixed.
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[1]), int(fields[3])


def descendants(root: int | None = None) -> list[int]:
    """Every live process below `root` (default: this one) that shares its session, children first."""
    root = os.getpid() if root is None else root
    session = os.getsid(root)
    table: dict[int, list[int]] = {}
    with contextlib.suppress(OSError):
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                facts = _parent_and_session(int(entry.name))
                if facts is not None and facts[1] == session:
                    table.setdefault(facts[0], []).append(int(entry.name))
    found: list[int] = []
    pending = list(table.get(root, []))
    while pending:
        pid = pending.pop(0)
        found.append(pid)
        pending.extend(table.get(pid, []))
    return found


def stop_children(grace: float = _CHILD_GRACE) -> list[int]:
    """SIGTERM every descendant in our session (buildx, docker, git), then wait up to `grace` seconds for
    them to go, and SIGKILL what is left: nothing of ours keeps writing after the run cleaned up."""
    children = descendants()
    for pid in children:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    alive = list(children)
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in alive if _running(pid)]
        if alive:
            time.sleep(0.05)
    for pid in alive:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return children


def _running(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError, OSError):
        # Reap it if it is ours, so that a zombie does not count as running.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _handler(signum: int, frame: FrameType | None) -> None:
    if _state["interrupted"]:
        log.warning("signal %d while stopping: ignored, the cleanup is running", signum)
        return
    _state["interrupted"] = signum
    log.warning(
        "%s received: stopping child processes, cleaning up, writing the report", signal.Signals(signum).name
    )
    stop_children()
    raise Interrupted(signum)


Previous = dict[int, Any]


def install() -> Previous:
    """Install the policy (main thread only; elsewhere Python cannot take signals); returns what it
    replaced, for `restore`. Installing it again keeps the policy and the first previous handlers."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous: Previous = {int(signum): signal.getsignal(signum) for signum in HANDLED}
    if all(handler is _handler for handler in previous.values()):
        return {}  # already in force (`python -m pipeline` installs it before the imports)
    _state["interrupted"] = 0
    for signum in HANDLED:
        signal.signal(signum, _handler)
    return previous


def restore(previous: Previous) -> None:
    """Put back the handlers `install` replaced (a caller running `main` in-process keeps its own)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum, handler in previous.items():
        if handler is not None:  # None: set outside Python, cannot be put back from here
            signal.signal(signum, handler)


def handler() -> object:
    """The policy's handler, to tell whether it is installed."""
    return _handler


def received() -> int:
    """The signal that interrupted the run, or 0."""
    return _state["interrupted"]
