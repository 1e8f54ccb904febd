"""Sign what passed the gate, and attest that it passed: cosign signatures and a smoke-test attestation.

The release gate calls `sign_tested` after every smoke test of the run passed and before any tag moves: the
index digest is signed in every registry, and an in-toto statement of our own predicate type
(`PREDICATE_TYPE`, documented in the README) records what was tested. Both point at the digest, so they hold
for every tag that later points there. `pipeline verify REF` checks both, and that the statement covers
every platform of the index with passing smoke results.

Secrets never reach argv: cosign reads the private key from the environment variable the config names
(`--key env://VAR`) and its password from `COSIGN_PASSWORD`, and registry credentials from the run's
throwaway DOCKER_CONFIG (written by `docker login --password-stdin`). Registries without the OCI referrers
API (distribution 2.8) get cosign's tag scheme: `REPO:sha256-<hex>.sig` and `REPO:sha256-<hex>.att`;
cosign 2.x uses that scheme unless told otherwise, on every registry, so the pipeline uses it everywhere.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from rich.table import Table

from pipeline import __version__
from pipeline.config import LoadedConfig, RegistryConfig, SignConfig, find_config, load_config
from pipeline.errors import ConfigError, PipelineError, SignError
from pipeline.github import on_actions, sign_secret_masks
from pipeline.report import ImageOutcome, ReleaseReport, wide_console
from pipeline.retry import with_retries

if TYPE_CHECKING:
    from pipeline.smoke import SmokeTarget

log = logging.getLogger(__name__)

PREDICATE_TYPE = "urn:image-pipeline:smoke-test:v1"
SCHEME = "tag"  # cosign's tag scheme: <repo>:sha256-<hex>.sig / .att (no referrers API needed)
COSIGN_OVERRIDE = "PIPELINE_COSIGN"  # a cosign binary to use instead of looking on PATH or provisioning
_TIMEOUT = 300.0
# cosign's own words for a registry that failed for a while; anything else (401, bad key) is final.
_TRANSIENT = (
    "500 internal server error",
    "502 bad gateway",
    "503 service unavailable",
    "connection reset",
    "eof",
)


# --- provisioning ----------------------------------------------------------------------------------------


@functools.cache
def ensure_cosign() -> str:
    """The cosign binary: `$PIPELINE_COSIGN`, else cosign on PATH, else Debian trixie's, unpacked privately
    (provision/cosign.sh, which checks that it runs)."""
    explicit = os.environ.get(COSIGN_OVERRIDE)
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise SignError(f"{COSIGN_OVERRIDE}={explicit} is not an executable file; point it at cosign 2.x")
        return explicit
    found = shutil.which("cosign")
    if found:
        return found
    from pipeline.registry import state_home

    directory = state_home() / "cosign"
    provisioned = directory / "root/usr/bin/cosign"
    if os.access(provisioned, os.X_OK):
        return str(provisioned)
    script = resources.files("pipeline").joinpath("provision/cosign.sh")
    with resources.as_file(script) as path:
        result = subprocess.run(
            ["bash", str(path), str(directory)], capture_output=True, text=True, timeout=600, check=False
        )
    for line in result.stderr.splitlines():
        log.info("%s", line)
    if result.returncode != 0 or not os.access(provisioned, os.X_OK):
        last = (result.stderr.strip().splitlines() or ["no detail"])[-1]
        raise SignError(f"[sign] needs cosign 2.x, which is not on PATH and could not be provisioned: {last}")
    return str(provisioned)


# --- cosign command lines (pure) --------------------------------------------------------------------------

Method = Literal["key", "keyless"]


def _registry_flags(insecure: bool) -> list[str]:
    # Loopback registries are plain HTTP to cosign already (go-containerregistry's rule, like Docker's);
    # a registry the config marks insecure needs both switches.
    return ["--allow-insecure-registry", "--allow-http-registry"] if insecure else []


def _signing_flags(method: Method, key_env: str | None, tlog_upload: bool) -> list[str]:
    if method == "key":
        return ["--key", f"env://{key_env}", f"--tlog-upload={str(tlog_upload).lower()}"]
    # Keyless: cosign finds GitHub's ambient OIDC token (ACTIONS_ID_TOKEN_REQUEST_URL/_TOKEN, present with
    # `permissions: id-token: write`), gets a short-lived Fulcio certificate and records the signature in
    # Rekor; nothing is stored on the runner.
    return []


def _references(references: str | Sequence[str]) -> list[str]:
    return [references] if isinstance(references, str) else list(references)


def sign_args(
    method: Method,
    references: str | Sequence[str],
    *,
    key_env: str | None,
    tlog_upload: bool,
    insecure: bool,
) -> list[str]:
    """`cosign sign` for digest references (one per registry); the key comes by variable name, never by value."""
    return [
        "sign",
        "--yes",
        *_signing_flags(method, key_env, tlog_upload),
        *_registry_flags(insecure),
        *_references(references),
    ]


def attest_args(
    method: Method,
    references: str | Sequence[str],
    predicate: Path,
    *,
    key_env: str | None,
    tlog_upload: bool,
    insecure: bool,
) -> list[str]:
    """`cosign attest` of the smoke predicate; `--replace` keeps one smoke statement per digest."""
    return [
        "attest",
        "--yes",
        "--replace",
        "--type",
        PREDICATE_TYPE,
        "--predicate",
        str(predicate),
        *_signing_flags(method, key_env, tlog_upload),
        *_registry_flags(insecure),
        *_references(references),
    ]


@dataclass(frozen=True)
class Verifier:
    """What a signature must be checked against: a public key, or (keyless) a certificate identity."""

    public_key: Path | None = None
    identity: str | None = None
    issuer: str = "https://token.actions.githubusercontent.com"
    tlog: bool = False  # key method: was the signature recorded in Rekor?

    def flags(self) -> list[str]:
        if self.public_key is not None:
            return ["--key", str(self.public_key)] + ([] if self.tlog else ["--insecure-ignore-tlog=true"])
        if self.identity is None:
            raise ConfigError(
                "keyless verification needs [sign] identity (a regular expression of the signer)"
            )
        return ["--certificate-identity-regexp", self.identity, "--certificate-oidc-issuer", self.issuer]


def verify_args(verifier: Verifier, reference: str, *, insecure: bool) -> list[str]:
    return ["verify", *verifier.flags(), "--output", "json", *_registry_flags(insecure), reference]


def verify_attestation_args(verifier: Verifier, reference: str, *, insecure: bool) -> list[str]:
    return [
        "verify-attestation",
        *verifier.flags(),
        "--type",
        PREDICATE_TYPE,
        "--output",
        "json",
        *_registry_flags(insecure),
        reference,
    ]


def signature_tag(digest: str, suffix: Literal["sig", "att"]) -> str:
    """cosign's tag scheme: the tag that holds the signatures (`sig`) or attestations (`att`) of a digest."""
    return f"{digest.replace(':', '-')}.{suffix}"


# --- running cosign ---------------------------------------------------------------------------------------


def _last_error(stderr: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("Error:")]
    line = (errors or lines or ["no detail"])[-1]
    return line.removeprefix("Error: ")


class _CosignFailed(SignError):
    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


def run_cosign(
    cosign: str, args: Sequence[str], env: Mapping[str, str], what: str, *, retry: bool = True
) -> str:
    """Run cosign (retrying registry hiccups with backoff); its stdout, or a SignError with its last error."""

    def once() -> str:
        try:
            result = subprocess.run(
                [cosign, *args], env=dict(env), capture_output=True, text=True, timeout=_TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise _CosignFailed(f"{what}: cosign did not finish in {_TIMEOUT:.0f}s", True) from None
        if result.returncode != 0:
            detail = _last_error(result.stderr)
            transient = any(word in detail.lower() for word in _TRANSIENT)
            raise _CosignFailed(f"{what}: {detail}", transient)
        return result.stdout

    if not retry:
        return once()
    return with_retries(once, what, is_transient=lambda e: isinstance(e, _CosignFailed) and e.transient)


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
        what = f"signing {', '.join(_references(references))}"
        run_cosign(self.cosign, self.sign_command(references, insecure), self.env(), what)

    def attest(self, references: str | Sequence[str], predicate: Path, insecure: bool) -> None:
        what = f"attesting {', '.join(_references(references))}"
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


def file_digest(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def smoke_predicate(
    outcome: ImageOutcome, *, version: str, revision: str, smoke_file: Path | None
) -> dict[str, Any]:
    """What the gate tested, for the attestation: digests, every platform x registry verdict with check
    counts, the smoke file's digest, the git revision and version."""
    targets = []
    for target in (outcome.smoke or {}).get("targets", []):
        checks = target.get("checks", [])
        errored = 1 if target.get("error") else 0
        targets.append(
            {
                "registry": target.get("registry"),
                "platform": target.get("platform"),
                "reference": target.get("reference"),
                "passed": bool(target.get("passed")),
                "checks": len(checks) + errored,
                "failed": sum(1 for check in checks if not check.get("passed")) + errored,
            }
        )
    return {
        "image": outcome.name,
        "version": version,
        "revision": revision,
        "index_digest": outcome.index_digest,
        "platforms": dict(outcome.platform_digests),
        "smoke": {
            "file": smoke_file.name if smoke_file else None,
            "file_digest": file_digest(smoke_file) if smoke_file and smoke_file.is_file() else None,
            "passed": bool(outcome.smoke_passed),
            "targets": targets,
        },
        "tool": {"name": "image-pipeline", "version": __version__},
    }


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


def require_signed_targets(
    targets: Sequence[SmokeTarget], config: LoadedConfig | None, key: Path | None
) -> list[SmokeTarget]:
    """`pipeline smoke --require-signature`: verify each target's image first, then test exactly the
    verified digest (a tag could move between the check and the pull)."""
    from pipeline.publish import isolated_docker_config, login_all

    verifier = verifier_for(config, key)
    pairs = [(t.reference, registry_of(config, t.reference)) for t in targets]
    with contextlib.ExitStack() as stack:
        logins = [r for _, r in pairs if r is not None and r.username_env]
        if logins:  # a throwaway config with the configured logins; otherwise the user's own docker config
            stack.enter_context(isolated_docker_config())
            login_all(list(dict.fromkeys(logins)))
        verified = require_signed(pairs, verifier)
    return [
        dataclasses.replace(t, reference=parse_reference(t.reference).at(verified[t.reference]))
        for t in targets
    ]


def verified_if_required(targets: Sequence[SmokeTarget], args: argparse.Namespace) -> list[SmokeTarget]:
    """`pipeline smoke`: with --require-signature, or `[sign] require` for the config's images, every image
    is verified first and its verified digest tested; otherwise the targets as they are."""
    config = optional_config(args.config) if args.require_signature or not args.references else None
    if not (args.require_signature or (config is not None and config.pipeline.sign.require)):
        return list(targets)
    return require_signed_targets(targets, config, args.key)


def optional_config(path: Path | None) -> LoadedConfig | None:
    """The config at PATH, else the one in the cwd if any: `verify` and `smoke REF` work without one."""
    if path is not None:
        return load_config(path)
    try:
        return load_config(find_config(Path.cwd()))
    except ConfigError:
        return None


def print_verification(result: Verification) -> None:
    table = Table(title=f"verify {result.reference} ({'passed' if result.passed else 'FAILED'})")
    for column in ("check", "result", "detail"):
        table.add_column(column, overflow="fold")
    for check in result.checks:
        table.add_row(check.name, "ok" if check.passed else "FAILED", check.detail)
    wide_console().print(table)


def _run_verify(args: argparse.Namespace) -> int:
    from pipeline.publish import isolated_docker_config, login_all

    config = optional_config(args.config)
    verifier = verifier_for(config, args.key)
    registry = registry_of(config, args.reference)
    with isolated_docker_config():
        if registry is not None:
            with _stdout_to_stderr():  # `docker login` prints to stdout, which is the JSON's
                login_all([registry])
        result = verify_image(args.reference, verifier, registry=registry)
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        print_verification(result)
    failed = result.first_failure()
    if failed is not None:
        raise SignError(f"{args.reference}: {failed.name} check failed: {failed.detail}")
    return 0


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Child processes' stdout goes to stderr meanwhile (file descriptor level: they inherit it)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "verify",
        help="check an image's cosign signature and smoke-test attestation (covering every platform)",
    )
    parser.add_argument("reference", metavar="REF", help="host[:port]/repository[:tag|@sha256:...]")
    parser.add_argument(
        "--key", type=Path, default=None, help="cosign public key (default: [sign] public_key)"
    )
    parser.add_argument("--json", action="store_true", help="print the checks as JSON instead of a table")
    parser.set_defaults(handler=_run_verify)
    provision = subparsers.add_parser(
        "cosign",
        help="print the cosign binary the pipeline uses, provisioning it (Debian trixie's) if missing",
    )
    provision.set_defaults(handler=_run_cosign)


def _run_cosign(args: argparse.Namespace) -> int:
    print(ensure_cosign())
    return 0
