"""Publish: credentials and logins, pushing one build by digest to every registry, checking that every
registry holds the same index digest, and promoting tested digests to their human tags (manifest-only).

Nothing here tags an untested digest: `push_everywhere` only writes by digest, and `promote` is called by
the release gate after the smoke tests passed.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from pipeline import dockerconfig
from pipeline.build import BuiltImage
from pipeline.config import DOCKER_HUB_HOSTS, RegistryConfig
from pipeline.distribution import (
    INDEX_TYPES,
    BlobUploader,
    Manifest,
    PushStats,
    RegistryClient,
    engine_trust_gap,
)
from pipeline.dockerconfig import add_login
from pipeline.errors import AuthError, RegistryError
from pipeline.registry import Credentials

log = logging.getLogger(__name__)
# Kept importable from here: callers entered it through publish before it had a module of its own.
isolated_docker_config = dockerconfig.isolated_docker_config


def credentials_for(registry: RegistryConfig, environ: Mapping[str, str] | None = None) -> Credentials | None:
    """The registry's credentials from the environment variables its config names (never from the file)."""
    if registry.username_env is None or registry.password_env is None:
        return None
    environ = os.environ if environ is None else environ
    missing = [name for name in (registry.username_env, registry.password_env) if not environ.get(name)]
    if missing:
        raise AuthError(
            f"registry {registry.name}: environment variable {missing[0]} is not set; export it (in GitHub "
            "Actions: from a secret) or remove username_env/password_env for an open registry"
        )
    return Credentials(username=environ[registry.username_env], password=environ[registry.password_env])


def registry_client(registry: RegistryConfig, environ: Mapping[str, str] | None = None) -> RegistryClient:
    variables = (
        (registry.username_env, registry.password_env)
        if registry.username_env is not None and registry.password_env is not None
        else None
    )
    return RegistryClient(
        registry.host,
        credentials_for(registry, environ),
        insecure=registry.insecure,
        name=registry.name,
        credential_variables=variables,
        ca_file=registry.ca_file,
    )


def docker_host(registry: RegistryConfig) -> str:
    """The server name `docker login` wants (Docker Hub's is the default one)."""
    return "docker.io" if registry.host in DOCKER_HUB_HOSTS else registry.host


def check_registries(registries: Sequence[RegistryConfig], environ: Mapping[str, str] | None = None) -> None:
    """Every registry answers and takes its credentials, before a build that would be wasted otherwise."""
    for registry in registries:
        registry_client(registry, environ).ping()
        log.info("registry %s (%s) answers", registry.name, registry.host)
        gap = engine_trust_gap(registry.host, registry.ca_file)
        if gap is not None:
            log.warning("registry %s: %s", registry.name, gap)


def login_all(registries: Sequence[RegistryConfig], environ: Mapping[str, str] | None = None) -> None:
    """Log the docker CLI and buildx in to every registry with credentials, inside isolated_docker_config().

    The credentials are checked against the registry first (a refusal is one AuthError line); then the
    throwaway config routes the registry to our credential helper, which answers from the environment:
    no `docker login`, so no secret is ever written to disk.
    """
    for registry in registries:
        credentials = credentials_for(registry, environ)
        if credentials is None or registry.username_env is None or registry.password_env is None:
            continue
        registry_client(registry, environ).ping()
        add_login(
            docker_host(registry), (registry.username_env, registry.password_env), environ or os.environ
        )
        log.info("logged in to %s (%s) as %s", registry.name, registry.host, credentials.username)


@dataclass
class RegistryPush:
    registry: str
    repository: str
    digest: str
    stats: PushStats
    seconds: float

    @property
    def reference(self) -> str:
        return f"{self.repository}@{self.digest}"


@dataclass
class PublishedImage:
    image: str
    index_digest: str
    platform_digests: dict[str, str] = field(default_factory=dict)
    pushes: list[RegistryPush] = field(default_factory=list)


def push_everywhere(
    built: BuiltImage, registries: Sequence[RegistryConfig], environ: Mapping[str, str] | None = None
) -> PublishedImage:
    """Push one build by digest to every registry, in parallel, then check they all hold the same index."""
    if built.layout is None:
        raise ValueError("push_everywhere needs a build exported as an OCI layout")
    layout = built.layout

    def push_one(registry: RegistryConfig) -> RegistryPush:
        started = time.monotonic()
        client = registry_client(registry, environ)
        repository = _repository_path(registry, built.image)
        log.info("pushing %s by digest to %s (%s)", built.image, registry.name, registry.host)
        stats = BlobUploader(client, repository).push_layout(layout, built.index_digest)
        seconds = time.monotonic() - started
        log.info(
            "pushed %s to %s: %d blobs sent, %d already there, %d manifests, %.1fs",
            built.image,
            registry.name,
            stats.blobs_sent,
            stats.blobs_present,
            stats.manifests,
            seconds,
        )
        return RegistryPush(
            registry.name, registry.repository(built.image), built.index_digest, stats, seconds
        )

    with ThreadPoolExecutor(max_workers=max(1, len(registries))) as pool:
        pushes = list(pool.map(push_one, registries))
    published = PublishedImage(image=built.image, index_digest=built.index_digest, pushes=pushes)
    return _verified(published, registries, environ)


def adopt_pushed(
    image: str, digest: str, registries: Sequence[RegistryConfig], environ: Mapping[str, str] | None = None
) -> PublishedImage:
    """An index pushed earlier (by a fan-out merge): check every registry holds it, and describe it."""
    published = PublishedImage(image=image, index_digest=digest)
    for registry in registries:
        published.pushes.append(
            RegistryPush(registry.name, registry.repository(image), digest, PushStats(), 0.0)
        )
    return _verified(published, registries, environ)


def _verified(
    published: PublishedImage, registries: Sequence[RegistryConfig], environ: Mapping[str, str] | None
) -> PublishedImage:
    """Check every registry holds the one index, then record its per-platform digests."""
    verify_same_digest(published, registries, environ)
    first = registries[0]
    published.platform_digests = registry_client(first, environ).platform_digests(
        _repository_path(first, published.image), published.index_digest
    )
    return published


def verify_same_digest(
    published: PublishedImage, registries: Sequence[RegistryConfig], environ: Mapping[str, str] | None = None
) -> None:
    """Every registry must resolve the image to the one index digest that was built."""
    for registry in registries:
        found = registry_client(registry, environ).manifest_digest(
            _repository_path(registry, published.image), published.index_digest
        )
        if found != published.index_digest:
            raise RegistryError(
                f"registry {registry.name} holds {published.image} as {found}, not {published.index_digest}; "
                "nothing was promoted"
            )


def _repository_path(registry: RegistryConfig, image: str) -> str:
    """The repository as the registry API names it (no host; Docker Hub's official images under library/)."""
    path = f"{registry.namespace}/{image}" if registry.namespace else image
    if docker_host(registry) == "docker.io" and "/" not in path:
        path = f"library/{path}"
    return path


@dataclass
class Promotion:
    registry: str
    repository: str
    digest: str
    tags: list[str]


def promote(
    image: str,
    digest: str,
    tags: Sequence[str],
    registries: Sequence[RegistryConfig],
    environ: Mapping[str, str] | None = None,
) -> list[Promotion]:
    """Point the human tags at the tested digest in every registry: manifest copies, no blob moves.

    Every registry is read first, so that one that is down fails the run before any tag moves anywhere.
    """
    manifests = []
    for registry in registries:
        client = registry_client(registry, environ)
        repository = _repository_path(registry, image)
        manifest = client.get_manifest(repository, digest)
        if manifest.digest != digest:
            raise RegistryError(f"registry {registry.name} returned {manifest.digest} for {image}@{digest}")
        manifests.append((registry, client, repository, manifest))
    done: list[Promotion] = []
    for registry, client, repository, manifest in manifests:
        for tag in tags:
            stored = client.put_manifest(repository, tag, manifest)
            if stored != digest:
                raise RegistryError(
                    f"{registry.name}: {repository}:{tag} stored as {stored}, expected {digest}"
                )
        log.info("tagged %s in %s: %s", image, registry.name, ", ".join(tags))
        done.append(Promotion(registry.name, registry.repository(image), digest, list(tags)))
    return done


def merge_platform_digests(
    image: str,
    platform_digests: Sequence[str],
    registries: Sequence[RegistryConfig],
    environ: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> str:
    """Join single-platform manifests (pushed by digest) into one OCI index, pushed by digest everywhere."""
    first = registries[0]
    client = registry_client(first, environ)
    repository = _repository_path(first, image)
    descriptors: list[dict[str, object]] = []
    for digest in platform_digests:
        manifest = client.get_manifest(repository, digest)
        if manifest.is_index:
            raise RegistryError(
                f"{first.name}: {repository}@{digest} is already an index; give platform manifests"
            )
        config = client.get_blob_json(repository, manifest.document["config"]["digest"])
        platform = {"architecture": config["architecture"], "os": config["os"]}
        if config.get("variant"):
            platform["variant"] = config["variant"]
        descriptors.append(
            {
                "mediaType": manifest.media_type,
                "digest": digest,
                "size": len(manifest.body),
                "platform": platform,
            }
        )
    descriptors.sort(key=lambda d: json.dumps(d["platform"], sort_keys=True))
    document: dict[str, object] = {"schemaVersion": 2, "mediaType": INDEX_TYPES[0], "manifests": descriptors}
    if annotations:
        document["annotations"] = dict(annotations)
    body = json.dumps(document, separators=(",", ":")).encode()
    import hashlib

    index = Manifest(
        media_type=INDEX_TYPES[0], body=body, digest="sha256:" + hashlib.sha256(body).hexdigest()
    )
    for registry in registries:
        other = registry_client(registry, environ)
        other_repository = _repository_path(registry, image)
        for descriptor in descriptors:
            if other.manifest_digest(other_repository, str(descriptor["digest"])) is None:
                raise RegistryError(
                    f"{registry.name}: {other_repository}@{descriptor['digest']} is missing; push every platform "
                    "to every registry before merging"
                )
        other.put_manifest(other_repository, index.digest, index)
    return index.digest
