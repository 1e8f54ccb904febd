"""Signing in the release gate: the key is checked before anything is built, and what passed every smoke
test is signed and attested in every registry before any tag moves (or no tag moves)."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.config import LoadedConfig, RegistryConfig, SignConfig
from pipeline.errors import PipelineError, SignError
from pipeline.github import on_actions, sign_secret_masks
from pipeline.report import ReleaseReport
from pipeline.sign.cosign import (
    SCHEME,
    Method,
    attest_args,
    ensure_cosign,
    reference_list,
    run_cosign,
    sign_args,
    signature_tag,
)
from pipeline.sign.predicate import PREDICATE_TYPE, smoke_predicate

log = logging.getLogger(__name__)

# --- signing ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    """Everything needed to sign, checked before anything is built. The secrets stay in `_env`."""

    cosign: str
    settings: SignConfig
    _env: Mapping[str, str] = field(repr=False)

    @property
    def method(self) -> Method:
        assert self.settings.method is not None
        return self.settings.method

    def env(self) -> dict[str, str]:
        # os.environ at call time: the run's throwaway DOCKER_CONFIG (registry logins) is set there.
        return {**os.environ, **self._env}

    def sign_command(self, references: str | Sequence[str], insecure: bool) -> list[str]:
        return sign_args(
            self.method,
            references,
            key_env=self.settings.key_env,
            tlog_upload=self.settings.tlog_upload,
            insecure=insecure,
        )

    def attest_command(self, references: str | Sequence[str], predicate: Path, insecure: bool) -> list[str]:
        return attest_args(
            self.method,
            references,
            predicate,
            key_env=self.settings.key_env,
            tlog_upload=self.settings.tlog_upload,
            insecure=insecure,
        )

    def sign(self, references: str | Sequence[str], insecure: bool) -> None:
        what = f"signing {', '.join(reference_list(references))}"
        run_cosign(self.cosign, self.sign_command(references, insecure), self.env(), what)

    def attest(self, references: str | Sequence[str], predicate: Path, insecure: bool) -> None:
        what = f"attesting {', '.join(reference_list(references))}"
        run_cosign(self.cosign, self.attest_command(references, predicate, insecure), self.env(), what)


def signer_for(config: LoadedConfig, environ: Mapping[str, str]) -> Signer | None:
    """The signer `[sign]` asks for, after checking the key opens with its password (or that keyless can
    get a token): one line, before anything is built. None when signing is off."""
    return start_signer(config, environ)()


def start_signer(config: LoadedConfig, environ: Mapping[str, str]) -> Callable[[], Signer | None]:
    """`signer_for` in two halves: the variables are checked now; provisioning cosign and opening the key
    run in a thread, so that they overlap the engine check. Call the result to wait (it raises the error)."""
    settings = config.pipeline.sign
    if settings.method is None:
        return lambda: None
    where = f"{config.path}: [sign]"
    if settings.method == "keyless":
        if not (on_actions(environ) and environ.get("ACTIONS_ID_TOKEN_REQUEST_URL")):
            raise SignError(
                f'{where} method = "keyless" needs GitHub Actions with `permissions: id-token: write` (no OIDC '
                'token here); use method = "key" with key_env/password_env elsewhere'
            )
        return _in_background(lambda: Signer(ensure_cosign(), settings, {}))
    assert settings.key_env is not None and settings.password_env is not None
    if not environ.get(settings.key_env):
        raise SignError(
            f"{where} key_env: environment variable {settings.key_env} is not set; export the cosign private key "
            "(the PEM of `cosign generate-key-pair`) in it, in GitHub Actions from a secret"
        )
    if settings.password_env not in environ:
        raise SignError(
            f"{where} password_env: environment variable {settings.password_env} is not set; export the key's "
            "password in it (empty for a key without one)"
        )
    secrets = {settings.key_env: environ[settings.key_env], "COSIGN_PASSWORD": environ[settings.password_env]}
    if on_actions(environ):  # before anything could print them
        for command in sign_secret_masks(settings, environ):
            print(command)

    def ready() -> Signer:
        signer = Signer(ensure_cosign(), settings, secrets)
        _check_key_opens(signer, where)
        return signer

    return _in_background(ready)


def _in_background(work: Callable[[], Signer]) -> Callable[[], Signer | None]:
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sign-preflight")
    future = pool.submit(work)
    pool.shutdown(wait=False)
    return future.result


def _check_key_opens(signer: Signer, where: str) -> None:
    """`cosign public-key` decrypts the private key: a wrong password or a bad key fails here, not after the build."""
    key_env, password_env = signer.settings.key_env, signer.settings.password_env
    try:
        run_cosign(
            signer.cosign,
            ["public-key", "--key", f"env://{key_env}"],
            signer.env(),
            "checking the key",
            retry=False,  # nothing here talks to a registry
        )
    except SignError as error:
        text = str(error).lower()
        if "decrypt" in text:
            raise SignError(
                f"{where} password_env: the password in {password_env} does not open the key in {key_env}; "
                "export the password the key was made with"
            ) from None
        raise SignError(
            f"{where} key_env: {key_env} does not hold a usable cosign private key ({str(error).split(': ', 1)[-1]}); "
            "export the PEM that `cosign generate-key-pair` wrote"
        ) from None


@dataclass
class SignRecord:
    """What was signed where (for the report), or why not."""

    registry: str
    reference: str
    signature: str | None = None
    attestation: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "scheme": SCHEME,
            "signature": self.signature,
            "attestation": self.attestation,
            "predicate_type": PREDICATE_TYPE if self.attestation else None,
            "error": self.error,
        }


def sign_everywhere(
    signer: Signer,
    repositories: Sequence[tuple[RegistryConfig, str]],
    digest: str,
    predicate: Path | None,
) -> list[SignRecord]:
    """Sign (and attest) `digest` in every registry; every outcome is returned, none raised.

    One cosign run signs every registry at once, and one attests (a key decryption and a process each, the
    two at the same time); when either fails, every registry is done on its own (signing again is
    idempotent) so that the report says what was signed where."""
    groups: dict[bool, list[str]] = {}  # registries with the same `insecure` share a cosign run
    for registry, repository in repositories:
        groups.setdefault(registry.insecure, []).append(f"{repository}@{digest}")
    with ThreadPoolExecutor(max_workers=2 * len(groups) or 1) as pool:
        runs = [pool.submit(signer.sign, references, insecure) for insecure, references in groups.items()]
        if predicate is not None:
            runs += [
                pool.submit(signer.attest, references, predicate, insecure)
                for insecure, references in groups.items()
            ]
    failed = next((run.exception() for run in runs if run.exception() is not None), None)
    if failed is None:
        return [
            SignRecord(
                registry.name,
                f"{repository}@{digest}",
                signature=f"{repository}:{signature_tag(digest, 'sig')}",
                attestation=f"{repository}:{signature_tag(digest, 'att')}" if predicate is not None else None,
            )
            for registry, repository in repositories
        ]
    log.warning("signing everywhere at once failed (%s); signing registry by registry", failed)
    records = [SignRecord(registry.name, f"{repository}@{digest}") for registry, repository in repositories]

    def sign(record: SignRecord, registry: RegistryConfig, repository: str) -> None:
        try:
            signer.sign(record.reference, registry.insecure)
            record.signature = f"{repository}:{signature_tag(digest, 'sig')}"
        except PipelineError as error:
            record.error = record.error or str(error)

    def attest(record: SignRecord, registry: RegistryConfig, repository: str, predicate: Path) -> None:
        try:
            signer.attest(record.reference, predicate, registry.insecure)
            record.attestation = f"{repository}:{signature_tag(digest, 'att')}"
        except PipelineError as error:
            record.error = record.error or str(error)

    # Signature and attestation live under different tags: all of them at once (cosign mostly waits).
    with ThreadPoolExecutor(max_workers=max(1, 2 * len(repositories))) as pool:
        for record, (registry, repository) in zip(records, repositories, strict=True):
            pool.submit(sign, record, registry, repository)
            if predicate is not None:
                pool.submit(attest, record, registry, repository, predicate)
    return records


def sign_tested(
    signer: Signer,
    config: LoadedConfig,
    tested: Sequence[tuple[str, str]],
    registries: Sequence[RegistryConfig],
    report: ReleaseReport,
) -> None:
    """The gate's signing step: every tested (image, digest) in every registry. Raises when any failed,
    after the report says what was signed where, so that the caller moves no tag."""
    failures: list[SignRecord] = []
    with tempfile.TemporaryDirectory(prefix="pipeline-sign-") as scratch:
        for image, digest in tested:
            outcome = report.image(image)
            predicate: Path | None = None
            if signer.settings.attest:
                predicate = Path(scratch) / f"{image.replace('/', '_')}.predicate.json"
                document = smoke_predicate(
                    outcome,
                    version=report.version,
                    revision=report.revision,
                    smoke_file=config.smoke_path(config.image(image)),
                )
                predicate.write_text(json.dumps(document, indent=2) + "\n")
            repositories = [(r, r.repository(image)) for r in registries]
            records = sign_everywhere(signer, repositories, digest, predicate)
            outcome.signing = {record.registry: record.to_json() for record in records}
            failures += [record for record in records if record.error]
            for record in records:
                if not record.error:
                    log.info("signed %s in %s: %s", image, record.registry, record.signature)
    if failures:
        signed = sorted({r for o in report.images for r, s in o.signing.items() if not s["error"]})
        raise SignError(
            f"signing failed in {failures[0].registry}: {failures[0].error}; no tag was moved "
            f"(signed in: {', '.join(signed) or 'none'})"
        )
