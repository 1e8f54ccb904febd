"""The registry client against real registries (open and htpasswd), directly and through the fault proxy.

These need the `docker-registry` program (installed with the engine) but no engine: the image pushed is a
small OCI layout written by the test, so they run in seconds.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from pipeline.distribution import INDEX_TYPES, BlobUploader, RegistryClient
from pipeline.errors import AuthError, RegistryError
from pipeline.registry import Credentials
from tests.fixtures.faultproxy import FaultPlan, ProxyFactory, list_tags, write_oci_layout

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
