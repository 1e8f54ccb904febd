"""Bounded retries with exponential backoff, for what is safe to repeat (pushes by digest, reads, tag puts)."""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from python_on_whales.exceptions import DockerException

from pipeline.errors import ConfigError

log = logging.getLogger(__name__)
T = TypeVar("T")


class TransientError(Exception):
    """A failure worth another try: a 5xx, a reset or refused connection, a timeout.

    `retry_after`: seconds the server asked us to wait (a 429's Retry-After); the backoff waits at least that.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    first_delay: float = 0.5
    max_delay: float = 8.0

    @classmethod
    def from_env(cls) -> RetryPolicy:
        # Tests and impatient users shorten the waits; the bound on attempts stays.
        attempts = int(_number("PIPELINE_RETRY_ATTEMPTS", cls.attempts, int))
        first = _number("PIPELINE_RETRY_FIRST_DELAY", cls.first_delay, float)
        return cls(attempts=max(1, attempts), first_delay=first, max_delay=max(first, cls.max_delay))

    def delay(self, attempt: int) -> float:
        """Backoff before try `attempt + 1` (attempt counts from 1), with jitter so parallel pushes spread out."""
        base = min(self.max_delay, self.first_delay * (2 ** (attempt - 1)))
        return float(base * (0.75 + random.random() / 2))


def with_retries(
    operation: Callable[[], T],
    what: str,
    *,
    is_transient: Callable[[BaseException], bool] = lambda error: isinstance(error, TransientError),
    policy: RetryPolicy | None = None,
) -> T:
    """Run `operation`; on a transient failure wait and try again, at most `policy.attempts` times in all."""
    policy = policy or RetryPolicy.from_env()
    for attempt in range(1, policy.attempts + 1):
        try:
            return operation()
        except Exception as error:
            if not is_transient(error) or attempt == policy.attempts:
                raise
            wait = max(policy.delay(attempt), getattr(error, "retry_after", None) or 0.0)
            reason = " ".join(str(error).split())[:200]
            log.warning("retry %d/%d of %s in %.1fs: %s", attempt, policy.attempts - 1, what, wait, reason)
            time.sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _number(name: str, default: float, kind: type[int] | type[float]) -> float:
    """A numeric setting from the environment; a value that is no number is a one-line config error."""
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(
            f"environment variable {name}={text!r} is not a number; unset it or give one"
        ) from None
    if value < 0:
        raise ConfigError(f"environment variable {name}={text!r} is negative; give a number >= 0")
    return value


# What a docker or buildx failure looks like when the registry or the network failed, not the build.
TRANSIENT_DOCKER_MARKERS = (
    "500 internal server error",
    "502 bad gateway",
    "503 service unavailable",
    "connection reset",
    "connection refused",
    "i/o timeout",
    "tls handshake timeout",
    "unexpected eof",
)


def is_transient_docker_error(error: BaseException) -> bool:
    """A docker or buildx failure worth another try: the registry or the network failed, not the build."""
    if not isinstance(error, DockerException):
        return False
    text = f"{error.stderr or ''} {error.stdout or ''} {error}".lower()
    return any(marker in text for marker in TRANSIENT_DOCKER_MARKERS)
