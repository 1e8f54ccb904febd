"""Signing in the release gate: the key is checked before anything is built, and what passed every smoke
test is signed and attested in every registry before any tag moves (or no tag moves)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pipeline.config import LoadedConfig, RegistryConfig, SignConfig
from pipeline.distribution import RegistryClient
from pipeline.errors import PipelineError, SignError
from pipeline.github import on_actions
from pipeline.publish import registry_client, repository_path
from pipeline.report import ReleaseReport
from pipeline.sign.cosign import (
    SCHEME,
    TIMEOUT,
    CosignFailed,
    Held,
    Method,
    attest_args,
    ensure_cosign,
    reference_list,
    run_cosign,
    sign_args,
    signature_tag,
)
from pipeline.sign.predicate import PREDICATE_TYPE, smoke_predicate
from pipeline.sign.upload import Layer, attach, attestation_layer, same_predicate, signature_layer

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

    def sign_command(
        self, references: str | Sequence[str], insecure: bool, *, held: Held | None = None
    ) -> list[str]:
        return sign_args(
            self.method,
            references,
            key_env=self.settings.key_env,
            tlog_upload=self.settings.tlog_upload,
            insecure=insecure,
            held=held,
        )

    def attest_command(
        self, references: str | Sequence[str], predicate: Path | None, insecure: bool, *, upload: bool = True
    ) -> list[str]:
        return attest_args(
            self.method,
            references,
            predicate,
            key_env=self.settings.key_env,
            tlog_upload=self.settings.tlog_upload,
            insecure=insecure,
            upload=upload,
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


# Work made ahead runs beside the smoke tests, which are the gate's critical path: it gets the CPU they
# leave (`nice` from exec on, so every thread of cosign's Go runtime has it).
_BACKGROUND = ["nice", "-n", "10"] if shutil.which("nice") else []


class _Started:
    """One cosign process started before the gate opens. Its output goes to a file: nothing reads it until
    the gate has passed, and a pipe left unread could fill and stall it."""

    def __init__(
        self,
        signer: Signer,
        args: Sequence[str],
        what: str,
        output: Path,
        *,
        stdin: bool = False,
        result: Path | None = None,
    ) -> None:
        """`output` gets cosign's messages; `result`, when given, its standard output on its own."""
        self.what, self.output = what, output
        with output.open("w") as sink, result.open("w") if result else contextlib.nullcontext(sink) as answer:
            self.process = subprocess.Popen(
                [*_BACKGROUND, signer.cosign, *args],
                env=signer.env(),
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=answer,
                stderr=sink if result else subprocess.STDOUT,
                text=True,
            )

    def finish(self, given: str | None = None) -> CosignFailed | None:
        """Hand it its standard input (if it takes one) and wait: None when it succeeded."""
        try:
            self.process.communicate(given, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            self.kill()
            return CosignFailed(f"{self.what}: cosign did not finish in {TIMEOUT:.0f}s", True)
        if self.process.returncode == 0:
            return None
        return CosignFailed.from_stderr(self.what, self.output.read_text(errors="replace"))

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # before its predicate arrives: it never uploads anything
        self.process.wait()


class SigningAhead:
    """One index digest's signature and attestation, made while its smoke tests run and uploaded to every
    registry only once every smoke test of the run passed (`publish`), or dropped (`cancel`).

    Why: every cosign run that signs decrypts the private key (scrypt: about a quarter of a CPU-second), and
    every cosign run that uploads starts, pings and logs in first. Made after the gate, those runs stood
    between the last smoke test and the first tag. Ahead:
    - one signature, made with `cosign sign --upload=false` for the first registry;
    - one `cosign attest --no-upload --predicate -`, which opens the key, then waits for the smoke results on
      its standard input and answers the signed statement at once.
    After the gate both go to every registry through our registry client (`upload`: the connections and
    tokens of the push, no cosign start). Their payloads name the first registry's repository everywhere, as
    after `cosign copy`: cosign checks the digest, not the name. So an image costs 3 key decryptions (with
    the key check before the build) whatever the number of registries, none of them after the gate. Nothing
    reaches a registry or Rekor before the gate: keyless signing, and key signatures recorded in Rekor, are
    made after it by cosign itself (it would record them in Rekor at once, and a Fulcio certificate lasts ten
    minutes)."""

    def __init__(
        self,
        signer: Signer,
        image: str,
        registries: Sequence[RegistryConfig],
        digest: str,
        clients: Mapping[str, RegistryClient] | None = None,
    ) -> None:
        self.signer, self.image, self.digest = signer, image, digest
        self.registries = list(registries)
        self.clients = {r.name: (clients or {}).get(r.name) or registry_client(r) for r in self.registries}
        self._scratch = tempfile.TemporaryDirectory(prefix="pipeline-sign-")
        self._signature: tuple[_Started, Held] | None = None
        self._attestation: tuple[_Started, Path] | None = None
        self._published = False
        if not self._made_ahead or not signer.settings.attest:
            return
        scratch, first = Path(self._scratch.name), self.registries[0]
        args = signer.attest_command(self.reference(first), None, first.insecure, upload=False)
        envelope = scratch / "attestation.json"
        started = _Started(
            signer,
            args,
            f"attesting {self.reference(first)}",
            scratch / "attest.log",
            stdin=True,
            result=envelope,
        )
        self._attestation = (started, envelope)

    def sign_ahead(self) -> None:
        """Make the signature now (once the digest is in the registries: cosign reads its manifest)."""
        if not self._made_ahead or self._signature is not None:
            return
        first, scratch = self.registries[0], Path(self._scratch.name)
        held = Held(scratch / "signature", scratch / "payload.json")
        args = self.signer.sign_command(self.reference(first), first.insecure, held=held)
        self._signature = (
            _Started(self.signer, args, f"signing {self.reference(first)}", scratch / "sign.log"),
            held,
        )

    @property
    def _made_ahead(self) -> bool:
        """Key signatures kept out of Rekor are made ahead; the others after the gate, by cosign itself."""
        return self.signer.method == "key" and not self.signer.settings.tlog_upload

    def reference(self, registry: RegistryConfig) -> str:
        return f"{registry.repository(self.image)}@{self.digest}"

    def publish(self, predicate: str | None) -> list[SignRecord]:
        """Sign in every registry, and attest `predicate` (JSON) where given; every outcome is returned,
        none raised, so that the report says what was signed where."""
        records = {r.name: SignRecord(r.name, self.reference(r)) for r in self.registries}
        with ThreadPoolExecutor(max_workers=2) as pool:  # signature and attestation: different tags
            pool.submit(self._sign_everywhere, records)
            if predicate is not None:
                pool.submit(self._attest_everywhere, records, predicate)
        self._published = True
        self.cancel()
        return list(records.values())

    def cancel(self) -> None:
        """Drop what was made ahead (a failed gate); after `publish`, only the scratch files go."""
        started = [pair[0] for pair in (self._signature, self._attestation) if pair is not None]
        for run in started:
            run.kill()
        if started and not self._published:
            self._published = True  # said once
            log.warning(
                "dropped the signature%s made ahead of the gate for %s (nothing was uploaded)",
                " and attestation" if self._attestation else "",
                self.digest,
            )
        self._scratch.cleanup()

    # -- signatures --------------------------------------------------------------------------------------

    def _sign_everywhere(self, records: dict[str, SignRecord]) -> None:
        try:
            held = self._held_signature()
        except PipelineError as error:
            _fail(records.values(), error)
            return
        if held is None:
            self._sign_now(records)
            return

        layer = signature_layer(held.payload.read_bytes(), held.signature.read_text())
        self._upload_everywhere(records, "sig", layer)

    def _held_signature(self) -> Held | None:
        """The signature made ahead; None when it must be made now (none was, or a registry hiccup broke it)."""
        if self._signature is None:
            return None
        started, held = self._signature
        if not _failed_for_a_while(started.finish()):
            return held
        return None

    def _sign_now(self, records: dict[str, SignRecord]) -> None:
        # One cosign run per `insecure` setting signs all its registries: one key decryption (or one Fulcio
        # certificate), and each registry's payload names its own repository.
        groups: dict[bool, list[RegistryConfig]] = {}
        for registry in self.registries:
            groups.setdefault(registry.insecure, []).append(registry)
        for insecure, group in groups.items():
            try:
                self.signer.sign([records[r.name].reference for r in group], insecure)
            except PipelineError as error:
                _fail([records[r.name] for r in group], error)
                continue
            for registry in group:
                records[
                    registry.name
                ].signature = f"{registry.repository(self.image)}:{signature_tag(self.digest, 'sig')}"

    # -- attestations ------------------------------------------------------------------------------------

    def _attest_everywhere(self, records: dict[str, SignRecord], predicate: str) -> None:
        try:
            envelope = self._envelope(predicate)
        except PipelineError as error:  # final (a bad key): a cosign run of its own would fail the same way
            _fail(records.values(), error)
            return
        if envelope is not None:
            layer = attestation_layer(envelope, PREDICATE_TYPE)
            self._upload_everywhere(records, "att", layer, replaces=same_predicate(layer))
            return
        path = Path(self._scratch.name) / "predicate.json"
        path.write_text(predicate)

        def attest(registry: RegistryConfig) -> None:
            record = records[registry.name]
            try:
                self.signer.attest(record.reference, path, registry.insecure)
                record.attestation = f"{registry.repository(self.image)}:{signature_tag(self.digest, 'att')}"
            except PipelineError as error:
                _fail([record], error)

        with ThreadPoolExecutor(max_workers=len(self.registries)) as pool:
            pool.map(attest, self.registries)

    def _envelope(self, predicate: str) -> bytes | None:
        """The statement signed ahead, now that its predicate is known; None when it must be made now."""
        if self._attestation is None:
            return None
        started, envelope = self._attestation
        if _failed_for_a_while(started.finish(predicate)):
            return None
        return envelope.read_bytes()

    def _upload_everywhere(
        self,
        records: dict[str, SignRecord],
        kind: Literal["sig", "att"],
        layer: Layer,
        replaces: Callable[[Mapping[str, Any]], bool] = lambda existing: False,
    ) -> None:
        """File what cosign made in every registry at once (kind "sig" or "att"), with our registry client."""

        def one(registry: RegistryConfig) -> None:
            record = records[registry.name]
            try:
                tag = attach(
                    self.clients[registry.name],
                    repository_path(registry, self.image),
                    self.digest,
                    kind,
                    layer,
                    replaces,
                )
            except PipelineError as error:
                _fail([record], error)
                return
            reference = f"{registry.repository(self.image)}:{tag}"
            if kind == "sig":
                record.signature = reference
            else:
                record.attestation = reference

        with ThreadPoolExecutor(max_workers=len(self.registries)) as pool:
            pool.map(one, self.registries)


def _failed_for_a_while(failure: CosignFailed | None) -> bool:
    """How a run made ahead ended: False when it succeeded, True after a registry hiccup (it is done again
    now, with retries, and the log says so); a final error (401, bad key) is raised as it is."""
    if failure is None:
        return False
    if not failure.transient:
        raise failure
    log.warning("%s (made ahead of the gate); doing it again now", failure)
    return True


def _fail(records: Iterable[SignRecord], error: PipelineError) -> None:
    for record in records:
        record.error = record.error or str(error)


def sign_tested(
    signer: Signer,
    config: LoadedConfig,
    tested: Sequence[tuple[str, str]],
    registries: Sequence[RegistryConfig],
    report: ReleaseReport,
    ahead: Mapping[str, SigningAhead] | None = None,
) -> None:
    """The gate's signing step: every tested (image, digest) in every registry, from what was made
    `ahead` (image -> SigningAhead) where it was. Raises when any failed, after the report says what was
    signed where, so that the caller moves no tag."""
    failures: list[SignRecord] = []
    for image, digest in tested:
        outcome = report.image(image)
        predicate: str | None = None
        if signer.settings.attest:
            document = smoke_predicate(
                outcome,
                version=report.version,
                revision=report.revision,
                smoke_file=config.smoke_path(config.image(image)),
            )
            predicate = json.dumps(document, indent=2) + "\n"
        signing = (ahead or {}).get(image) or SigningAhead(signer, image, registries, digest)
        records = signing.publish(predicate)
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


class GateSigning:
    """The release gate's signing, as a context: `start(image, digest)` once an image is in every registry
    (its signing work begins while its smoke tests run), `publish(...)` once every image passed, and on
    leaving without publishing (a failed gate, a signal) everything made ahead is dropped."""

    def __init__(
        self,
        signer: Signer | None,
        registries: Sequence[RegistryConfig],
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.signer, self.registries = signer, list(registries)
        self.ahead: dict[str, SigningAhead] = {}
        # One client per registry for the whole release: the uploads after the gate reuse its connections.
        self.clients = {r.name: registry_client(r, environ) for r in self.registries} if signer else {}

    def __enter__(self) -> GateSigning:
        return self

    def __exit__(self, *exc: object) -> None:
        for signing in self.ahead.values():
            signing.cancel()

    def built(self, image: str, digest: str) -> None:
        """The digest is known: the attestation can start (cosign needs no registry for a digest)."""
        if self.signer is not None and image not in self.ahead:
            self.ahead[image] = SigningAhead(self.signer, image, self.registries, digest, self.clients)

    def pushed(self, image: str, digest: str) -> None:
        """The digest is in every registry: the signature can be made (cosign reads the manifest)."""
        self.built(image, digest)
        if image in self.ahead:
            self.ahead[image].sign_ahead()

    def publish(self, config: LoadedConfig, tested: Sequence[tuple[str, str]], report: ReleaseReport) -> None:
        """Sign and attest every tested (image, digest) everywhere, or raise (no tag may move)."""
        if self.signer is not None:
            started = time.monotonic()
            try:
                sign_tested(self.signer, config, tested, self.registries, report, self.ahead)
            finally:
                report.add_timing("sign", time.monotonic() - started)
