"""The registry client against real registries (open and htpasswd), directly and through the fault proxy.

These need the `docker-registry` program (installed with the engine) but no engine: the image pushed is a
small OCI layout written by the test, so they run in seconds.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import logging
import os
import secrets
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from pipeline.distribution import (
    INDEX_TYPES,
    BlobUploader,
    RegistryClient,
    engine_trust_gap,
    is_loopback,
)
from pipeline.errors import AuthError, RegistryError
from pipeline.registry import Credentials, free_port
from tests.fixtures.connectproxy import ConnectProxy
from tests.fixtures.faultproxy import FaultPlan, ProxyFactory, list_tags, write_oci_layout
from tests.fixtures.hub import HubFactory, TokenPolicy, registry_config, serve_registry, stop_registry
from tests.fixtures.tlsregistry import TLSRegistry

if TYPE_CHECKING:  # imported for real, pytest would try to collect the class as tests
    from tests.fixtures.registries import TestRegistry


def unique_repository(prefix: str = "dist") -> str:
    return f"{prefix}{secrets.token_hex(4)}/hello"


@pytest.fixture(autouse=True)
def _fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIPELINE_RETRY_FIRST_DELAY", "0.01")


def test_push_through_the_proxy_lands_the_same_digest(
    open_registry: TestRegistry, make_fault_proxy: ProxyFactory, tmp_path: Path
) -> None:
    proxy = make_fault_proxy(open_registry.url)
    layout = write_oci_layout(tmp_path)
    repository = unique_repository()

    stats = BlobUploader(RegistryClient(proxy.url), repository).push_layout(layout.path, layout.index_digest)

    assert (stats.blobs_sent, stats.blobs_present, stats.manifests) == (4, 0, 3)
    direct = RegistryClient(open_registry.url)
    assert direct.manifest_digest(repository, layout.index_digest) == layout.index_digest
    assert direct.platform_digests(repository, layout.index_digest) == layout.platform_digests
    # The upload's PUT came back through the proxy: the Location the registry gave pointed at it.
    assert proxy.requests("PUT", r"/blobs/uploads/.+digest=")
    assert proxy.injected_total == 0
    assert list_tags(open_registry.url, repository) == []


def test_a_second_push_sends_no_blob_again(open_registry: TestRegistry, tmp_path: Path) -> None:
    layout = write_oci_layout(tmp_path)
    uploader = BlobUploader(RegistryClient(open_registry.url), unique_repository())
    uploader.push_layout(layout.path, layout.index_digest)

    again = uploader.push_layout(layout.path, layout.index_digest)

    assert (again.blobs_sent, again.blobs_present, again.bytes_sent) == (0, 4, 0)


def test_chunked_upload_head_and_streamed_blob_pass_the_proxy(
    open_registry: TestRegistry, make_fault_proxy: ProxyFactory
) -> None:
    """What docker itself does through a proxy: a chunked PATCH, a HEAD for the digest, a large GET."""
    proxy = make_fault_proxy(open_registry.url)
    repository = unique_repository()
    data = secrets.token_bytes(3 * 1024 * 1024 + 17)
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    connection = http.client.HTTPConnection(proxy.url, timeout=30)

    connection.request("POST", f"/v2/{repository}/blobs/uploads/", body=b"")
    started = connection.getresponse()
    started.read()
    location = started.getheader("Location") or ""
    assert started.status == 202
    assert f"//{proxy.url}/" in location or location.startswith("/v2/")

    path = location.split(proxy.url, 1)[-1]
    pieces = (data[i : i + 100_000] for i in range(0, len(data), 100_000))
    connection.request("PATCH", path, body=pieces, encode_chunked=True)
    patched = connection.getresponse()
    patched.read()
    assert patched.status == 202
    path = (patched.getheader("Location") or "").split(proxy.url, 1)[-1]
    connection.request("PUT", f"{path}{'&' if '?' in path else '?'}digest={digest}", body=b"")
    finished = connection.getresponse()
    finished.read()
    assert finished.status == 201, finished.status
    assert finished.getheader("Docker-Content-Digest") == digest

    connection.request("HEAD", f"/v2/{repository}/blobs/{digest}")
    head = connection.getresponse()
    head.read()
    assert (head.status, head.getheader("Content-Length")) == (200, str(len(data)))
    assert head.getheader("Docker-Content-Digest") == digest

    connection.request("GET", f"/v2/{repository}/blobs/{digest}")
    fetched = connection.getresponse()
    assert fetched.read() == data
    connection.close()
    assert [s.outcome for s in proxy.seen] == ["202", "202", "201", "200", "200"]


def test_tagging_is_manifest_only_and_sets_exactly_the_tags(
    open_registry: TestRegistry, make_fault_proxy: ProxyFactory, tmp_path: Path
) -> None:
    layout = write_oci_layout(tmp_path)
    repository = unique_repository()
    BlobUploader(RegistryClient(open_registry.url), repository).push_layout(layout.path, layout.index_digest)
    proxy = make_fault_proxy(open_registry.url)

    RegistryClient(proxy.url).tag(repository, layout.index_digest, ["1.2.3", "1.2", "1", "latest"])

    assert list_tags(open_registry.url, repository) == ["1", "1.2", "1.2.3", "latest"]
    assert proxy.seen, "the tag went around the proxy"
    assert all("/manifests/" in seen.path for seen in proxy.seen), [s.path for s in proxy.seen]
    assert not proxy.requests(path="/blobs/")
    direct = RegistryClient(open_registry.url)
    for tag in ("1.2.3", "latest"):
        assert direct.manifest_digest(repository, tag) == layout.index_digest


def test_manifest_digest_of_a_missing_tag_is_none(open_registry: TestRegistry, tmp_path: Path) -> None:
    layout = write_oci_layout(tmp_path)
    repository = unique_repository()
    client = RegistryClient(open_registry.url)
    BlobUploader(client, repository).push_layout(layout.path, layout.index_digest)

    assert client.manifest_digest(repository, "no-such-tag") is None
    with pytest.raises(RegistryError, match="does not exist"):
        client.get_manifest(repository, "no-such-tag")


def test_auth_registry_with_the_right_credentials(auth_registry: TestRegistry, tmp_path: Path) -> None:
    layout = write_oci_layout(tmp_path)
    repository = unique_repository()
    client = RegistryClient(auth_registry.url, auth_registry.credentials, name="hub")

    BlobUploader(client, repository).push_layout(layout.path, layout.index_digest)
    client.tag(repository, layout.index_digest, ["v1"])

    assert list_tags(auth_registry.url, repository, auth_registry.credentials) == ["v1"]


def test_auth_registry_without_credentials_asks_for_them(auth_registry: TestRegistry) -> None:
    client = RegistryClient(auth_registry.url, None, name="hub")

    with pytest.raises(AuthError, match=r"registry hub .*wants credentials"):
        client.manifest_digest(unique_repository(), "latest")


def test_wrong_password_is_refused_once_without_retries(
    auth_registry: TestRegistry, make_fault_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = make_fault_proxy(auth_registry.url)
    wrong = Credentials(auth_registry.username, "not-the-password")
    client = RegistryClient(proxy.url, wrong, name="hub")

    with pytest.raises(AuthError) as raised:
        client.manifest_digest(unique_repository(), "latest")

    assert "registry hub" in str(raised.value)
    assert "\n" not in str(raised.value)
    # One challenge, one refused answer: nothing repeated.
    assert [s.outcome for s in proxy.seen] == ["401", "401"]
    assert not [r for r in caplog.records if r.name == "pipeline.retry"]
    assert "not-the-password" not in caplog.text


def test_proxy_fails_requests_as_planned(open_registry: TestRegistry, make_fault_proxy: ProxyFactory) -> None:
    """The proxy itself: a pattern fails exactly the requests it names, with the fault it names."""
    proxy = make_fault_proxy(open_registry.url, FaultPlan(pattern="53R.", path="^/v2/$"))
    outcomes = []
    for _ in range(4):
        connection = http.client.HTTPConnection(proxy.url, timeout=10)
        try:
            connection.request("GET", "/v2/")
            response = connection.getresponse()
            response.read()
            outcomes.append(str(response.status))
        except ConnectionError as error:
            outcomes.append(type(error).__name__)
        finally:
            connection.close()

    assert outcomes == ["500", "503", "ConnectionResetError", "200"]
    assert proxy.injected == {"500": 1, "503": 1, "reset": 1}
    proxy.always_fail("503")
    connection = http.client.HTTPConnection(proxy.url, timeout=10)
    connection.request("GET", "/v2/")
    assert connection.getresponse().status == 503
    connection.close()


def test_merge_joins_platform_manifests_into_one_index_in_both_registries(
    open_registry: TestRegistry, auth_registry: TestRegistry, tmp_path: Path
) -> None:
    from pipeline.config import RegistryConfig
    from pipeline.publish import merge_platform_digests

    namespace = f"merge{secrets.token_hex(4)}"
    environ = {"T_HUB_USER": auth_registry.username, "T_HUB_TOKEN": auth_registry.password}
    registries = (
        RegistryConfig(name="private", url=f"{open_registry.url}/{namespace}"),
        RegistryConfig(
            name="hub",
            url=f"{auth_registry.url}/{namespace}",
            username_env="T_HUB_USER",
            password_env="T_HUB_TOKEN",
        ),
    )
    clients = [
        RegistryClient(open_registry.url),
        RegistryClient(auth_registry.url, auth_registry.credentials),
    ]
    digests: dict[str, str] = {}
    for platform in ("linux/amd64", "linux/arm64"):
        # One runner per platform: each pushes its own single-platform build to every registry.
        layout = write_oci_layout(tmp_path / platform.replace("/", "-"), (platform,))
        for client in clients:
            BlobUploader(client, f"{namespace}/hello").push_layout(layout.path, layout.index_digest)
        digests[platform] = layout.platform_digests[platform]

    index_digest = merge_platform_digests("hello", list(digests.values()), registries, environ)

    for client in clients:
        manifest = client.get_manifest(f"{namespace}/hello", index_digest)
        assert manifest.media_type in INDEX_TYPES
        assert client.platform_digests(f"{namespace}/hello", index_digest) == digests
        assert json.loads(manifest.body)["manifests"][0]["platform"] == {
            "architecture": "amd64",
            "os": "linux",
        }
    assert list_tags(open_registry.url, f"{namespace}/hello") == []


# --- the transport: loopback, credentials' origin, digests, upload sessions, error bodies --------------------


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1:5000", True),
        ("127.1.2.3", True),
        ("[::1]:5000", True),
        ("localhost:5000", True),
        ("127.evil.example:5000", False),
        ("127.0.0.1.nip.example", False),
        ("registry.example:443", False),
        ("10.0.0.1:5000", False),
    ],
)
def test_loopback_is_decided_by_address_not_by_prefix(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    assert RegistryClient(host).base.startswith("http://" if loopback else "https://")


def test_a_malformed_digest_fails_at_once_without_a_request(
    open_registry: TestRegistry, make_fault_proxy: ProxyFactory, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = make_fault_proxy(open_registry.url)

    with pytest.raises(RegistryError, match="is not a digest"):
        RegistryClient(proxy.url).manifest_digest("any/repo", "sha256:abc")

    assert proxy.seen == []
    assert not [r for r in caplog.records if r.name == "pipeline.retry"]


def test_a_failed_upload_put_is_retried_in_its_session_and_the_registry_error_reaches_the_message(
    open_registry: TestRegistry, make_fault_proxy: ProxyFactory, tmp_path: Path
) -> None:
    layout = write_oci_layout(tmp_path, ("linux/amd64",))
    # Every blob PUT fails once before reaching the registry: the session is intact, the PUT is repeated.
    proxy = make_fault_proxy(open_registry.url, FaultPlan(pattern="5.", method="PUT", path="/blobs/uploads/"))
    stats = BlobUploader(RegistryClient(proxy.url), unique_repository()).push_layout(
        layout.path, layout.index_digest
    )
    assert stats.blobs_sent == 2
    assert len(proxy.requests("POST", "/blobs/uploads/")) == 2
    assert [s.outcome for s in proxy.requests("PUT", "/blobs/uploads/")].count("201") == 2

    proxy.always_fail("500", method="PUT", path="/blobs/uploads/")
    other = write_oci_layout(tmp_path / "other", ("linux/amd64",))
    with pytest.raises(RegistryError) as raised:
        BlobUploader(RegistryClient(proxy.url), unique_repository()).push_layout(
            other.path, other.index_digest
        )
    message = str(raised.value)
    assert "injected 500 by the fault proxy" in message and "gave up after 5 attempts" in message
    assert "\n" not in message


class _Recorder(ThreadingHTTPServer):
    """Answers 201 to anything and remembers the headers it got."""

    def __init__(self) -> None:
        self.headers_seen: list[dict[str, str]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def _any(self) -> None:
                recorder.headers_seen.append(dict(self.headers.items()))
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_PUT = do_GET = _any

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


def test_credentials_never_go_to_an_upload_location_on_another_host(auth_registry: TestRegistry) -> None:
    client = RegistryClient(auth_registry.url, auth_registry.credentials)
    client.ping()  # learns that the registry wants Basic credentials
    other = _Recorder()
    try:
        response = client._request(
            "PUT", f"http://127.0.0.1:{other.server_address[1]}/upload?state=x", "", body=b"data"
        )
    finally:
        other.shutdown()
    assert response.status_code == 201
    assert [h for h in other.headers_seen if "Authorization" in h] == []


def test_an_http_token_realm_on_another_host_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    client = RegistryClient("registry.example", Credentials("u", "secret-password"))
    monkeypatch.setattr(RegistryClient, "base", property(lambda self: "https://registry.example"))
    with pytest.raises(RegistryError, match=r"token realm 'http://auth\.example/token' is not HTTPS"):
        client._check_realm("http://auth.example/token")
    client._check_realm("https://auth.example/token")
    client._check_realm("http://127.0.0.1:9999/token")


# --- the Docker Hub stand-in: token auth ---------------------------------------------------------------------


def test_hub_tokens_are_refreshed_before_they_expire_and_429s_are_waited_out(
    hub_factory: HubFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    hub = hub_factory(TokenPolicy(lifetime=2, throttle=0.1), throttle=0.1)
    layout = write_oci_layout(tmp_path)
    client = RegistryClient(hub.url, hub.account, name="hub")
    client.ping()
    BlobUploader(client, "acme/hello").push_layout(layout.path, layout.index_digest)
    time.sleep(1.6)  # three quarters of the token's life are gone: the next request renews it first
    client.tag("acme/hello", layout.index_digest, ["1.0"])

    assert client.tags("acme/hello") == ["1.0"]
    refreshes = [r.getMessage() for r in caplog.records if "refreshing" in r.getMessage()]
    assert refreshes and "repository:acme/hello:pull,push" in refreshes[0]
    throttled = [r.getMessage() for r in caplog.records if "429" in r.getMessage()]
    assert hub.front.throttled + hub.tokens.counts["throttled"] > 0
    assert throttled and all("Retry-After 1s" in line for line in throttled)
    assert hub.account.password not in caplog.text


def test_hub_anonymous_pulls_get_a_pull_token_and_anonymous_pushes_are_refused(
    hub_factory: HubFactory, tmp_path: Path
) -> None:
    hub = hub_factory()
    layout = write_oci_layout(tmp_path)
    BlobUploader(RegistryClient(hub.url, hub.account), "acme/hello").push_layout(
        layout.path, layout.index_digest
    )
    anonymous = RegistryClient(hub.url, name="hub")

    assert anonymous.platform_digests("acme/hello", layout.index_digest) == layout.platform_digests
    assert hub.tokens.counts["issued-anonymous"] >= 1
    with pytest.raises(AuthError, match=r"registry hub .* wants credentials .*username_env/password_env"):
        anonymous.tag("acme/hello", layout.index_digest, ["latest"])


def test_hub_refuses_a_push_outside_the_account_namespace_in_one_line(
    hub_factory: HubFactory, tmp_path: Path
) -> None:
    hub = hub_factory()
    layout = write_oci_layout(tmp_path)
    for repository in ("someone-else/hello", "acme/team/hello"):
        with pytest.raises(AuthError, match=r"denied access .*push only under your own namespace") as raised:
            BlobUploader(RegistryClient(hub.url, hub.account, name="hub"), repository).push_layout(
                layout.path, layout.index_digest
            )
        assert "\n" not in str(raised.value)


def test_hub_wrong_password_is_one_line_naming_the_variables_without_retries(
    hub_factory: HubFactory, caplog: pytest.LogCaptureFixture
) -> None:
    hub = hub_factory()
    client = RegistryClient(
        hub.url, Credentials("acme", "wrong"), name="hub", credential_variables=("HUB_USER", "HUB_TOKEN")
    )
    with pytest.raises(AuthError) as raised:
        client.ping()
    assert str(raised.value).startswith(f"registry hub ({hub.url}) refused the credentials")
    assert "check HUB_USER and HUB_TOKEN" in str(raised.value)
    assert hub.tokens.counts["refused-401"] == 1
    assert not [r for r in caplog.records if r.name == "pipeline.retry"]


def test_hub_expired_token_is_renewed_once_then_refused_in_one_line(
    hub_factory: HubFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    hub = hub_factory(TokenPolicy(lifetime=300, expired=True))
    client = RegistryClient(hub.url, hub.account, name="hub", credential_variables=("HUB_USER", "HUB_TOKEN"))
    with pytest.raises(AuthError, match=r"even with a fresh token.*check HUB_USER and HUB_TOKEN"):
        client.tags("acme/hello")
    assert hub.tokens.counts["issued"] == 2  # the first, and exactly one renewal
    assert "fetching a new one once" in caplog.text


def test_hub_blob_reads_follow_the_redirect_to_storage_without_credentials(
    hub_factory: HubFactory, tmp_path: Path
) -> None:
    hub = hub_factory()
    layout = write_oci_layout(tmp_path, ("linux/arm64",))
    client = RegistryClient(hub.url, hub.account, name="hub")
    BlobUploader(client, "acme/hello").push_layout(layout.path, layout.index_digest)
    hub.storage.requests.clear()

    manifest = client.get_manifest("acme/hello", layout.platform_digests["linux/arm64"])
    config = client.get_blob_json("acme/hello", manifest.document["config"]["digest"])

    assert config["architecture"] == "arm64"
    assert hub.front.redirected >= 1
    assert [r.method for r in hub.storage.requests] == ["GET"]
    assert not any(r.authorization for r in hub.storage.requests)


def test_hub_token_service_speaks_oauth2_post_as_containerd_asks(hub_factory: HubFactory) -> None:
    """The stand-in itself: the documented OAuth2 password grant, then a refresh token, scope intersection."""
    hub = hub_factory()
    client = httpx.Client()
    form = {
        "grant_type": "password",
        "username": "acme",
        "password": hub.account.password,
        "service": "hub-standin-registry",
        "client_id": "test",
        "access_type": "offline",
        "scope": "repository:acme/app:pull,push repository:other/app:pull,push",
    }
    answer = client.post(hub.tokens.realm, data=form).json()
    claims = json.loads(base64.urlsafe_b64decode(answer["access_token"].split(".")[1] + "=="))
    assert claims["access"] == [
        {"type": "repository", "name": "acme/app", "actions": ["pull", "push"]},
        {"type": "repository", "name": "other/app", "actions": ["pull"]},
    ]
    refreshed = client.post(
        hub.tokens.realm,
        data={
            "grant_type": "refresh_token",
            "refresh_token": answer["refresh_token"],
            "service": form["service"],
            "client_id": "t",
        },
    )
    assert refreshed.status_code == 200 and refreshed.json()["expires_in"] == 2
    wrong = client.post(hub.tokens.realm, data={**form, "password": "nope"})
    assert wrong.status_code == 401


# --- HTTPS with a private CA, and a proxy ---------------------------------------------------------------------


def test_https_registry_is_trusted_through_certs_d_or_ca_file_and_refused_in_one_line_without(
    tls_registry: TLSRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(RegistryError) as raised:
        RegistryClient(tls_registry.url, name="corp").ping()
    message = str(raised.value)
    assert message.startswith(f"registry corp ({tls_registry.url}): TLS certificate not trusted")
    assert f"/etc/docker/certs.d/{tls_registry.url}/ca.crt" in message and "ca_file" in message
    assert "\n" not in message
    assert not [r for r in caplog.records if r.name == "pipeline.retry"], "a certificate error was retried"

    assert RegistryClient(tls_registry.url, ca_file=tls_registry.ca_file).tags("any/repo") == []
    tls_registry.trust()
    assert RegistryClient(tls_registry.url).tags("any/repo") == []


def test_insecure_keeps_dockers_meaning_tls_unverified_then_plain_http(
    tls_registry: TLSRegistry, open_registry: TestRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    assert RegistryClient(tls_registry.url, insecure=True, name="corp").tags("any/repo") == []
    assert "certificate is not verified" in caplog.text
    plain = f"pipeline-registry.test:{open_registry.url.rsplit(':', 1)[1]}"
    client = RegistryClient(plain, insecure=True, name="lab")
    assert client.tags("any/repo") == []
    assert client.base == f"http://{plain}"
    assert "does not speak TLS: using plain HTTP" in caplog.text


def test_pushes_go_through_https_proxy_and_a_refusing_proxy_is_one_line(
    tls_registry: TLSRegistry,
    connect_proxy: ConnectProxy,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    tls_registry.trust()
    monkeypatch.setenv("HTTPS_PROXY", connect_proxy.url)
    layout = write_oci_layout(tmp_path)
    client = RegistryClient(tls_registry.url, name="corp")
    BlobUploader(client, "acme/hello").push_layout(layout.path, layout.index_digest)

    assert client.manifest_digest("acme/hello", layout.index_digest) == layout.index_digest
    assert connect_proxy.tunnels[tls_registry.url] >= 1
    assert connect_proxy.bytes_up > 8000  # the layers went up the tunnel

    monkeypatch.setenv("NO_PROXY", "pipeline-registry.test")
    tunnels = sum(connect_proxy.tunnels.values())
    assert RegistryClient(tls_registry.url).tags("acme/hello") == []  # no tag: pushed by digest only
    assert sum(connect_proxy.tunnels.values()) == tunnels, "NO_PROXY was ignored"

    connect_proxy.refuse = True
    monkeypatch.setenv("NO_PROXY", "nothing.example")  # a new proxy setting: new connections
    with pytest.raises(RegistryError) as raised:
        RegistryClient(tls_registry.url, name="corp").ping()
    message = str(raised.value)
    assert message.startswith(f"registry corp ({tls_registry.url}): the proxy refused")
    assert "HTTPS_PROXY" in message and "NO_PROXY" in message and "\n" not in message


def test_a_ca_file_the_engine_cannot_see_is_pointed_out(tls_registry: TLSRegistry) -> None:
    gap = engine_trust_gap(tls_registry.url, tls_registry.ca_file)
    assert gap is not None and f"/etc/docker/certs.d/{tls_registry.url}/ca.crt" in gap
    tls_registry.trust()
    assert engine_trust_gap(tls_registry.url, tls_registry.ca_file) is None
    assert engine_trust_gap("127.0.0.1:5000", tls_registry.ca_file) is None


def test_an_upload_interrupted_by_a_registry_restart_continues_in_a_new_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Registry 2.8 without `http.secret` draws a new one at every start: the old upload's `_state` is then
    refused (404 BLOB_UPLOAD_INVALID), so the retry must begin a new session."""
    port = free_port()
    config = registry_config(tmp_path / "storage", port)
    processes = [serve_registry(tmp_path, config, port)]
    client = RegistryClient(f"127.0.0.1:{port}")
    original = client._request

    def restart_before_the_first_put(method: str, path: str, scope: str, **options: Any) -> Any:
        if method == "PUT" and "/blobs/uploads/" in path and len(processes) == 1:
            stop_registry(processes[0])
            processes.append(serve_registry(tmp_path, config, port))
        return original(method, path, scope, **options)

    monkeypatch.setattr(client, "_request", restart_before_the_first_put)
    blob = tmp_path / "blob"
    blob.write_bytes(secrets.token_bytes(100_000))
    digest = "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest()
    try:
        assert BlobUploader(client, "restart/app").upload_blob(digest, blob) is True
        assert BlobUploader(RegistryClient(f"127.0.0.1:{port}"), "restart/app").blob_exists(digest)
    finally:
        stop_registry(processes[-1])
    assert len(processes) == 2
    (retry,) = [r.getMessage() for r in caplog.records if r.name == "pipeline.retry"]
    assert "in a new session" in retry and "BLOB_UPLOAD" in retry


def test_blob_uploads_run_in_parallel_up_to_the_bound(
    hub_factory: HubFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = hub_factory(TokenPolicy(lifetime=60))
    hub.front.configure(FaultPlan(latency=0.1))  # every request takes a while: overlaps show
    monkeypatch.setenv("PIPELINE_PARALLEL_UPLOADS", "3")
    layout = write_oci_layout(tmp_path, ("linux/amd64", "linux/arm64", "linux/ppc64le", "linux/s390x"))
    stats = BlobUploader(RegistryClient(hub.url, hub.account), "acme/wide").push_layout(
        layout.path, layout.index_digest
    )
    assert stats.blobs_sent == 8
    assert hub.front.most_in_flight == 3


def test_a_full_registry_disk_reaches_the_message(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a 1 MiB tmpfs as the registry's storage")
    storage = tmp_path / "storage"
    storage.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(storage)], check=True)
    port = free_port()
    process = serve_registry(tmp_path, registry_config(storage, port), port)
    blob = tmp_path / "blob"
    blob.write_bytes(secrets.token_bytes(3 << 20))
    digest = "sha256:" + hashlib.sha256(blob.read_bytes()).hexdigest()
    try:
        with pytest.raises(RegistryError) as raised:
            BlobUploader(RegistryClient(f"127.0.0.1:{port}", name="full"), "a/b").upload_blob(digest, blob)
    finally:
        stop_registry(process)
        subprocess.run(["umount", str(storage)], check=True)
    message = str(raised.value)
    assert message.startswith("registry full: ") and "No space left on device" in message
    assert "gave up after 5 attempts" in message and "\n" not in message
