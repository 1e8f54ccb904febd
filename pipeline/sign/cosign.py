"""The cosign CLI: provisioning it, its command lines (pure), and running it with bounded retries.

Secrets never reach argv: cosign reads the private key from the environment variable the config names
(`--key env://VAR`) and its password from `COSIGN_PASSWORD`, and registry credentials from the run's
throwaway DOCKER_CONFIG (written by `docker login --password-stdin`). Registries without the OCI referrers
API (distribution 2.8) get cosign's tag scheme: `REPO:sha256-<hex>.sig` and `REPO:sha256-<hex>.att`;
cosign 2.x uses that scheme unless told otherwise, on every registry, so the pipeline uses it everywhere.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from pipeline.errors import ConfigError, SignError
from pipeline.retry import with_retries
from pipeline.sign.predicate import PREDICATE_TYPE

log = logging.getLogger(__name__)

SCHEME = "tag"  # cosign's tag scheme: <repo>:sha256-<hex>.sig / .att (no referrers API needed)
COSIGN_OVERRIDE = "PIPELINE_COSIGN"  # a cosign binary to use instead of looking on PATH or provisioning
TIMEOUT = 300.0
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


def reference_list(references: str | Sequence[str]) -> list[str]:
    return [references] if isinstance(references, str) else list(references)


@dataclass(frozen=True)
class Held:
    """Where `cosign sign --upload=false` leaves a signature made ahead of the gate, for `attach` later."""

    signature: Path
    payload: Path


def sign_args(
    method: Method,
    references: str | Sequence[str],
    *,
    key_env: str | None,
    tlog_upload: bool,
    insecure: bool,
    held: Held | None = None,
) -> list[str]:
    """`cosign sign` for digest references (one per registry); the key comes by variable name, never by value.
    With `held` (one reference), the signature is written there and not uploaded."""
    held_flags = (
        ["--upload=false", "--output-signature", str(held.signature), "--output-payload", str(held.payload)]
        if held is not None
        else []
    )
    return [
        "sign",
        "--yes",
        *_signing_flags(method, key_env, tlog_upload),
        *held_flags,
        *_registry_flags(insecure),
        *reference_list(references),
    ]


def attest_args(
    method: Method,
    references: str | Sequence[str],
    predicate: Path | None,
    *,
    key_env: str | None,
    tlog_upload: bool,
    insecure: bool,
    upload: bool = True,
) -> list[str]:
    """`cosign attest` of the smoke predicate; `--replace` keeps one smoke statement per digest.

    `predicate=None` reads it from standard input (one reference): cosign opens the key first, then waits
    for the predicate, so the process can be started before the smoke tests end. `upload=False` prints the
    signed statement (a DSSE envelope) instead of uploading it, and needs no registry."""
    return [
        "attest",
        "--yes",
        *(["--replace"] if upload else ["--no-upload=true"]),
        "--type",
        PREDICATE_TYPE,
        "--predicate",
        "-" if predicate is None else str(predicate),
        *_signing_flags(method, key_env, tlog_upload),
        *_registry_flags(insecure),
        *reference_list(references),
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


class CosignFailed(SignError):
    """A cosign run that failed; `transient` when its last error is a registry hiccup worth retrying."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient

    @classmethod
    def from_stderr(cls, what: str, stderr: str) -> CosignFailed:
        detail = _last_error(stderr)
        return cls(f"{what}: {detail}", any(word in detail.lower() for word in _TRANSIENT))


def run_cosign(
    cosign: str, args: Sequence[str], env: Mapping[str, str], what: str, *, retry: bool = True
) -> str:
    """Run cosign (retrying registry hiccups with backoff); its stdout, or a SignError with its last error."""

    def once() -> str:
        try:
            result = subprocess.run(
                [cosign, *args], env=dict(env), capture_output=True, text=True, timeout=TIMEOUT, check=False
            )
        except subprocess.TimeoutExpired:
            raise CosignFailed(f"{what}: cosign did not finish in {TIMEOUT:.0f}s", True) from None
        if result.returncode != 0:
            raise CosignFailed.from_stderr(what, result.stderr)
        return result.stdout

    if not retry:
        return once()
    return with_retries(once, what, is_transient=lambda e: isinstance(e, CosignFailed) and e.transient)
