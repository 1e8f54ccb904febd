"""A small client of the registry HTTP API (distribution spec) for what needs no docker: pushing an OCI
layout by digest, reading digests, copying a manifest under a new tag (a manifest-only promotion), and
joining per-platform manifests into an index.

The transport is httpx: pooled keep-alive connections, proxies from the environment (HTTPS_PROXY,
NO_PROXY), TLS verified against the system store plus Docker's `/etc/docker/certs.d/HOST[:PORT]/*.crt` and
the registry's `ca_file`. Auth: Basic, or the Bearer token flow of Docker Hub and most registries (tokens
refreshed before `expires_in` runs out, and once more on a 401). Credentials only ever go to the origin they
belong to: never along a redirect or an upload `Location` on another host.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import ipaddress
import json
import logging
import os
import re
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from pipeline import __version__
from pipeline.config import DOCKER_HUB_HOSTS
from pipeline.errors import AuthError, RegistryError
from pipeline.registry import Credentials
from pipeline.retry import RetryPolicy, TransientError, with_retries

log = logging.getLogger(__name__)
# httpx logs every request at INFO: a push would drown the pipeline's own log lines.
logging.getLogger("httpx").setLevel(logging.WARNING)

INDEX_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)
MANIFEST_TYPES = (
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
ACCEPT = ", ".join(INDEX_TYPES + MANIFEST_TYPES)
_TIMEOUT = httpx.Timeout(60.0, connect=15.0)
_MAX_REDIRECTS = 5
_REDIRECTS = (301, 302, 303, 307, 308)
# Registries log it, and it tells our requests from the engine's pulls (the fault tests rely on that).
USER_AGENT = f"image-pipeline/{__version__}"
# Where Docker reads a registry's CA (and client certificate): the engine's pulls and our pushes trust the same.
DOCKER_CERTS_D = Path("/etc/docker/certs.d")
_CHUNK = 1024 * 1024
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
# A token is renewed when less than this share of its life is left, so that no request carries a dying one.
_REFRESH_SHARE = 0.25
# The token spec's default when the service gives no expires_in.
_DEFAULT_TOKEN_LIFE = 60.0
_MAX_RETRY_AFTER = 60.0
DEFAULT_PARALLEL_UPLOADS = 4


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


# --- where and how to connect ------------------------------------------------------------------------------


def hostname(host: str) -> str:
    """The name part of `host[:port]` (`[::1]:5000` -> `::1`)."""
    return urllib.parse.urlsplit(f"//{host}").hostname or host


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback addresses; a name that merely starts with "127." is not one."""
    name = hostname(host)
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def certs_dir(host: str) -> Path:
    """Docker's CA folder for a registry: `/etc/docker/certs.d/HOST[:PORT]/`."""
    return DOCKER_CERTS_D / host


def ca_files(host: str, ca_file: Path | None = None) -> list[Path]:
    """CA files trusted for a registry on top of the system's: every `*.crt` of its certs.d folder (as
    Docker reads them), then the config's `ca_file`."""
    folder = certs_dir(host)
    found = sorted(folder.glob("*.crt")) if folder.is_dir() else []
    return found + ([ca_file] if ca_file is not None else [])


def engine_trust_gap(host: str, ca_file: Path | None) -> str | None:
    """Why the engine's pulls (the smoke step) may not trust what our client trusts, or None: Docker reads
    only its certs.d folder, never our config's `ca_file`."""
    if ca_file is None or is_loopback(host) or (certs_dir(host) / "ca.crt").is_file():
        return None
    return (
        f"ca_file {ca_file} is trusted by our pushes, but the engine's pulls in the smoke step read only "
        f"{certs_dir(host)}/ca.crt: copy it there"
    )


def _tls_context(host: str, ca_file: Path | None, insecure: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    for path in ca_files(host, ca_file):
        try:
            context.load_verify_locations(cafile=path)
        except (OSError, ssl.SSLError) as error:
            raise RegistryError(
                f"{path}: not a readable PEM CA certificate ({error}); fix or remove it"
            ) from None
    # Docker's client-certificate convention in the same folder (mutual TLS).
    cert, key = certs_dir(host) / "client.cert", certs_dir(host) / "client.key"
    if cert.is_file() and key.is_file():
        context.load_cert_chain(cert, key)
    return context


_PROXY_VARIABLES = (
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NO_PROXY",
    "no_proxy",
)
_clients: dict[tuple[Any, ...], httpx.Client] = {}
_clients_lock = threading.Lock()


def http_client(host: str, ca_file: Path | None = None, *, insecure: bool = False) -> httpx.Client:
    """One pooled httpx client per TLS trust and proxy setting, shared by every RegistryClient of the process
    (a release makes several per registry). Proxies come from the environment, as for docker and curl."""
    trusted = tuple((str(p), p.stat().st_mtime_ns) for p in ca_files(host, ca_file) if p.exists())
    key = (host, insecure, trusted, ca_file, tuple(os.environ.get(name) for name in _PROXY_VARIABLES))
    with _clients_lock:
        if key not in _clients:
            _clients[key] = httpx.Client(
                verify=_tls_context(host, ca_file, insecure),
                trust_env=True,
                timeout=_TIMEOUT,
                limits=httpx.Limits(max_connections=32, max_keepalive_connections=16),
                headers={"User-Agent": USER_AGENT},
                follow_redirects=False,
            )
        return _clients[key]


def _origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, parts.netloc


def _is_cert_error(error: BaseException) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _is_tls_error(error: BaseException) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def registry_detail(response: httpx.Response) -> str:
    """What the registry said, from its error body (`{"errors": [{code, message, detail}]}`) or its text:
    "no space left on device" must reach the user, not only the status."""
    text = response.text.strip() if response.content else ""
    try:
        errors = json.loads(text).get("errors") or []
    except (ValueError, AttributeError):
        return " ".join(text.split())[:200]
    parts = []
    for error in errors[:2]:
        detail = error.get("detail")
        detail_text = f" ({_detail_text(detail)})" if detail else ""
        parts.append(f"{error.get('code', '')}: {error.get('message', '')}{detail_text}".strip(": "))
    return "; ".join(parts)[:300]


def _detail_text(detail: Any) -> str:
    """Registry 2.8 wraps storage failures as {"DriverName", "Enclosed": {"Op", "Path", "Err": errno}}: errno
    28 must read "No space left on device", the words the user acts on, and come first (messages are cut)."""
    if isinstance(detail, dict):
        if isinstance(detail.get("Enclosed"), dict):
            return _detail_text(detail["Enclosed"])
        err = detail.get("Err")
        if isinstance(err, int | str):
            reason = os.strerror(err) if isinstance(err, int) else err
            where = " ".join(str(detail[key]) for key in ("Op", "Path") if detail.get(key))
            return f"{reason}: {where}" if where else reason
    if isinstance(detail, str):
        return detail
    return json.dumps(detail)[:120]


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)


def _parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """`Bearer realm="...",service="...",scope="..."` -> ("bearer", {...})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {key.lower(): value for key, value in re.findall(r'(\w+)="([^"]*)"', rest)}
    return scheme.lower(), params


@dataclass(frozen=True)
class _Token:
    value: str
    obtained: float
    lifetime: float

    def left(self, now: float) -> float:
        return self.obtained + self.lifetime - now

    def needs_refresh(self, now: float) -> bool:
        return self.left(now) < self.lifetime * _REFRESH_SHARE


@dataclass
class _AuthState:
    """What a registry asked for (its challenge) and the tokens it gave, per scope."""

    challenge: tuple[str, dict[str, str]] | None = None
    tokens: dict[str, _Token] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


_auth_states: dict[tuple[str, str, str], _AuthState] = {}


def _auth_state(host: str, credentials: Credentials | None) -> _AuthState:
    """Shared by every client of one registry and account in the process: a release makes several clients
    per registry, and a token outlives each of them (so it is reused, and refreshed when it runs out)."""
    identity = ("", "")
    if credentials is not None:
        identity = (credentials.username, hashlib.sha256(credentials.password.encode()).hexdigest())
    with _clients_lock:
        return _auth_states.setdefault((host, *identity), _AuthState())


# --- the client ----------------------------------------------------------------------------------------------


Body = bytes | Callable[[], Iterator[bytes]]


class RegistryClient:
    def __init__(
        self,
        host: str,
        credentials: Credentials | None = None,
        *,
        insecure: bool = False,
        name: str | None = None,
        credential_variables: tuple[str, str] | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self.credential_variables = credential_variables
        self.host = host
        self.name = name or host
        self.credentials = credentials
        self.insecure = insecure
        self.ca_file = ca_file
        self._auth = _auth_state(self.api_host, credentials)
        self._http: httpx.Client | None = None
        self._base: str | None = None
        self._base_lock = threading.Lock()

    # -- transport -------------------------------------------------------------------------------------------

    @property
    def http(self) -> httpx.Client:
        # Looked up once per client: the lookup reads the certs.d folder.
        if self._http is None:
            self._http = http_client(self.api_host, self.ca_file, insecure=self.insecure)
        return self._http

    @property
    def api_host(self) -> str:
        return "registry-1.docker.io" if self.host in DOCKER_HUB_HOSTS else self.host

    @property
    def base(self) -> str:
        """Scheme and host of the API: HTTPS, except plain HTTP to loopback (as Docker does) and to an
        `insecure` registry that does not speak TLS (Docker's meaning of insecure)."""
        with self._base_lock:
            if self._base is None:
                self._base = self._choose_base()
            return self._base

    def _choose_base(self) -> str:
        if is_loopback(self.api_host):
            return f"http://{self.api_host}"
        if not self.insecure:
            return f"https://{self.api_host}"
        log.warning("registry %s (%s) is insecure: its TLS certificate is not verified", self.name, self.host)
        try:
            self.http.get(f"https://{self.api_host}/v2/")
        except httpx.ConnectError as error:
            if not _is_tls_error(error):
                return f"https://{self.api_host}"  # unreachable: the request itself will say so
            log.warning("registry %s (%s) does not speak TLS: using plain HTTP", self.name, self.host)
            return f"http://{self.api_host}"
        except httpx.HTTPError:
            pass
        return f"https://{self.api_host}"

    def _url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self.base + path

    def _exchange(
        self, method: str, url: str, headers: dict[str, str], body: Body | None, authorization: str | None
    ) -> httpx.Response:
        """One request, following redirects for reads; Authorization goes only to the registry's own origin."""
        own = _origin(self.base)
        for _ in range(_MAX_REDIRECTS + 1):
            request_headers = dict(headers)
            if authorization is not None and _origin(url) == own:
                request_headers["Authorization"] = authorization
            content = body() if callable(body) else body
            response = self._send_once(method, url, request_headers, content)
            if response.status_code not in _REDIRECTS or method not in ("GET", "HEAD"):
                return response
            url = urllib.parse.urljoin(url, response.headers.get("location", ""))
            if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
                raise RegistryError(f"registry {self.name}: refusing a redirect to {url!r}")
        raise RegistryError(f"registry {self.name}: {method} {url}: more than {_MAX_REDIRECTS} redirects")

    def _send_once(
        self, method: str, url: str, headers: dict[str, str], content: bytes | Iterator[bytes] | None
    ) -> httpx.Response:
        try:
            return self.http.request(method, url, headers=headers, content=content)
        except httpx.ProxyError as error:
            raise RegistryError(
                f"registry {self.name} ({self.host}): the proxy refused {method} {hostname(url)} ({error}); "
                "check HTTPS_PROXY/HTTP_PROXY, or list the registry in NO_PROXY"
            ) from None
        except httpx.ConnectError as error:
            if _is_cert_error(error):
                raise RegistryError(self._certificate_message(error)) from None
            if _is_tls_error(error):
                raise RegistryError(
                    f"registry {self.name} ({self.host}): TLS failed ({error}); if it speaks plain HTTP, set "
                    "insecure = true in its config entry"
                ) from None
            raise TransientError(
                f"registry {self.name}: {method} {url}: {error or type(error).__name__}"
            ) from error
        except (httpx.TransportError, httpx.StreamError) as error:
            raise TransientError(
                f"registry {self.name}: {method} {url}: {error or type(error).__name__}"
            ) from error

    def _certificate_message(self, error: BaseException) -> str:
        reason = re.sub(r"\s*\(_ssl\.c:\d+\)", "", str(error)).split("certificate verify failed:")[-1]
        reason = reason.strip(" )]") or "not trusted"
        where = f"{certs_dir(self.api_host)}/ca.crt"
        extra = f" (ca_file {self.ca_file} does not vouch for it)" if self.ca_file else ""
        return (
            f"registry {self.name} ({self.host}): TLS certificate not trusted ({reason}){extra}; put the CA "
            f"that signed it in {where} or set ca_file in its config entry"
        )

    # -- requests with auth and retries -----------------------------------------------------------------------

    def _request(
        self,
        method: str,
        path: str,
        scope: str,
        *,
        body: Body | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """A request with auth; 5xx, 429 and dropped connections retried with backoff, logged, bounded."""

        def attempt() -> httpx.Response:
            response = self._authorized(method, path, scope, body, headers or {})
            if response.status_code == 429:
                wait = _retry_after(response)
                said = f"Retry-After {wait:g}s" if wait is not None else "no Retry-After"
                # The retry's log line says it, with the wait honoured.
                raise TransientError(
                    f"registry {self.name}: {method} {path} answered 429 (rate limited; {said})",
                    retry_after=wait,
                )
            if response.status_code >= 500:
                raise TransientError(
                    f"registry {self.name}: {method} {path} answered {response.status_code}: "
                    f"{registry_detail(response) or 'no detail'}"
                )
            return response

        policy = RetryPolicy.from_env()
        try:
            return with_retries(attempt, f"{method} {self.host}{path}", policy=policy)
        except TransientError as error:
            raise RegistryError(f"{error} (gave up after {policy.attempts} attempts)") from None

    def _authorized(
        self, method: str, path: str, scope: str, body: Body | None, headers: dict[str, str]
    ) -> httpx.Response:
        url = self._url(path)
        sent_with = self._authorization(scope)
        response = self._exchange(method, url, headers, body, sent_with)
        # A 401 teaches the auth scheme (when nothing was sent yet), then earns one fresh token.
        renewals = 1 if sent_with is not None else 2
        while response.status_code == 401 and renewals:
            if not self._renew(response.headers.get("www-authenticate", ""), scope, sent_with):
                break
            renewals -= 1
            sent_with = self._authorization(scope)
            response = self._exchange(method, url, headers, body, sent_with)
        if response.status_code == 401:
            raise AuthError(self._auth_message(401, response.headers.get("www-authenticate", ""), scope))
        return self._checked_forbidden(response, scope)

    def _checked_forbidden(self, response: httpx.Response, scope: str) -> httpx.Response:
        if response.status_code == 403:
            raise AuthError(self._auth_message(403, registry_detail(response), scope))
        return response

    def _authorization(self, scope: str) -> str | None:
        if self._auth.challenge is None:
            return None
        kind, _ = self._auth.challenge
        if kind == "basic":
            return _basic_header(self.credentials) if self.credentials is not None else None
        return f"Bearer {self._token(scope).value}"

    def _renew(self, challenge: str, scope: str, sent_with: str | None) -> bool:
        """After a 401: learn the auth scheme, or renew the token once. False when nothing new can be tried."""
        kind, params = _parse_challenge(challenge)
        if kind not in ("basic", "bearer") or (kind == "basic" and self.credentials is None):
            return False
        with self._auth.lock:
            if self._auth.challenge is None or self._auth.challenge[0] != kind:
                self._auth.challenge = (kind, params)
                return True
            if kind == "basic":
                return sent_with is None  # a thread that raced the one that learnt the scheme
            if params.get("error") == "insufficient_scope":
                return False
            current = self._auth.tokens.get(scope)
            if current is None or f"Bearer {current.value}" != sent_with:
                return True  # another thread learnt the scheme or renewed the token meanwhile
            log.info(
                "registry %s refused the token for %s (401): fetching a new one once",
                self.name,
                scope or "/v2/",
            )
            self._auth.tokens[scope] = self._fetch_token(scope)
            return True

    def _token(self, scope: str) -> _Token:
        with self._auth.lock:
            now = time.monotonic()
            token = self._auth.tokens.get(scope)
            if token is not None and not token.needs_refresh(now):
                return token
            if token is not None:
                left = token.left(now)
                when = f"expires in {left:.1f}s" if left > 0 else f"expired {-left:.1f}s ago"
                log.info(
                    "registry %s: token for %s %s (lifetime %.0fs): refreshing",
                    self.name,
                    scope or "/v2/",
                    when,
                    token.lifetime,
                )
            self._auth.tokens[scope] = self._fetch_token(scope)
            return self._auth.tokens[scope]

    def _fetch_token(self, scope: str) -> _Token:
        assert self._auth.challenge is not None
        realm = self._auth.challenge[1].get("realm", "")
        self._check_realm(realm)
        query = {"service": self._auth.challenge[1].get("service", "")}
        if scope:
            query["scope"] = scope
        authorization = _basic_header(self.credentials) if self.credentials is not None else None
        started = time.monotonic()
        response = self._token_exchange(f"{realm}?{urllib.parse.urlencode(query)}", authorization)
        if response.status_code in (401, 403):
            raise AuthError(self._auth_message(response.status_code, "token service", scope))
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientError(
                f"registry {self.name}: token service answered {response.status_code}",
                retry_after=_retry_after(response),
            )
        if response.status_code != 200:
            raise RegistryError(
                f"registry {self.name}: token service {realm} answered {response.status_code}: "
                f"{registry_detail(response)}"
            )
        try:
            payload = response.json()
            value = str(payload.get("token") or payload["access_token"])
            lifetime = float(payload.get("expires_in") or _DEFAULT_TOKEN_LIFE)
        except (ValueError, KeyError, TypeError, AttributeError):
            raise RegistryError(f"registry {self.name}: token service {realm} gave no token") from None
        return _Token(value=value, obtained=started, lifetime=lifetime)

    def _token_exchange(self, url: str, authorization: str | None) -> httpx.Response:
        """GET the token service with Basic credentials; its redirects are followed, credentials only to the
        realm's own origin."""
        own = _origin(url)
        for _ in range(_MAX_REDIRECTS + 1):
            headers = {"Authorization": authorization} if authorization and _origin(url) == own else {}
            response = self._send_once("GET", url, headers, None)
            if response.status_code not in _REDIRECTS:
                return response
            url = urllib.parse.urljoin(url, response.headers.get("location", ""))
        raise RegistryError(f"registry {self.name}: token service: more than {_MAX_REDIRECTS} redirects")

    def _check_realm(self, realm: str) -> None:
        parts = urllib.parse.urlsplit(realm)
        if parts.scheme == "https":
            return
        same_plain_host = self.base.startswith("http://") and parts.hostname == hostname(self.api_host)
        if parts.scheme == "http" and (is_loopback(parts.netloc) or same_plain_host):
            return
        raise RegistryError(
            f"registry {self.name} ({self.host}): token realm {realm!r} is not HTTPS; refusing to send "
            "credentials there"
        )

    def _auth_message(self, status: int, detail: str, scope: str) -> str:
        what = f" for {scope}" if scope else ""
        if self.credentials is not None and ("insufficient_scope" in detail or status == 403):
            return (
                f"registry {self.name} ({self.host}) denied access{what} ({status}); the account may not "
                "write there (on Docker Hub: push only under your own namespace)"
            )
        if self.credentials is None:
            return (
                f"registry {self.name} ({self.host}) wants credentials{what} ({status}); set "
                "username_env/password_env in its config entry"
            )
        where = (
            f"{self.credential_variables[0]} and {self.credential_variables[1]}"
            if self.credential_variables
            else "the environment variables its config names"
        )
        return (
            f"registry {self.name} ({self.host}) refused the credentials{what} ({status}, even with a fresh "
            f"token where it uses tokens); check {where}"
        )

    # -- operations ----------------------------------------------------------------------------------------

    def ping(self) -> None:
        """Reach the registry and check the credentials (a 401 here means they are wrong) before any work."""
        # With tokens, the token service judges the credentials here (the token for /v2/ is asked with them).
        response = self._request("GET", "/v2/", "")
        if response.status_code != 200:
            raise RegistryError(
                f"registry {self.name} ({self.host}) answered {response.status_code} to /v2/: "
                f"{registry_detail(response)}"
            )

    def manifest_digest(self, repository: str, reference: str) -> str | None:
        """The digest a tag or digest resolves to, or None when it is not there."""
        response = self._request(
            "HEAD",
            f"/v2/{repository}/manifests/{_reference(reference)}",
            f"repository:{repository}:pull",
            headers={"Accept": ACCEPT},
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise RegistryError(
                f"registry {self.name}: manifest {repository}:{reference} answered {response.status_code}"
            )
        digest: str | None = response.headers.get("docker-content-digest")
        if digest is None:  # HEAD without the header: fetch the body and hash it
            return self.get_manifest(repository, reference).digest
        return digest

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        response = self._request(
            "GET",
            f"/v2/{repository}/manifests/{_reference(reference)}",
            f"repository:{repository}:pull",
            headers={"Accept": ACCEPT},
        )
        if response.status_code == 404:
            raise RegistryError(f"registry {self.name}: {self.host}/{repository}@{reference} does not exist")
        if response.status_code != 200:
            raise RegistryError(
                f"registry {self.name}: manifest {repository}:{reference} answered {response.status_code}: "
                f"{registry_detail(response)}"
            )
        body = response.content
        media_type = response.headers.get("content-type", "").split(";")[0] or json.loads(body).get(
            "mediaType", ""
        )
        return Manifest(media_type=media_type, body=body, digest="sha256:" + hashlib.sha256(body).hexdigest())

    def put_manifest(self, repository: str, reference: str, manifest: Manifest) -> str:
        response = self._request(
            "PUT",
            f"/v2/{repository}/manifests/{_reference(reference)}",
            f"repository:{repository}:pull,push",
            body=manifest.body,
            headers={"Content-Type": manifest.media_type},
        )
        if response.status_code not in (200, 201):
            raise RegistryError(
                f"registry {self.name}: PUT {repository}:{reference} answered {response.status_code}: "
                f"{registry_detail(response)}"
            )
        stored: str = response.headers.get("docker-content-digest", manifest.digest)
        return stored

    def get_blob(self, repository: str, digest: str) -> bytes:
        """A blob's bytes, held in memory: for configs and other small blobs, never for layers."""
        response = self._request(
            "GET", f"/v2/{repository}/blobs/{_reference(digest)}", f"repository:{repository}:pull"
        )
        if response.status_code != 200:
            raise RegistryError(
                f"registry {self.name}: blob {repository}@{digest} answered {response.status_code}"
            )
        return response.content

    def get_blob_json(self, repository: str, digest: str) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.get_blob(repository, digest))
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
        response = self._request("GET", f"/v2/{repository}/tags/list", f"repository:{repository}:pull")
        if response.status_code == 404:
            return []
        if response.status_code != 200:
            raise RegistryError(
                f"registry {self.name}: tag list of {repository} answered {response.status_code}"
            )
        return sorted(response.json().get("tags") or [])

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


def _reference(reference: str) -> str:
    """A tag or digest for a URL path; a malformed digest fails here, not as five retried server errors."""
    if ":" in reference and not _DIGEST.match(reference):
        raise RegistryError(f"{reference!r} is not a digest (sha256: and 64 lowercase hex digits)")
    return reference


def _platform_name(platform: dict[str, Any]) -> str:
    name = f"{platform.get('os')}/{platform.get('architecture')}"
    return f"{name}/{platform['variant']}" if platform.get("variant") else name


def _basic_header(credentials: Credentials) -> str:
    token = base64.b64encode(f"{credentials.username}:{credentials.password}".encode()).decode()
    return f"Basic {token}"


def _error_codes(response: httpx.Response) -> set[str]:
    try:
        return {str(error.get("code")) for error in response.json().get("errors") or []}
    except (ValueError, AttributeError):
        return set()


def _session_lost(response: httpx.Response) -> bool:
    """The registry no longer knows the upload (404), or a retried PUT landed on a half-written one."""
    lost = {"BLOB_UPLOAD_UNKNOWN", "BLOB_UPLOAD_INVALID", "DIGEST_INVALID", "SIZE_INVALID"}
    return response.status_code == 404 or (
        response.status_code == 400 and bool(_error_codes(response) & lost)
    )


def _read_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            yield chunk


def parallel_uploads() -> int:
    """How many blobs one push sends at once (PIPELINE_PARALLEL_UPLOADS, default 4)."""
    value = os.environ.get("PIPELINE_PARALLEL_UPLOADS", "")
    return max(1, int(value)) if value.isdigit() else DEFAULT_PARALLEL_UPLOADS


class BlobUploader:
    """Pushes the content of an OCI layout to a repository by digest: blobs, then manifests, then the index.

    Nothing is tagged: a registry holding only these is a registry where no human tag moved.
    """

    def __init__(self, client: RegistryClient, repository: str) -> None:
        self.client = client
        self.repository = repository
        self.scope = f"repository:{repository}:pull,push"

    def blob_exists(self, digest: str) -> bool:
        response = self.client._request(
            "HEAD", f"/v2/{self.repository}/blobs/{_reference(digest)}", self.scope
        )
        return response.status_code == 200

    def upload_blob(self, digest: str, path: Path) -> bool:
        """Upload one blob unless the registry has it; True when bytes were sent.

        Each request is retried in place (a 5xx, a dropped connection); when the registry has lost the upload
        session itself (restarted: its `_state` no longer decodes, 404), the upload starts over in a new one.
        """
        if self.blob_exists(digest):
            return False
        policy = RetryPolicy.from_env()
        what = f"upload of {digest[:19]} to {self.client.name}/{self.repository} in a new session"
        try:
            with_retries(lambda: self._upload_once(digest, path), what, policy=policy)
        except TransientError as error:
            raise RegistryError(f"{error} (gave up after {policy.attempts} sessions)") from None
        return True

    def _upload_once(self, digest: str, path: Path) -> None:
        started = self.client._request("POST", f"/v2/{self.repository}/blobs/uploads/", self.scope, body=b"")
        if started.status_code != 202 or "location" not in started.headers:
            raise RegistryError(
                f"registry {self.client.name}: starting an upload to {self.repository} answered "
                f"{started.status_code}: {registry_detail(started)}"
            )
        location = urllib.parse.urljoin(str(started.url), started.headers["location"])
        separator = "&" if "?" in location else "?"
        finished = self.client._request(
            "PUT",
            f"{location}{separator}digest={urllib.parse.quote(digest)}",
            self.scope,
            body=lambda: _read_chunks(path),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(path.stat().st_size)},
        )
        if _session_lost(finished):
            raise TransientError(
                f"registry {self.client.name}: the upload session of {digest[:19]} is lost "
                f"({finished.status_code} {registry_detail(finished)})"
            )
        if finished.status_code not in (201, 202):
            raise RegistryError(
                f"registry {self.client.name}: upload of {digest[:19]} to {self.repository} answered "
                f"{finished.status_code}: {registry_detail(finished)}"
            )

    def push_layout(self, layout: Path, index_digest: str) -> PushStats:
        """Push everything reachable from `index_digest` in an OCI layout folder: all blobs (a few at a
        time, the largest first, each streamed from disk), then the manifests, children before the index."""
        blobs = layout / "blobs" / "sha256"
        stats = PushStats()

        def blob_path(digest: str) -> Path:
            return blobs / _reference(digest).removeprefix("sha256:")

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
        order = sorted(layer_sizes, key=lambda digest: -layer_sizes[digest])
        # One request alone first: a registry that is down, or refuses the credentials, fails here once (with
        # its retries, or none for a 401), not once per parallel upload.
        present = {order[0]} if order and self.blob_exists(order[0]) else set()
        sent = self._upload_in_parallel([d for d in order if d not in present], blob_path)
        sent |= dict.fromkeys(present, False)
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

    def _upload_in_parallel(self, digests: list[str], blob_path: Callable[[str], Path]) -> dict[str, bool]:
        """Upload `digests` a bounded number at a time; the first failure cancels what has not started."""
        with ThreadPoolExecutor(max_workers=parallel_uploads(), thread_name_prefix="upload") as pool:
            futures = {pool.submit(self.upload_blob, d, blob_path(d)): d for d in digests}
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            for future in pending:
                future.cancel()
            for future in done:
                future.result()  # the first failure is raised here, after the rest were cancelled
            return {futures[future]: future.result() for future in futures}


@dataclass
class PushStats:
    blobs_sent: int = 0
    blobs_present: int = 0
    bytes_sent: int = 0
    manifests: int = 0
