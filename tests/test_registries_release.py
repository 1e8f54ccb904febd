"""Full `pipeline release` runs (both platforms, smoke included) against registries as they really are: the
Docker Hub stand-in (token auth with 2-second tokens, 429s, blob reads redirected to storage) and an HTTPS
registry with a private CA reached through a CONNECT proxy. Kept to two builds: they are the slow part."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.distribution import RegistryClient
from pipeline.registry import Credentials
from tests.fixtures.connectproxy import ConnectProxy
from tests.fixtures.hub import HubFactory, TokenPolicy
from tests.fixtures.tlsregistry import TLSRegistry
from tests.test_release import IMAGE, make_project, run_pipeline


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.engine
def test_release_to_the_hub_stand_in_with_two_second_tokens_refreshes_them(
    tmp_path: Path, base_image: str, hub_factory: HubFactory
) -> None:
    hub = hub_factory(TokenPolicy(lifetime=2), throttle=0.05)
    registries = (
        f'[[registries]]\nname = "hub"\nurl = "{hub.url}"\n'
        'username_env = "HUB_TEST_USER"\npassword_env = "HUB_TEST_TOKEN"\n'
    )
    project = make_project(tmp_path, base_image, registries)
    secrets = {"HUB_TEST_USER": hub.account.username, "HUB_TEST_TOKEN": hub.account.password}

    wrong = run_pipeline(project, "release", env={**secrets, "HUB_TEST_TOKEN": "wrong"})
    assert wrong.returncode != 0 and "Traceback" not in wrong.stderr
    (line,) = _error_lines(wrong.stderr)
    assert f"registry hub ({hub.url}) refused the credentials" in line
    assert "HUB_TEST_USER and HUB_TEST_TOKEN" in line
    client = RegistryClient(hub.url, Credentials(hub.account.username, hub.account.password))
    assert client.tags(IMAGE) == [], "a refused release moved a tag"

    result = run_pipeline(project, "release", env=secrets)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    assert hub.account.password not in output
    refreshes = [line.strip() for line in output.splitlines() if "refreshing" in line]
    assert refreshes, "no token outlived its 2 seconds?"
    print("\n".join(refreshes))  # shown with -s: the figure for the closing note
    report = json.loads((project / "release.json").read_text())
    (image,) = report["images"]
    smoked = {(t["registry"], t["platform"]) for t in image["smoke"]["targets"] if t["passed"]}
    assert smoked == {("hub", "linux/amd64"), ("hub", "linux/arm64")}
    assert client.manifest_digest(IMAGE, "1.2.3") == image["index_digest"]
    assert hub.tokens.counts["issued"] > 2
    assert hub.front.throttled > 0 and "answered 429 (rate limited; Retry-After 1s)" in output
    # The engine's pulls and our reads were redirected to storage; credentials never went there.
    assert hub.front.redirected > 0 and hub.storage.requests
    assert not [r for r in hub.storage.requests if r.authorization]


@pytest.mark.engine
def test_release_to_an_https_registry_through_a_proxy_needs_its_ca(
    tmp_path: Path,
    base_image: str,
    tls_registry: TLSRegistry,
    connect_proxy: ConnectProxy,
) -> None:
    registries = f'[[registries]]\nname = "corp"\nurl = "{tls_registry.url}/team"\n'
    project = make_project(tmp_path, base_image, registries)
    proxy_env = {"HTTPS_PROXY": connect_proxy.url}

    untrusted = run_pipeline(project, "release", env=proxy_env)
    assert untrusted.returncode != 0 and "Traceback" not in untrusted.stderr
    (line,) = _error_lines(untrusted.stderr)
    assert f"registry corp ({tls_registry.url}): TLS certificate not trusted" in line
    assert f"/etc/docker/certs.d/{tls_registry.url}/ca.crt" in line
    assert "retry" not in untrusted.stderr
    assert RegistryClient(tls_registry.url, ca_file=tls_registry.ca_file).tags(f"team/{IMAGE}") == []

    tls_registry.trust()
    result = run_pipeline(project, "release", env=proxy_env)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    report = json.loads((project / "release.json").read_text())
    (image,) = report["images"]
    smoked = {(t["registry"], t["platform"]) for t in image["smoke"]["targets"] if t["passed"]}
    assert smoked == {("corp", "linux/amd64"), ("corp", "linux/arm64")}
    assert (
        RegistryClient(tls_registry.url).manifest_digest(f"team/{IMAGE}", "latest") == image["index_digest"]
    )
    # Our client went through the proxy (the engine does not read our environment).
    assert connect_proxy.tunnels[tls_registry.url] >= 1
    assert connect_proxy.bytes_up > 10_000
