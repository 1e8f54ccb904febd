"""A small client of the registry HTTP API (distribution spec) for what needs no docker: reading digests,
copying a manifest under a new tag (a manifest-only promotion), and joining per-platform manifests into an
index. Auth: Basic, or the Bearer token flow that Docker Hub and most registries use.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
            status, response_headers, data = self._send(method, path, scope, body, headers or {})
            if status == 401 and self._authenticate(response_headers.get("www-authenticate", ""), scope):
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

    def _send(
        self, method: str, path: str, scope: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        url = path if path.startswith(("http://", "https://")) else self.base + path
        if not url.startswith(("http://", "https://")):
            raise RegistryError(f"{self.name}: refusing to follow a non-HTTP location {url!r}")
        request = urllib.request.Request(url, data=body, method=method, headers=dict(headers))  # noqa: S310
        if scope in self._tokens:
            request.add_header("Authorization", f"Bearer {self._tokens[scope]}")
        elif self._basic and self.credentials is not None:
            request.add_header("Authorization", _basic_header(self.credentials))
        try:
            with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:  # noqa: S310 - registry URL
                return int(response.status), _lower(response.headers.items()), response.read()
        except urllib.error.HTTPError as error:
            return error.code, _lower(error.headers.items()), error.read()
        except (urllib.error.URLError, ConnectionError, TimeoutError, http.client.HTTPException) as error:
            raise TransientError(
                f"{self.name}: {method} {self.base}{path}: {getattr(error, 'reason', error)}"
            ) from error

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
            token_request = urllib.request.Request(f"{params['realm']}?{urllib.parse.urlencode(query)}")  # noqa: S310
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
        status, headers, body = self._request(
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
        if digest is None and body:
            digest = "sha256:" + hashlib.sha256(body).hexdigest()
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

    def tag(self, repository: str, digest: str, tags: list[str]) -> None:
        """Point `tags` at `digest`: the same manifest bytes under new names; no blob moves."""
        manifest = self.get_manifest(repository, digest)
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
        """Push everything reachable from `index_digest` in an OCI layout folder, children before parents."""
        blobs = layout / "blobs" / "sha256"
        stats = PushStats()

        def blob_path(digest: str) -> Path:
            return blobs / digest.removeprefix("sha256:")

        def push_manifest(digest: str, media_type: str) -> None:
            document = json.loads(blob_path(digest).read_bytes())
            for child in document.get("manifests", []):
                push_manifest(child["digest"], child["mediaType"])
            for descriptor in [document.get("config"), *document.get("layers", [])]:
                if descriptor is None:
                    continue
                sent = self.upload_blob(descriptor["digest"], blob_path(descriptor["digest"]))
                stats.blobs_sent += int(sent)
                stats.blobs_present += int(not sent)
                stats.bytes_sent += descriptor.get("size", 0) if sent else 0
            manifest = Manifest(media_type=media_type, body=blob_path(digest).read_bytes(), digest=digest)
            stored = self.client.put_manifest(self.repository, digest, manifest)
            if stored != digest:
                raise RegistryError(f"{self.client.name}: {self.repository}@{digest} stored as {stored}")
            stats.manifests += 1

        index = json.loads((layout / "index.json").read_text())
        media_type = next(
            (m["mediaType"] for m in index.get("manifests", []) if m["digest"] == index_digest),
            INDEX_TYPES[0],
        )
        push_manifest(index_digest, media_type)
        return stats


@dataclass
class PushStats:
    blobs_sent: int = 0
    blobs_present: int = 0
    bytes_sent: int = 0
    manifests: int = 0
