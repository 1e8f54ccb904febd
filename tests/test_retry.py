"""Retries: the policy on its own, then pushes and tag moves through the fault proxy in front of real
registries (an open one and an htpasswd one): transient faults end in success with every retry logged,
persistent faults end in one clear RegistryError with no tag moved anywhere, a refused password is not
retried and names the registry and the variable.

The image pushed is a small OCI layout written by the test (no engine needed); test_publish does the same
with the real example image.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pipeline.build import BuiltImage
from pipeline.config import RegistryConfig
from pipeline.errors import AuthError, RegistryError
from pipeline.publish import promote, push_everywhere
from pipeline.retry import RetryPolicy, TransientError, with_retries
from tests.fixtures.faultproxy import FaultPlan, FaultProxy, ProxyFactory, list_tags, write_oci_layout
from tests.fixtures.registries import private_and_hub

if TYPE_CHECKING:  # imported for real, pytest would try to collect the class as tests
    from tests.fixtures.registries import TestRegistry

USER_ENV, TOKEN_ENV = "TEST_HUB_USERNAME", "TEST_HUB_TOKEN"
TAGS = ["2.1.0", "2.1", "2", "latest"]


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_RETRY_FIRST_DELAY", "0.01")
    monkeypatch.delenv("PIPELINE_RETRY_ATTEMPTS", raising=False)


# --- the policy ----------------------------------------------------------------------------------------------


def test_backoff_doubles_up_to_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pipeline.retry.random.random", lambda: 0.5)  # jitter factor exactly 1
    policy = RetryPolicy(attempts=8, first_delay=0.5, max_delay=4.0)

    assert [policy.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_jitter_stays_within_a_quarter_of_the_backoff() -> None:
    policy = RetryPolicy(attempts=5, first_delay=1.0, max_delay=8.0)
    for attempt in range(1, 5):
        base = min(8.0, 2.0 ** (attempt - 1))
        for _ in range(50):
            assert 0.75 * base <= policy.delay(attempt) <= 1.25 * base


def test_policy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_RETRY_ATTEMPTS", "3")
    monkeypatch.setenv("PIPELINE_RETRY_FIRST_DELAY", "0.2")
    assert RetryPolicy.from_env() == RetryPolicy(attempts=3, first_delay=0.2, max_delay=8.0)
    monkeypatch.setenv("PIPELINE_RETRY_ATTEMPTS", "0")
    assert RetryPolicy.from_env().attempts == 1, "at least one try, whatever the setting"


@dataclass
class Flaky:
    """Fails with `error` for the first `failures` calls, then returns "done"."""

    failures: int
    error: Callable[[], Exception] = lambda: TransientError("registry answered 503")
    calls: int = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error()
        return "done"


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waited: list[float] = []
    monkeypatch.setattr("pipeline.retry.time.sleep", waited.append)
    monkeypatch.setattr("pipeline.retry.random.random", lambda: 0.5)
    return waited


def test_transient_failures_are_retried_with_growing_waits_and_logged(
    sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    operation = Flaky(failures=3)
    with caplog.at_level(logging.WARNING, logger="pipeline.retry"):
        result = with_retries(operation, "PUT manifest", policy=RetryPolicy(attempts=5, first_delay=0.1))

    assert (result, operation.calls) == ("done", 4)
    assert sleeps == pytest.approx([0.1, 0.2, 0.4])
    messages = [r.getMessage() for r in caplog.records if r.name == "pipeline.retry"]
    assert len(messages) == 3
    assert messages[0].startswith("retry 1/4 of PUT manifest in 0.1s: registry answered 503")


def test_retries_are_bounded(sleeps: list[float]) -> None:
    operation = Flaky(failures=100)
    with pytest.raises(TransientError):
        with_retries(operation, "HEAD blob", policy=RetryPolicy(attempts=4, first_delay=0.1))

    assert operation.calls == 4
    assert len(sleeps) == 3, "no wait after the last try"


def test_non_transient_errors_are_not_retried(sleeps: list[float], caplog: pytest.LogCaptureFixture) -> None:
    operation = Flaky(failures=1, error=lambda: AuthError("registry hub refused the credentials"))
    with pytest.raises(AuthError):
        with_retries(operation, "GET manifest", policy=RetryPolicy(attempts=5))

    assert operation.calls == 1
    assert sleeps == []
    assert not caplog.records


def test_a_custom_transient_test_decides(sleeps: list[float]) -> None:
    operation = Flaky(failures=2, error=lambda: OSError("connection reset by peer"))
    result = with_retries(
        operation, "build", is_transient=lambda e: "reset" in str(e), policy=RetryPolicy(attempts=3)
    )
    assert (result, operation.calls) == ("done", 3)


# --- pushes and tags through the fault proxy -----------------------------------------------------------------


@dataclass
class Setup:
    """One open and one authenticated registry, each behind its own fault proxy, and a fresh image."""

    open_registry: TestRegistry
    auth_registry: TestRegistry
    open_proxy: FaultProxy
    auth_proxy: FaultProxy
    built: BuiltImage
    namespace: str

    @property
    def environ(self) -> dict[str, str]:
        return {USER_ENV: self.auth_registry.username, TOKEN_ENV: self.auth_registry.password}

    @property
    def registries(self) -> tuple[RegistryConfig, ...]:
        return private_and_hub(
            self.open_proxy.url, self.auth_proxy.url, self.namespace, (USER_ENV, TOKEN_ENV)
        )

    @property
    def repository(self) -> str:
        return f"{self.namespace}/{self.built.image}"

    def tags(self) -> tuple[list[str], list[str]]:
        """The tags each registry holds, read straight from it (not through the proxies)."""
        return (
            list_tags(self.open_registry.url, self.repository),
            list_tags(self.auth_registry.url, self.repository, self.auth_registry.credentials),
        )

    def proxies(self) -> tuple[FaultProxy, FaultProxy]:
        return self.open_proxy, self.auth_proxy


@pytest.fixture
def setup(
    open_registry: TestRegistry, auth_registry: TestRegistry, make_fault_proxy: ProxyFactory, tmp_path: Path
) -> Setup:
    layout = write_oci_layout(tmp_path / "layout")
    built = BuiltImage(
        image="hello",
        platforms=("linux/amd64", "linux/arm64"),
        layout=layout.path,
        index_digest=layout.index_digest,
        seconds=0.0,
    )
    return Setup(
        open_registry,
        auth_registry,
        make_fault_proxy(open_registry.url),
        make_fault_proxy(auth_registry.url),
        built,
        f"retry{secrets.token_hex(4)}",
    )


def retry_messages(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "pipeline.retry"]


def test_transient_faults_end_in_a_published_and_promoted_image(
    setup: Setup, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    for seed, proxy in enumerate(setup.proxies()):
        # 30% of requests fail; never three times running for one request, so five tries always suffice.
        proxy.configure(FaultPlan(rate=0.3, seed=seed, max_in_a_row=2))

    published = push_everywhere(setup.built, setup.registries, setup.environ)
    assert setup.tags() == ([], []), "pushing by digest tags nothing"
    promote("hello", published.index_digest, TAGS, setup.registries, setup.environ)

    assert published.index_digest == setup.built.index_digest
    assert set(published.platform_digests) == {"linux/amd64", "linux/arm64"}
    assert setup.tags() == (sorted(TAGS), sorted(TAGS))
    injected = setup.open_proxy.injected + setup.auth_proxy.injected
    assert set(injected) == {"500", "503", "reset"}, injected
    retries = retry_messages(caplog)
    assert len(retries) >= injected.total() - 2, "every injected fault (bar a HEAD's) was retried and logged"
    assert any("500" in m for m in retries) and any("503" in m for m in retries)
    out, err = capfd.readouterr()
    assert setup.auth_registry.password not in caplog.text + out + err


@pytest.mark.parametrize("fault", ["5", "3", "R"], ids=["500", "503", "reset"])
def test_each_kind_of_fault_on_a_manifest_put_is_retried(
    setup: Setup, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pipeline.retry")
    setup.auth_proxy.configure(FaultPlan(pattern=fault, method="PUT", path="/manifests/", max_in_a_row=1))

    published = push_everywhere(setup.built, setup.registries, setup.environ)

    assert published.index_digest == setup.built.index_digest
    assert setup.auth_proxy.injected_total == 3, "one fault per manifest (two platforms, one index)"
    retries = retry_messages(caplog)
    assert len(retries) == 3
    assert all("PUT" in m and "/manifests/" in m for m in retries), retries


def test_a_registry_that_stays_down_fails_the_push_with_one_line_and_no_tag(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pipeline.retry")
    setup.auth_proxy.always_fail()

    with pytest.raises(RegistryError) as raised:
        push_everywhere(setup.built, setup.registries, setup.environ)

    message = str(raised.value)
    assert "\n" not in message
    assert "dockerhub" in message, message
    assert len(retry_messages(caplog)) == RetryPolicy.from_env().attempts - 1
    assert setup.tags() == ([], [])


def test_a_registry_that_dies_halfway_through_the_push_moves_no_tag(setup: Setup) -> None:
    setup.auth_proxy.configure(FaultPlan(always=True, after=4, faults=("reset",)))

    with pytest.raises(RegistryError):
        push_everywhere(setup.built, setup.registries, setup.environ)

    assert setup.auth_proxy.injected["reset"] >= RetryPolicy.from_env().attempts
    assert setup.tags() == ([], [])


def test_a_registry_down_at_promotion_moves_no_tag_anywhere(setup: Setup) -> None:
    """The digest is everywhere, then the second registry goes down: the first must not get tags either,
    or the registries would disagree about what `latest` is."""
    published = push_everywhere(setup.built, setup.registries, setup.environ)
    setup.auth_proxy.always_fail("503")

    with pytest.raises(RegistryError):
        promote("hello", published.index_digest, TAGS, setup.registries, setup.environ)

    assert setup.tags() == ([], [])


def test_a_wrong_password_is_not_retried_and_names_registry_and_variable(
    setup: Setup, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    environ = {USER_ENV: setup.auth_registry.username, TOKEN_ENV: "wrong-" + secrets.token_hex(8)}

    with pytest.raises(AuthError) as raised:
        push_everywhere(setup.built, setup.registries, environ)

    message = str(raised.value)
    assert "dockerhub" in message and TOKEN_ENV in message, message
    assert not retry_messages(caplog)
    assert len(setup.auth_proxy.requests(path=f"/v2/{setup.repository}/")) <= 2, (
        "the refusal was not repeated"
    )
    out, err = capfd.readouterr()
    assert environ[TOKEN_ENV] not in caplog.text + out + err + message
    assert setup.tags() == ([], [])


def test_a_missing_variable_names_itself(setup: Setup) -> None:
    with pytest.raises(AuthError, match=f"registry dockerhub: environment variable {TOKEN_ENV} is not set"):
        push_everywhere(setup.built, setup.registries, {USER_ENV: "someone"})


def test_retry_attempts_can_be_lowered_for_a_dead_registry(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIPELINE_RETRY_ATTEMPTS", "2")
    setup.open_proxy.always_fail("500", path="/blobs/")

    with pytest.raises(RegistryError):
        push_everywhere(setup.built, setup.registries[:1], setup.environ)

    assert setup.open_proxy.injected_total == 2
