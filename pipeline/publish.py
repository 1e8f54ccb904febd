"""Publish: credentials and logins, pushing one build by digest to every registry, checking that every
registry holds the same index digest, and promoting tested digests to their human tags (manifest-only).

Nothing here tags an untested digest: `push_everywhere` only writes by digest, and `promote` is called by
the release gate after the smoke tests passed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import semver

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
from pipeline.errors import AuthError, PipelineError, RegistryError
from pipeline.registry import Credentials
from pipeline.version import precedence_key

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
        repository = repository_path(registry, built.image)
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
        repository_path(first, published.image), published.index_digest
    )
    return published


def verify_same_digest(
    published: PublishedImage, registries: Sequence[RegistryConfig], environ: Mapping[str, str] | None = None
) -> None:
    """Every registry must resolve the image to the one index digest that was built."""
    for registry in registries:
        found = registry_client(registry, environ).manifest_digest(
            repository_path(registry, published.image), published.index_digest
        )
        if found is None:
            raise RegistryError(
                f"registry {registry.name} does not hold {published.image}@{published.index_digest}; push it "
                "there (a `pipeline build --push-by-digest` and `merge` to every registry) before releasing"
            )
        if found != published.index_digest:
            raise RegistryError(
                f"registry {registry.name} holds {published.image} as {found}, not {published.index_digest}; "
                "nothing was promoted"
            )


def repository_path(registry: RegistryConfig, image: str) -> str:
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
    """Point the human tags at the tested digest in every registry: all of them or none (see `promote_all`)."""
    journal = PromotionJournal()
    promote_all([PromotionRequest(image, digest, tuple(tags))], registries, journal, environ)
    return [
        Promotion(
            registry.name, registry.repository(image), digest, journal.moved.get((image, registry.name), [])
        )
        for registry in registries
    ]


# --- all-or-nothing promotion across registries --------------------------------------------------------------

VERSION_KEY = "org.opencontainers.image.version"
REVISION_KEY = "org.opencontainers.image.revision"


@dataclass(frozen=True)
class PromotionRequest:
    image: str
    digest: str
    tags: tuple[str, ...]
    floating: tuple[str, ...] = ()
    """Tags that must never move to a lower version than the one they point to now (`latest`, `X`, `X.Y`)."""
    version: str | None = None
    revision: str | None = None
    """The commit built: a tag already on another tested digest of it stays (a concurrent run won)."""


@dataclass
class _TagWrite:
    registry: RegistryConfig
    client: RegistryClient
    repository: str
    image: str
    tag: str
    manifest: Manifest
    previous: Manifest | None


@dataclass
class PromotionJournal:
    """What promotion did, kept up to date while it runs so that the report is true at every moment."""

    moved: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (image, registry) -> tags
    kept: list[str] = field(default_factory=list)  # floating tags left on a higher version, as sentences
    restored: list[str] = field(default_factory=list)  # what a rollback put back or removed
    unrestored: list[str] = field(default_factory=list)  # what a rollback could NOT undo: say it loudly
    on_change: Callable[[], None] | None = None

    def changed(self) -> None:
        if self.on_change is None:
            return
        try:
            self.on_change()
        except Exception as error:  # the listener (the report) must never stop or break a rollback
            log.error("could not record the promotion step: %s", error)


def promote_all(
    requests: Sequence[PromotionRequest],
    registries: Sequence[RegistryConfig],
    journal: PromotionJournal,
    environ: Mapping[str, str] | None = None,
) -> None:
    """Move every image's tags in every registry, or none.

    First every registry is read: the tested digest's manifest, and what each tag points to now (so a
    registry that is down fails the run before any tag moves, and a floating tag already on a higher version
    stays there). Then the tags are written. If any write fails, or the run is interrupted, every tag written
    is put back where it was (or removed when it is new), and the journal says exactly what moved, what was
    restored and what could not be.
    """
    writes = _planned_writes(requests, registries, journal, environ)
    done: list[_TagWrite] = []
    by_image = {request.image: request for request in requests}
    try:
        for write in writes:
            if _overtaken(write, by_image[write.image], journal):
                continue
            stored = write.client.put_manifest(write.repository, write.tag, write.manifest)
            if stored != write.manifest.digest:
                raise RegistryError(
                    f"{write.registry.name}: {write.repository}:{write.tag} stored as {stored}, "
                    f"expected {write.manifest.digest}"
                )
            done.append(write)
            journal.moved.setdefault((write.image, write.registry.name), []).append(write.tag)
            journal.changed()
    except BaseException:
        with _signals_deferred():
            _roll_back(done, journal)
        raise
    for (image, registry), tags in journal.moved.items():
        log.info("tagged %s in %s: %s", image, registry, ", ".join(tags))


def _planned_writes(
    requests: Sequence[PromotionRequest],
    registries: Sequence[RegistryConfig],
    journal: PromotionJournal,
    environ: Mapping[str, str] | None,
) -> list[_TagWrite]:
    writes: list[_TagWrite] = []
    for registry in registries:
        client = registry_client(registry, environ)
        for request in requests:
            repository = repository_path(registry, request.image)
            manifest = client.get_manifest(repository, request.digest)
            if manifest.digest != request.digest:
                raise RegistryError(
                    f"registry {registry.name} returned {manifest.digest} for {request.image}@{request.digest}"
                )
            for tag in request.tags:
                previous = _current(client, repository, tag)
                if previous is not None and previous.digest == request.digest:
                    journal.moved.setdefault((request.image, registry.name), []).append(tag)
                    continue  # already there (a rerun): nothing to write, nothing to undo
                note = _reason_to_keep(client, repository, tag, previous, request)
                if note is not None:
                    journal.kept.append(f"{registry.name}: {registry.repository(request.image)}:{tag} {note}")
                    log.warning("not moving %s", journal.kept[-1])
                    continue
                writes.append(_TagWrite(registry, client, repository, request.image, tag, manifest, previous))
    return writes


def _reason_to_keep(
    client: RegistryClient, repository: str, tag: str, previous: Manifest | None, request: PromotionRequest
) -> str | None:
    """Why `tag` must stay where it is, if it must: it is already on another tested digest of this very
    commit (two runs of one commit: the first to promote wins, both then agree), or it is a floating tag on
    a higher version than this release."""
    if previous is None:
        return None
    check_version = tag in request.floating and request.version is not None
    if request.revision is None and not check_version:
        return None
    metadata = image_metadata(client, repository, previous)
    if request.revision is not None and metadata.get(REVISION_KEY) == request.revision:
        return f"stays on {previous.digest}, a tested digest of the same commit"
    theirs = metadata.get(VERSION_KEY)
    if check_version and request.version is not None and _is_higher(theirs, request.version):
        return f"stays on {theirs} ({previous.digest[:19]}), higher than {request.version}"
    return None


def _overtaken(write: _TagWrite, request: PromotionRequest, journal: PromotionJournal) -> bool:
    """Look at the tag again just before writing it: a concurrent release may have moved it since the first
    read, higher or onto its own digest of this commit. The registry API has no compare-and-swap; this
    narrows the race to one request (a HEAD when nothing changed)."""
    digest = write.client.manifest_digest(write.repository, write.tag)
    if digest is None or digest == (write.previous.digest if write.previous is not None else None):
        return False
    now = write.client.get_manifest(write.repository, write.tag)
    note = _reason_to_keep(write.client, write.repository, write.tag, now, request)
    if note is None:
        return False
    journal.kept.append(f"{write.registry.name}: {write.registry.repository(write.image)}:{write.tag} {note}")
    log.warning("not moving %s", journal.kept[-1])
    return True


def _current(client: RegistryClient, repository: str, tag: str) -> Manifest | None:
    if client.manifest_digest(repository, tag) is None:
        return None
    return client.get_manifest(repository, tag)


def _is_higher(theirs: str | None, ours: str) -> bool:
    """True when the registry's version is above ours; an unreadable version never blocks a move."""
    if not theirs:
        return False
    try:
        return precedence_key(semver.Version.parse(theirs)) > precedence_key(semver.Version.parse(ours))
    except ValueError:
        log.debug("version %r or %r is not semver; not comparing", theirs, ours)
        return False


def image_metadata(client: RegistryClient, repository: str, manifest: Manifest) -> dict[str, str]:
    """The OCI annotations of an image (index first), completed by the labels of its first platform's
    config: where the version and revision of what a tag points to can be read."""
    document = manifest.document
    found: dict[str, str] = {str(k): str(v) for k, v in (document.get("annotations") or {}).items()}
    if manifest.is_index:
        children = [
            entry
            for entry in document.get("manifests", [])
            if (entry.get("platform") or {}).get("os") not in (None, "unknown")
        ]
        if not children or (VERSION_KEY in found and REVISION_KEY in found):
            return found
        manifest = client.get_manifest(repository, children[0]["digest"])
        document = manifest.document
        for key, value in (document.get("annotations") or {}).items():
            found.setdefault(str(key), str(value))
    config_digest = (document.get("config") or {}).get("digest")
    if config_digest and not (VERSION_KEY in found and REVISION_KEY in found):
        labels = (client.get_blob_json(repository, config_digest).get("config") or {}).get("Labels") or {}
        for key, value in labels.items():
            found.setdefault(str(key), str(value))
    return found


def find_tested_digest(
    image: str,
    tags: Sequence[str],
    revision: str,
    registries: Sequence[RegistryConfig],
    environ: Mapping[str, str] | None = None,
) -> tuple[str, str] | None:
    """(digest, "registry:tag") when a tag of this release already points, in the first registry, to an
    image built from `revision` that every registry holds: a rerun of the commit reuses that tested digest
    instead of tagging a new one (a rebuild differs, if only in its provenance attestation's times)."""
    if not registries:
        return None
    first = registries[0]
    client = registry_client(first, environ)
    repository = repository_path(first, image)
    for tag in tags:
        current = _current(client, repository, tag)
        if current is None or image_metadata(client, repository, current).get(REVISION_KEY) != revision:
            continue
        for registry in registries[1:]:
            if (
                registry_client(registry, environ).manifest_digest(
                    repository_path(registry, image), current.digest
                )
                != current.digest
            ):
                log.info("%s:%s is this commit's, but %s lacks it: building", image, tag, registry.name)
                return None
        return current.digest, f"{first.name}:{tag}"
    return None


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while a rollback runs: a second Ctrl-C must not leave it half done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _roll_back(done: Sequence[_TagWrite], journal: PromotionJournal) -> None:
    """Undo the writes, newest first: restore the previous manifest, or remove a tag that was new."""
    removals: dict[tuple[str, str], list[_TagWrite]] = {}
    for write in reversed(done):
        where = f"{write.registry.name}: {write.registry.repository(write.image)}:{write.tag}"
        try:
            if write.previous is not None:
                write.client.put_manifest(write.repository, write.tag, write.previous)
                journal.restored.append(f"{where} back on {write.previous.digest}")
            else:
                removals.setdefault((write.registry.name, write.repository), []).append(write)
                continue
        except (PipelineError, OSError) as error:
            journal.unrestored.append(f"{where} still on {write.manifest.digest} ({error})")
        _unrecord(journal, write)
        journal.changed()
    for writes in removals.values():
        _remove_new_tags(writes, journal)
        journal.changed()


def _unrecord(journal: PromotionJournal, write: _TagWrite) -> None:
    moved = journal.moved.get((write.image, write.registry.name), [])
    if write.tag in moved:
        moved.remove(write.tag)


def _remove_new_tags(writes: Sequence[_TagWrite], journal: PromotionJournal) -> None:
    """Remove tags this promotion added in one repository.

    The OCI spec's tag deletion (DELETE by tag) is tried first. Distribution 2.x refuses it (only digests
    can be deleted, which drops every tag of that manifest), so there the digest is deleted and put back
    at once, with the tags that pointed to it before this promotion: the net effect is the new tags gone.
    """
    first = writes[0]
    client, repository, digest = first.client, first.repository, first.manifest.digest
    names = [w.tag for w in writes]
    left: list[_TagWrite] = []
    for write in writes:
        try:
            status = client._request(
                "DELETE", f"/v2/{repository}/manifests/{write.tag}", f"repository:{repository}:delete"
            ).status_code
        except (PipelineError, OSError):
            status = 0
        if status in (200, 202):
            journal.restored.append(f"{write.registry.name}: removed new tag {write.tag}")
            _unrecord(journal, write)
        else:
            left.append(write)
    if not left:
        return
    try:
        keep = [
            tag
            for tag in client.tags(repository)
            if tag not in names and client.manifest_digest(repository, tag) == digest
        ]
        status = client._request(
            "DELETE", f"/v2/{repository}/manifests/{digest}", f"repository:{repository}:delete"
        ).status_code
        if status not in (200, 202):
            raise RegistryError(f"the registry deletes neither tags nor manifests ({status})")
        client.put_manifest(repository, digest, first.manifest)
        for tag in keep:
            client.put_manifest(repository, tag, first.manifest)
    except (PipelineError, OSError) as error:
        for write in left:
            journal.unrestored.append(
                f"{write.registry.name}: {write.registry.repository(write.image)}:{write.tag} is new and could "
                f"not be removed; it points to the tested {digest} ({error})"
            )
        return
    for write in left:
        journal.restored.append(f"{write.registry.name}: removed new tag {write.tag}")
        _unrecord(journal, write)


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
    repository = repository_path(first, image)
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
        other_repository = repository_path(registry, image)
        for descriptor in descriptors:
            if other.manifest_digest(other_repository, str(descriptor["digest"])) is None:
                raise RegistryError(
                    f"{registry.name}: {other_repository}@{descriptor['digest']} is missing; push every platform "
                    "to every registry before merging"
                )
        other.put_manifest(other_repository, index.digest, index)
    return index.digest
