"""A small client of the registry HTTP API (distribution spec) for what needs no docker: reading digests,
copying a manifest under a new tag (a manifest-only promotion), and joining per-platform manifests into an
index. Auth: Basic, or the Bearer token flow that Docker Hub and most registries use.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.errors import AuthError, RegistryError
from pipeline.registry import Credentials
from pipeline.retry import RetryPolicy, TransientError, with_retries

INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
ACCEPT = ", ".join(INDEX_TYPES + MANIFEST_TYPES)
_TIMEOUT = 30.0
_MAX_REDIRECTS = 5
# Registries log it, and it tells our requests from the engine's pulls (the fault tests rely on that).
USER_AGENT = f"image-pipeline/{__version__}"
_DOCKER_HUB_HOSTS = {"docker.io", "index.docker.io", "registry-1.docker.io"}


@dataclass(frozen=True)
class Manifest:
    media_type: str
    body: bytes
    digest: str

    @property
    def document(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.body)
        return parsed

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


def _is_loopback(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]", maxsplit=1)[0] + "]"
    return name in ("localhost", "127.0.0.1", "[::1]") or name.startswith("127.")


def api_base(host: str, *, insecure: bool = False) -> str:
    if host in _DOCKER_HUB_HOSTS:
        return "https://registry-1.docker.io"
    # Docker itself talks plain HTTP to loopback registries; so do we.
    return f"{'http' if insecure or _is_loopback(host) else 'https'}://{host}"


class ConnectionPool:
    """Keep-alive HTTP connections, one per thread and host: a push is dozens of small requests, and a new
    TCP connection for each costs more than the request itself."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _connection(self, scheme: str, netloc: str) -> http.client.HTTPConnection:
        connections: dict[tuple[str, str], http.client.HTTPConnection] = self._local.__dict__.setdefault(
            "connections", {}
        )
        key = (scheme, netloc)
        if key not in connections:
            connection_class = (
                http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            )
            connections[key] = connection_class(netloc, timeout=_TIMEOUT)
        return connections[key]

    def _drop(self, scheme: str, netloc: str) -> None:
        connection = self._local.__dict__.get("connections", {}).pop((scheme, netloc), None)
        if connection is not None:
            connection.close()

    def exchange(
        self, name: str, method: str, url: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise RegistryError(f"{name}: refusing a non-HTTP location {url!r}")
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        headers = {"User-Agent": USER_AGENT, **headers}
        if body is not None:
            headers["Content-Length"] = str(len(body))
        connection = self._connection(parts.scheme, parts.netloc)
        try:
            connection.request(method, target, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as error:
            # Also a kept-alive connection the server closed meanwhile: the caller's logged retry opens a new one.
            self._drop(parts.scheme, parts.netloc)
            raise TransientError(f"{name}: {method} {url}: {error}") from error
        if response.will_close:
            self._drop(parts.scheme, parts.netloc)
        return response.status, _lower(response.getheaders()), data


class RegistryClient:
    def __init__(
        self,
        host: str,
        credentials: Credentials | None = None,
        *,
        insecure: bool = False,
        name: str | None = None,
        credential_variables: tuple[str, str] | None = None,
    ) -> None:
        self.credential_variables = credential_variables
        self.host = host
        self.name = name or host
        self.credentials = credentials
        self.base = api_base(host, insecure=insecure)
        self._tokens: dict[str, str] = {}
        self._connections = ConnectionPool()
        self._basic = False

    # -- requests ------------------------------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        scope: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        def attempt() -> tuple[int, dict[str, str], bytes]:
            sent_with = self._authorization(scope)
            status, response_headers, data = self._send(method, path, scope, body, headers or {})
            # Concurrent requests may all meet the first 401: the ones that lose the race to authenticate
            # just send again with what the winner obtained.
            if status == 401 and (
                self._authorization(scope) != sent_with
                or self._authenticate(response_headers.get("www-authenticate", ""), scope)
            ):
                status, response_headers, data = self._send(method, path, scope, body, headers or {})
            if status in (401, 403):
                raise AuthError(self._auth_message(status))
            if status >= 500 or status == 429:
                raise TransientError(f"{self.name}: {method} {path} answered {status}")
            return status, response_headers, data

        policy = RetryPolicy.from_env()
        try:
            return with_retries(attempt, f"{method} {self.host}{path}", policy=policy)
        except TransientError as error:
            raise RegistryError(f"{error} (gave up after {policy.attempts} attempts)") from None

    def _authorization(self, scope: str) -> str | None:
        if scope in self._tokens:
            return f"Bearer {self._tokens[scope]}"
        if self._basic and self.credentials is not None:
            return _basic_header(self.credentials)
        return None

    def _send(
        self, method: str, path: str, scope: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        url = path if path.startswith(("http://", "https://")) else self.base + path
        request_headers = dict(headers)
        authorization = self._authorization(scope)
        if authorization is not None:
            request_headers["Authorization"] = authorization
        origin = urllib.parse.urlsplit(url).netloc
        for _ in range(_MAX_REDIRECTS + 1):
            status, response_headers, data = self._connections.exchange(
                self.name, method, url, body, request_headers
            )
            if status not in (301, 302, 303, 307, 308) or method not in ("GET", "HEAD"):
                return status, response_headers, data
            # Blob reads may be redirected to storage elsewhere: follow, without our credentials if so.
            url = urllib.parse.urljoin(url, response_headers.get("location", ""))
            if urllib.parse.urlsplit(url).netloc != origin:
                request_headers.pop("Authorization", None)
        raise RegistryError(f"{self.name}: {method} {path}: more than {_MAX_REDIRECTS} redirects")

    def _authenticate(self, challenge: str, scope: str) -> bool:
        if self.credentials is None and not challenge.lower().startswith("bearer"):
            return False
        if challenge.lower().startswith("basic"):
            if self._basic:
                return False
            self._basic = True
            return True
        if challenge.lower().startswith("bearer"):
            params = dict(
                (key, value.strip('"'))
                for key, value in (
                    part.split("=", 1) for part in _split_challenge(challenge[len("bearer") :])
                )
            )
            if "realm" not in params or scope in self._tokens:
                return False
            if not params["realm"].startswith(("https://", "http://")):
                raise RegistryError(f"{self.name}: token realm {params['realm']!r} is not an HTTP URL")
            query = {"service": params.get("service", ""), "scope": scope}
            token_request = urllib.request.Request(  # noqa: S310 - checked to be HTTP(S) above
                f"{params['realm']}?{urllib.parse.urlencode(query)}", headers={"User-Agent": USER_AGENT}
            )
            if self.credentials is not None:
                token_request.add_header("Authorization", _basic_header(self.credentials))
            try:
                with urllib.request.urlopen(token_request, timeout=_TIMEOUT) as response:  # noqa: S310
                    payload = json.loads(response.read())
            except urllib.error.HTTPError as error:
                if error.code in (401, 403):
                    raise AuthError(self._auth_message(error.code)) from None
                raise TransientError(f"{self.name}: token endpoint answered {error.code}") from error
            except (urllib.error.URLError, OSError) as error:
                raise TransientError(f"{self.name}: token endpoint: {error}") from error
            self._tokens[scope] = str(payload.get("token") or payload.get("access_token"))
            return True
        return False

    def _auth_message(self, status: int) -> str:
        if self.credentials is None:
            return f"registry {self.name} ({self.host}) wants credentials ({status}); set username_env/password_env"
        where = (
            f"{self.credential_variables[0]} and {self.credential_variables[1]}"
            if self.credential_variables
            else "the environment variables its config names"
        )
        return f"registry {self.name} ({self.host}) refused the credentials ({status}); check {where}"

    # -- operations ----------------------------------------------------------------------------------------

    def ping(self) -> None:
        """Reach the registry and check the credentials (a 401 here means they are wrong) before any work."""
        status, _, _ = self._request("GET", "/v2/", "registry:catalog:*")
        if status != 200:
            raise RegistryError(f"registry {self.name} ({self.host}) answered {status} to /v2/")

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The digest a tag or digest resolves to, or None when it is not there."""
        status, headers, _ = self._request(
            "HEAD",
            f"/v2/{repository}/manifests/{reference}",
            f"repository:{repository}:pull",
            headers={"Accept": ACCEPT},
        )
        if status == 404:
            return None
        if status != 200:
            raise RegistryError(f"{self.name}: manifest {repository}:{reference} answered {status}")
        digest = headers.get("docker-content-digest")
        if digest is None:  # HEAD without the header: fetch the body and hash it
            return self.get_manifest(repository, reference).digest
        return digest

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        status, headers, body = self._request(
            "GET",
            f"/v2/{repository}/manifests/{reference}",
            f"repository:{repository}:pull",
            headers={"Accept": ACCEPT},
        )
        if status == 404:
            raise RegistryError(f"{self.name}: {self.host}/{repository}@{reference} does not exist")
        if status != 200:
            raise RegistryError(f"{self.name}: manifest {repository}:{reference} answered {status}")
        media_type = headers.get("content-type", "").split(";")[0] or json.loads(body).get("mediaType", "")
        return Manifest(media_type=media_type, body=body, digest="sha256:" + hashlib.sha256(body).hexdigest())

    def put_manifest(self, repository: str, reference: str, manifest: Manifest) -> str:
        status, headers, body = self._request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            f"repository:{repository}:pull,push",
            body=manifest.body,
            headers={"Content-Type": manifest.media_type},
        )
        if status not in (200, 201):
            detail = body.decode(errors="replace").strip()[:200]
            raise RegistryError(f"{self.name}: PUT {repository}:{reference} answered {status}: {detail}")
        return headers.get("docker-content-digest", manifest.digest)

    def get_blob_json(self, repository: str, digest: str) -> dict[str, Any]:
        status, _, body = self._request(
            "GET", f"/v2/{repository}/blobs/{digest}", f"repository:{repository}:pull"
        )
        if status != 200:
            raise RegistryError(f"{self.name}: blob {repository}@{digest} answered {status}")
        parsed: dict[str, Any] = json.loads(body)
        return parsed

    def tag(self, repository: str, digest: str, tags: list[str], manifest: Manifest | None = None) -> None:
        """Point `tags` at `digest`: the same manifest bytes under new names; no blob moves."""
        manifest = manifest or self.get_manifest(repository, digest)
        for tag in tags:
            stored = self.put_manifest(repository, tag, manifest)
            if stored != digest:
                raise RegistryError(f"{self.name}: {repository}:{tag} stored as {stored}, expected {digest}")

    def tags(self, repository: str) -> list[str]:
        """Every tag of a repository (empty when the repository does not exist)."""
        status, _, body = self._request("GET", f"/v2/{repository}/tags/list", f"repository:{repository}:pull")
        if status == 404:
            return []
        if status != 200:
            raise RegistryError(f"{self.name}: tag list of {repository} answered {status}")
        return sorted(json.loads(body).get("tags") or [])

    def platform_digests(self, repository: str, index_digest: str) -> dict[str, str]:
        """platform ("linux/arm64", "linux/arm/v7") -> manifest digest, attestation manifests left out."""
        manifest = self.get_manifest(repository, index_digest)
        if not manifest.is_index:
            config = self.get_blob_json(repository, manifest.document["config"]["digest"])
            return {_platform_name(config): index_digest}
        result: dict[str, str] = {}
        for entry in manifest.document.get("manifests", []):
            platform = entry.get("platform") or {}
            if platform.get("os") in (None, "unknown"):
                continue  # buildx's attestation manifests
            result[_platform_name(platform)] = entry["digest"]
        return result


def _platform_name(platform: dict[str, Any]) -> str:
    name = f"{platform.get('os')}/{platform.get('architecture')}"
    return f"{name}/{platform['variant']}" if platform.get("variant") else name


def _basic_header(credentials: Credentials) -> str:
    token = base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()
    return f"Basic {token}"


def _lower(items: list[tuple[str, str]]) -> dict[str, str]:
    return {key.lower(): value for key, value in items}


def _split_challenge(text: str) -> list[str]:
    parts, current, quoted = [], "", False
    for char in text.strip():
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    if current.strip():
        parts.append(current.strip())
    return [part for part in parts if "=" in part]


class BlobUploader:
    """Pushes the content of an OCI layout to a repository by digest: blobs, then manifests, then the index.

    Nothing is tagged: a registry holding only these is a registry where no human tag moved.
    """

    def __init__(self, client: RegistryClient, repository: str) -> None:
        self.client = client
        self.repository = repository
        self.scope = f"repository:{repository}:pull,push"

    def blob_exists(self, digest: str) -> bool:
        status, _, _ = self.client._request("HEAD", f"/v2/{self.repository}/blobs/{digest}", self.scope)
        return status == 200

    def upload_blob(self, digest: str, path: Path) -> bool:
        """Upload one blob unless the registry has it; True when bytes were sent."""
        if self.blob_exists(digest):
            return False
        status, headers, body = self.client._request(
            "POST",
            f"/v2/{self.repository}/blobs/uploads/",
            self.scope,
            body=b"",
            headers={"Content-Length": "0"},
        )
        if status != 202 or "location" not in headers:
            raise RegistryError(
                f"{self.client.name}: starting an upload to {self.repository} answered {status}"
            )
        location = urllib.parse.urljoin(self.client.base + "/", headers["location"])
        separator = "&" if "?" in location else "?"
        path_and_query = (
            location[len(self.client.base) :] if location.startswith(self.client.base) else location
        )
        status, _, body = self.client._request(
            "PUT",
            f"{path_and_query}{separator}digest={urllib.parse.quote(digest)}",
            self.scope,
            body=path.read_bytes(),
            headers={"Content-Type": "application/octet-stream"},
        )
        if status not in (201, 202):
            raise RegistryError(
                f"{self.client.name}: upload of {digest[:19]} to {self.repository} answered {status}: "
                f"{body.decode(errors='replace')[:200]}"
            )
        return True

    def push_layout(self, layout: Path, index_digest: str) -> PushStats:
        """Push everything reachable from `index_digest` in an OCI layout folder: all blobs (a few at a
        time), then the manifests, children before the index that names them."""
        blobs = layout / "blobs" / "sha256"
        stats = PushStats()

        def blob_path(digest: str) -> Path:
            return blobs / digest.removeprefix("sha256:")

        manifests: list[tuple[str, str]] = []  # (digest, media type), children first
        layer_sizes: dict[str, int] = {}

        def walk(digest: str, media_type: str) -> None:
            document = json.loads(blob_path(digest).read_bytes())
            for child in document.get("manifests", []):
                walk(child["digest"], child["mediaType"])
            for descriptor in [document.get("config"), *document.get("layers", [])]:
                if descriptor is not None:
                    layer_sizes[descriptor["digest"]] = int(descriptor.get("size", 0))
            manifests.append((digest, media_type))

        index = json.loads((layout / "index.json").read_text())
        media_type = next(
            (m["mediaType"] for m in index.get("manifests", []) if m["digest"] == index_digest),
            INDEX_TYPES[0],
        )
        walk(index_digest, media_type)
        sent = {digest: self.upload_blob(digest, blob_path(digest)) for digest in layer_sizes}
        stats.blobs_sent = sum(sent.values())
        stats.blobs_present = len(sent) - stats.blobs_sent
        stats.bytes_sent = sum(size for digest, size in layer_sizes.items() if sent[digest])
        for digest, kind in manifests:
            manifest = Manifest(media_type=kind, body=blob_path(digest).read_bytes(), digest=digest)
            stored = self.client.put_manifest(self.repository, digest, manifest)
            if stored != digest:
                raise RegistryError(f"{self.client.name}: {self.repository}@{digest} stored as {stored}")
            stats.manifests += 1
        return stats


@dataclass
class PushStats:
    blobs_sent: int = 0
    blobs_present: int = 0
    bytes_sent: int = 0
    manifests: int = 0
