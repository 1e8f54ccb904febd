"""`pipeline verify` and `--require-signature`: an image's signature and smoke attestation, checked with
cosign, and that the attestation covers every platform of the index with passing smoke results."""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import LoadedConfig, RegistryConfig, SignConfig, find_config, load_config
from pipeline.errors import ConfigError, PipelineError, SignError
from pipeline.sign.cosign import (
    SCHEME,
    Verifier,
    ensure_cosign,
    run_cosign,
    verify_args,
    verify_attestation_args,
)
from pipeline.sign.predicate import PREDICATE_TYPE

log = logging.getLogger(__name__)

# --- verification -----------------------------------------------------------------------------------------


@dataclass
class Check:
    name: str
    passed: bool
    detail: str


@dataclass
class Verification:
    reference: str
    digest: str | None = None
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    def add(self, name: str, passed: bool, detail: str) -> bool:
        self.checks.append(Check(name, passed, detail))
        return passed

    def first_failure(self) -> Check | None:
        return next((check for check in self.checks if not check.passed), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "digest": self.digest,
            "passed": self.passed,
            "predicate_type": PREDICATE_TYPE,
            "scheme": SCHEME,
            "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in self.checks],
        }


@dataclass(frozen=True)
class ImageRef:
    host: str
    repository: str  # path under the host
    tag: str | None
    digest: str | None

    @property
    def name(self) -> str:
        return f"{self.host}/{self.repository}"

    def at(self, digest: str) -> str:
        return f"{self.name}@{digest}"


def parse_reference(reference: str) -> ImageRef:
    """host[:port]/path[:tag][@sha256:...]; a reference without a host is refused (say where it lives)."""
    rest, _, digest = reference.partition("@")
    host, slash, path = rest.partition("/")
    if not slash or not path or not ("." in host or ":" in host or host == "localhost"):
        raise PipelineError(f"{reference!r}: give a full reference, host[:port]/repository[:tag|@sha256:...]")
    repository, _, tag = path.partition(":")
    if digest and not (digest.startswith("sha256:") and len(digest) == 71):
        raise PipelineError(f"{reference!r}: the digest must be sha256:<64 hex digits>")
    return ImageRef(host, repository, tag or (None if digest else "latest"), digest or None)


def _statements(output: str, digest: str) -> list[dict[str, Any]]:
    """The in-toto statements of our type, from `cosign verify-attestation` output, that name `digest`."""
    found: list[dict[str, Any]] = []
    for line in output.splitlines():
        if not line.strip().startswith("{"):
            continue
        envelope = json.loads(line)
        statement = json.loads(base64.b64decode(envelope.get("payload", "")))
        subjects = [s.get("digest", {}).get("sha256") for s in statement.get("subject", [])]
        if statement.get("predicateType") == PREDICATE_TYPE and digest.removeprefix("sha256:") in subjects:
            found.append(statement)
    return found


def coverage_problems(predicate: Mapping[str, Any], digest: str, platforms: Mapping[str, str]) -> list[str]:
    """Why a smoke predicate does not vouch for this index (empty when it does): every platform of the
    index must be listed with its own digest, and tested with a passing verdict."""
    problems = []
    if predicate.get("index_digest") != digest:
        problems.append(f"it is for {predicate.get('index_digest')}, not {digest}")
    listed = predicate.get("platforms") or {}
    for platform, platform_digest in sorted(platforms.items()):
        if platform not in listed:
            problems.append(f"{platform} is missing")
        elif listed[platform] != platform_digest:
            problems.append(f"{platform} is {listed[platform]}, the index has {platform_digest}")
    return problems


def smoke_problems(predicate: Mapping[str, Any], platforms: Sequence[str]) -> list[str]:
    smoke = predicate.get("smoke") or {}
    targets = smoke.get("targets") or []
    problems = [
        f"{t.get('platform')} from {t.get('registry')} failed {t.get('failed')} of {t.get('checks')} checks"
        for t in targets
        if not t.get("passed")
    ]
    tested = {t.get("platform") for t in targets if t.get("passed")}
    problems += [
        f"{platform} has no passing smoke test" for platform in sorted(platforms) if platform not in tested
    ]
    if not smoke.get("passed"):
        problems.insert(0, "the smoke run did not pass")
    return problems


def verify_image(
    reference: str,
    verifier: Verifier,
    *,
    registry: RegistryConfig | None = None,
    environ: Mapping[str, str] | None = None,
    cosign: str | None = None,
) -> Verification:
    """Check the signature and the smoke attestation of REF's index digest, and that the attestation covers
    every platform of the index. Registry credentials, for cosign, must already be in DOCKER_CONFIG."""
    from pipeline.distribution import RegistryClient
    from pipeline.publish import registry_client

    ref = parse_reference(reference)
    result = Verification(reference)
    client = registry_client(registry, environ) if registry is not None else RegistryClient(ref.host)
    insecure = registry.insecure if registry is not None else False
    digest = ref.digest or client.manifest_digest(ref.repository, ref.tag or "latest")
    if digest is None or client.manifest_digest(ref.repository, digest) is None:
        result.add("digest", False, f"{reference} does not exist")
        return result
    result.digest = digest
    platforms = client.platform_digests(ref.repository, digest)
    result.add("digest", True, f"{digest} ({', '.join(sorted(platforms))})")
    cosign = cosign or ensure_cosign()
    env = {**os.environ, **(environ or {})}
    try:
        output = run_cosign(
            cosign, verify_args(verifier, ref.at(digest), insecure=insecure), env, "cosign verify"
        )
        payloads = json.loads(output or "[]")
        signed = [
            p
            for p in payloads
            if p.get("critical", {}).get("image", {}).get("docker-manifest-digest") == digest
        ]
        result.add("signature", bool(signed), f"{len(signed)} valid signature(s) for {digest}")
    except SignError as error:
        result.add("signature", False, str(error))
    try:
        output = run_cosign(
            cosign,
            verify_attestation_args(verifier, ref.at(digest), insecure=insecure),
            env,
            "cosign verify-attestation",
        )
        statements = _statements(output, digest)
        if not result.add(
            "attestation",
            bool(statements),
            f"{len(statements)} valid {PREDICATE_TYPE} statement(s) for {digest}",
        ):
            return result
    except SignError as error:
        result.add("attestation", False, str(error))
        return result
    # Any one valid statement that vouches for the whole index is enough (re-attesting appends, cosign keeps both).
    judged = [(coverage_problems(s["predicate"], digest, platforms), s["predicate"]) for s in statements]
    judged.sort(key=lambda item: len(item[0]))
    problems, predicate = judged[0]
    result.add("platforms", not problems, "; ".join(problems) or f"covers {', '.join(sorted(platforms))}")
    problems = smoke_problems(predicate, list(platforms))
    targets = (predicate.get("smoke") or {}).get("targets") or []
    result.add(
        "smoke",
        not problems,
        "; ".join(problems) or f"{len(targets)} target(s) passed, revision {predicate.get('revision')}",
    )
    return result


def verifier_for(config: LoadedConfig | None, key: Path | None) -> Verifier:
    settings = config.pipeline.sign if config is not None else SignConfig()
    if key is not None:
        return Verifier(public_key=key, tlog=settings.tlog_upload)
    if settings.public_key is not None and config is not None:
        return Verifier(public_key=(config.root / settings.public_key).resolve(), tlog=settings.tlog_upload)
    if settings.method == "keyless":
        return Verifier(identity=settings.identity, issuer=settings.issuer)
    where = f"{config.path}: " if config is not None else ""
    raise ConfigError(f"{where}no public key to verify with; pass --key cosign.pub or set [sign] public_key")


def registry_of(config: LoadedConfig | None, reference: str) -> RegistryConfig | None:
    """The configured registry a reference lives in (for its credentials and `insecure`), if any."""
    if config is None:
        return None
    ref = parse_reference(reference)
    matches = [
        r
        for r in config.pipeline.registries
        if ref.name == r.url or ref.name.startswith(r.url.rstrip("/") + "/")
    ]
    return max(matches, key=lambda r: len(r.url), default=None) or next(
        (r for r in config.pipeline.registries if r.host == ref.host), None
    )


def require_signed(
    references: Sequence[tuple[str, RegistryConfig | None]],
    verifier: Verifier,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Verify every reference before anything runs; reference -> its verified digest. One line on failure.
    Registry credentials, for cosign, must already be in DOCKER_CONFIG."""
    verified: dict[str, str] = {}
    for reference, registry in dict.fromkeys(references):
        result = verify_image(reference, verifier, registry=registry, environ=environ)
        failed = result.first_failure()
        if failed is not None or result.digest is None:
            detail = failed.detail if failed else "no digest"
            name = failed.name if failed else "digest"
            raise SignError(
                f"{reference}: {name} check failed: {detail}; refusing to run an unverified image"
            )
        verified[reference] = result.digest
        log.info("verified %s (%s): signed and attested", reference, result.digest)
    return verified


def require_signed_digests(
    config: LoadedConfig,
    digests: Mapping[str, str],
    registries: Sequence[RegistryConfig],
    environ: Mapping[str, str] | None = None,
) -> None:
    """`release --digest --require-signature`: every index must be signed and attested in every registry."""
    verifier = verifier_for(config, None)
    require_signed(
        [(f"{r.repository(image)}@{digest}", r) for image, digest in digests.items() for r in registries],
        verifier,
        environ,
    )


def require_signed_references(
    references: Sequence[str], config: LoadedConfig | None, key: Path | None
) -> dict[str, str]:
    """`pipeline smoke --require-signature`: verify each image first; reference -> the verified digest's
    reference, which is what gets tested (a tag could move between the check and the pull)."""
    from pipeline.publish import isolated_docker_config, login_all

    verifier = verifier_for(config, key)
    pairs = [(reference, registry_of(config, reference)) for reference in references]
    with contextlib.ExitStack() as stack:
        logins = [r for _, r in pairs if r is not None and r.username_env]
        if logins:  # a throwaway config with the configured logins; otherwise the user's own docker config
            stack.enter_context(isolated_docker_config())
            login_all(list(dict.fromkeys(logins)))
        verified = require_signed(pairs, verifier)
    return {reference: parse_reference(reference).at(digest) for reference, digest in verified.items()}


def verified_if_required(references: Sequence[str], args: argparse.Namespace) -> dict[str, str]:
    """`pipeline smoke`: with --require-signature, or `[sign] require` for the config's images, every image
    is verified first (reference -> its verified digest's reference); empty when nothing asks for it."""
    config = optional_config(args.config) if args.require_signature or not args.references else None
    if not (args.require_signature or (config is not None and config.pipeline.sign.require)):
        return {}
    return require_signed_references(references, config, args.key)


def optional_config(path: Path | None) -> LoadedConfig | None:
    """The config at PATH, else the one in the cwd if any: `verify` and `smoke REF` work without one."""
    if path is not None:
        return load_config(path)
    try:
        return load_config(find_config(Path.cwd()))
    except ConfigError:
        return None
