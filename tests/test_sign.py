"""Signing and attesting what passed the gate (pipeline/sign/): the cosign command lines, the predicate,
the verification rules, and end to end with the real cosign CLI against real registries."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import secrets
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipeline.config import LoadedConfig, PipelineConfig, RegistryConfig, SignConfig, load_config
from pipeline.distribution import BlobUploader, Manifest, RegistryClient
from pipeline.errors import ConfigError, SignError
from pipeline.github import summary_markdown, write_github_outputs
from pipeline.registry import Credentials
from pipeline.report import ImageOutcome, ReleaseReport
from pipeline.sign import (
    PREDICATE_TYPE,
    Held,
    Signer,
    SigningAhead,
    Verifier,
    attest_args,
    coverage_problems,
    ensure_cosign,
    parse_reference,
    sign_args,
    signature_tag,
    signer_for,
    smoke_predicate,
    smoke_problems,
    verify_args,
)
from pipeline.sign.upload import attach, attestation_layer, same_predicate, signature_layer
from tests.fixtures.cosign import generate_key_pair
from tests.fixtures.faultproxy import ProxyFactory
from tests.fixtures.registries import TestRegistry
from tests.test_release import FAILING_SMOKE, IMAGE, git, make_project, run_pipeline

DIGEST = "sha256:" + "a" * 64
AMD, ARM = "sha256:" + "1" * 64, "sha256:" + "2" * 64
KEY_ENV, PASSWORD_ENV = "TEST_COSIGN_KEY", "TEST_COSIGN_PASSWORD"


# --- command lines (pure) ---------------------------------------------------------------------------------


def test_key_signing_names_the_variable_never_the_key() -> None:
    args = sign_args("key", f"127.0.0.1:5000/a@{DIGEST}", key_env=KEY_ENV, tlog_upload=False, insecure=False)
    assert args == [
        "sign",
        "--yes",
        "--key",
        f"env://{KEY_ENV}",
        "--tlog-upload=false",
        f"127.0.0.1:5000/a@{DIGEST}",
    ]
    attest = attest_args(
        "key", f"r/a@{DIGEST}", Path("p.json"), key_env=KEY_ENV, tlog_upload=True, insecure=True
    )
    assert attest[attest.index("--type") + 1] == PREDICATE_TYPE
    assert {"--replace", "--tlog-upload=true", "--allow-http-registry", "--allow-insecure-registry"} <= set(
        attest
    )
    assert attest[-1] == f"r/a@{DIGEST}"


def test_keyless_commands_use_the_ambient_oidc_token_and_rekor() -> None:
    """What would run on GitHub Actions (keyless cannot run here): no key, the tlog upload left on."""
    args = sign_args("keyless", f"ghcr.io/acme/a@{DIGEST}", key_env=None, tlog_upload=False, insecure=False)
    assert args == ["sign", "--yes", f"ghcr.io/acme/a@{DIGEST}"]
    verifier = Verifier(
        identity=r"^https://github.com/acme/app/", issuer="https://token.actions.githubusercontent.com"
    )
    verify = verify_args(verifier, f"ghcr.io/acme/a@{DIGEST}", insecure=False)
    assert verify[:5] == [
        "verify",
        "--certificate-identity-regexp",
        r"^https://github.com/acme/app/",
        "--certificate-oidc-issuer",
        "https://token.actions.githubusercontent.com",
    ]
    assert "--insecure-ignore-tlog=true" not in verify
    with pytest.raises(ConfigError, match="identity"):
        Verifier().flags()


def test_signatures_and_attestations_made_ahead_are_held_not_uploaded(tmp_path: Path) -> None:
    """Ahead of the gate: the signature is written to files, the attestation's predicate comes on standard
    input and its signed statement goes to standard output; neither run uploads anything."""
    held = Held(tmp_path / "s.sig", tmp_path / "s.payload")
    reference = f"127.0.0.1:5000/a@{DIGEST}"
    args = sign_args("key", reference, key_env=KEY_ENV, tlog_upload=False, insecure=False, held=held)
    assert "--upload=false" in args and args[-1] == reference
    assert args[args.index("--output-signature") + 1] == str(held.signature)
    assert args[args.index("--output-payload") + 1] == str(held.payload)
    attest = attest_args(
        "key", reference, None, key_env=KEY_ENV, tlog_upload=False, insecure=False, upload=False
    )
    assert attest[attest.index("--predicate") + 1] == "-"
    assert "--no-upload=true" in attest and "--replace" not in attest
    uploading = attest_args("key", reference, None, key_env=KEY_ENV, tlog_upload=False, insecure=False)
    assert "--replace" in uploading and not [a for a in uploading if a.startswith("--no-upload")]


def test_signature_tags_follow_cosigns_tag_scheme() -> None:
    assert signature_tag(DIGEST, "sig") == "sha256-" + "a" * 64 + ".sig"
    assert signature_tag(DIGEST, "att") == "sha256-" + "a" * 64 + ".att"


def test_references_must_name_their_registry() -> None:
    ref = parse_reference(f"127.0.0.1:5000/ns/app:1.2.3@{DIGEST}")
    assert (ref.host, ref.repository, ref.tag, ref.digest) == ("127.0.0.1:5000", "ns/app", "1.2.3", DIGEST)
    assert parse_reference("reg.example.com/app").tag == "latest"
    with pytest.raises(Exception, match="full reference"):
        parse_reference("app:1.0")


# --- config and preflight -------------------------------------------------------------------------------


def _config(tmp_path: Path, sign: str) -> LoadedConfig:
    (tmp_path / "pipeline.toml").write_text(f'[[images]]\nname = "acme/app"\n\n[sign]\n{sign}\n')
    return load_config(tmp_path / "pipeline.toml")


def test_sign_config_wants_variable_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"pipeline.toml: sign: .*key_env and password_env"):
        _config(tmp_path, 'method = "key"')
    with pytest.raises(ConfigError, match="must name an environment variable"):
        _config(tmp_path, 'method = "key"\nkey_env = "-----BEGIN KEY"\npassword_env = "P"')
    assert PipelineConfig.model_validate({"images": [{"name": "a"}]}).sign.method is None


def test_keyless_outside_github_actions_is_one_line(tmp_path: Path) -> None:
    config = _config(tmp_path, 'method = "keyless"')
    with pytest.raises(SignError, match="id-token: write"):
        signer_for(config, {})


def test_keyless_on_github_actions_signs_with_the_ambient_token(tmp_path: Path) -> None:
    config = _config(tmp_path, 'method = "keyless"\nidentity = "^https://github.com/acme/"')
    environ = {"GITHUB_ACTIONS": "true", "ACTIONS_ID_TOKEN_REQUEST_URL": "https://token.invalid/"}
    signer = signer_for(config, environ)
    assert signer is not None and signer.method == "keyless"
    reference = f"ghcr.io/acme/app@{DIGEST}"
    assert signer.sign_command(reference, False) == ["sign", "--yes", reference]
    attest = signer.attest_command(reference, Path("p.json"), False)
    assert "--key" not in attest and "--tlog-upload=false" not in attest
    assert set(signer.env()) == set(os.environ)  # no secret of ours: cosign reads GitHub's token itself


@pytest.fixture(scope="module")
def key_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, Path]:
    """A real cosign key pair: (private key PEM, its password, public key file)."""
    directory = tmp_path_factory.mktemp("cosign-key")
    password = f"kp-{secrets.token_hex(10)}"
    key, public = generate_key_pair(directory, password)
    return key, password, public


@pytest.mark.engine
def test_no_key_or_a_wrong_password_fails_in_one_line_before_the_build(
    tmp_path: Path, key_pair: tuple[str, str, Path], open_registry: TestRegistry
) -> None:
    key, password, _ = key_pair
    project = tmp_path / "project"
    project.mkdir()
    # A Dockerfile whose build would fail (its COPY source is missing): the preflight checks that the context
    # and the Dockerfile exist, so only reaching the build itself could print "missing-source".
    (project / "app").mkdir()
    (project / "app" / "Dockerfile").write_text("FROM scratch\nCOPY missing-source /\n")
    (project / "pipeline.toml").write_text(
        f'[[images]]\nname = "acme/app"\ncontext = "app"\n\n'
        f'[[registries]]\nname = "r"\nurl = "{open_registry.url}/sign-preflight"\n\n'
        f'[sign]\nmethod = "key"\nkey_env = "{KEY_ENV}"\npassword_env = "{PASSWORD_ENV}"\n'
    )
    git(project, "init", "-q", "-b", "main")
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "app")
    cases = [
        ({PASSWORD_ENV: password}, f"environment variable {KEY_ENV} is not set"),
        (
            {KEY_ENV: key, PASSWORD_ENV: "wrong"},
            f"the password in {PASSWORD_ENV} does not open the key in {KEY_ENV}",
        ),
    ]
    for env, expected in cases:
        clean = {k: v for k, v in os.environ.items() if k not in (KEY_ENV, PASSWORD_ENV)}
        result = subprocess.run(
            [sys.executable, "-m", "pipeline", "--config", str(project / "pipeline.toml"), "release"],
            env={**clean, **env},
            cwd=project,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode != 0
        (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert "Traceback" not in result.stderr and "building" not in result.stderr
        assert expected in line and "[sign]" in line
        # Before the build: the missing COPY source would fail there otherwise.
        assert "missing-source" not in result.stderr
        report = project / "release.json"
        if report.exists():  # the wrong password is found while the registries are checked, before the build
            assert json.loads(report.read_text())["images"] == []
            report.unlink()
        else:
            assert "environment variable" in line  # a missing variable is found before anything else
        assert password not in result.stderr + result.stdout and "PRIVATE KEY" not in result.stderr
    # Not a key at all: the same check, in process (the command line path is the one above).
    with pytest.raises(SignError, match=f"{KEY_ENV} does not hold a usable cosign private key"):
        signer_for(load_config(project / "pipeline.toml"), {KEY_ENV: "not a key", PASSWORD_ENV: password})


# --- the predicate and the verification rules (pure) ------------------------------------------------------


def _outcome() -> ImageOutcome:
    targets = [
        {
            "registry": registry,
            "platform": platform,
            "reference": f"{registry}/acme/app@{DIGEST}",
            "passed": True,
            "error": None,
            "checks": [{"name": "c", "passed": True}, {"name": "arch", "passed": True}],
        }
        for registry in ("hub", "private")
        for platform in ("linux/amd64", "linux/arm64")
    ]
    return ImageOutcome(
        "acme/app",
        index_digest=DIGEST,
        platform_digests={"linux/amd64": AMD, "linux/arm64": ARM},
        smoke={"passed": True, "targets": targets},
        smoke_passed=True,
    )


def test_predicate_states_what_was_tested(tmp_path: Path) -> None:
    smoke_file = tmp_path / "smoke.yaml"
    smoke_file.write_text("schemaVersion: 2.0.0\n")
    predicate = smoke_predicate(_outcome(), version="1.2.3", revision="abc", smoke_file=smoke_file)
    assert predicate["index_digest"] == DIGEST and predicate["platforms"] == {
        "linux/amd64": AMD,
        "linux/arm64": ARM,
    }
    assert predicate["version"] == "1.2.3" and predicate["revision"] == "abc"
    assert (
        predicate["smoke"]["file_digest"] == "sha256:" + hashlib.sha256(smoke_file.read_bytes()).hexdigest()
    )
    assert {
        (t["registry"], t["platform"], t["checks"], t["failed"]) for t in predicate["smoke"]["targets"]
    } == {(r, p, 2, 0) for r in ("hub", "private") for p in ("linux/amd64", "linux/arm64")}
    assert coverage_problems(predicate, DIGEST, {"linux/amd64": AMD, "linux/arm64": ARM}) == []
    assert smoke_problems(predicate, ["linux/amd64", "linux/arm64"]) == []


def test_a_predicate_that_misses_a_platform_or_a_digest_does_not_cover_the_index() -> None:
    predicate = smoke_predicate(_outcome(), version="1", revision="r", smoke_file=None)
    del predicate["platforms"]["linux/arm64"]
    assert coverage_problems(predicate, DIGEST, {"linux/amd64": AMD, "linux/arm64": ARM}) == [
        "linux/arm64 is missing"
    ]
    other = "sha256:" + "b" * 64
    assert coverage_problems(predicate, other, {"linux/amd64": AMD})[0].startswith(f"it is for {DIGEST}")
    predicate["smoke"]["targets"] = [
        t for t in predicate["smoke"]["targets"] if t["platform"] != "linux/arm64"
    ]
    assert smoke_problems(predicate, ["linux/amd64", "linux/arm64"]) == [
        "linux/arm64 has no passing smoke test"
    ]


def test_report_outputs_and_summary_name_the_signature_and_attestation(tmp_path: Path) -> None:
    report = ReleaseReport(version="1.2.3", revision="abc", mode="publish", started_at="now")
    outcome = _outcome()
    outcome.signing = {
        "hub": {
            "reference": f"h/acme/app@{DIGEST}",
            "scheme": "tag",
            "signature": f"h/acme/app:{signature_tag(DIGEST, 'sig')}",
            "attestation": f"h/acme/app:{signature_tag(DIGEST, 'att')}",
            "predicate_type": PREDICATE_TYPE,
            "error": None,
        },
        "private": {
            "reference": "p",
            "scheme": "tag",
            "signature": None,
            "attestation": None,
            "error": "denied",
        },
    }
    report.images.append(outcome)
    assert report.to_json()["images"][0]["signing"]["hub"]["attestation"].endswith(".att")
    output, summary = tmp_path / "out", tmp_path / "summary.md"
    write_github_outputs(report, {"GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(summary)})
    text = output.read_text()
    assert f"h/acme/app:{signature_tag(DIGEST, 'sig')}" in text.split("signatures<<", 1)[1]
    assert f"h/acme/app:{signature_tag(DIGEST, 'att')}" in text.split("attestations<<", 1)[1]
    markdown = summary_markdown(report)
    assert "**Signed:**" in markdown and "(tag scheme)" in markdown and "FAILED: denied" in markdown


# --- end to end -----------------------------------------------------------------------------------------


class ArgvWatch:
    """Every command line of every process on this machine while a run lasts, sampled from /proc."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit():
                    with contextlib.suppress(OSError):  # the process ended meanwhile
                        self.seen.add(
                            (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                        )
            self._stop.wait(0.01)

    def __enter__(self) -> ArgvWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def cosign_recorder(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """A wrapper that records the argv of every cosign call of the pipeline, then runs the real cosign."""
    log = tmp_path / "cosign-argv.log"
    wrapper = tmp_path / "cosign-wrapper"
    wrapper.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> "{log}"\nexec "{ensure_cosign()}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    yield wrapper, log


def _docker_config(directory: Path, registry: TestRegistry) -> Path:
    """For the test's own cosign calls: the credentials of the authenticated registry, as `docker login` writes."""
    directory.mkdir()
    token = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
    (directory / "config.json").write_text(json.dumps({"auths": {registry.url: {"auth": token}}}))
    return directory


def _cosign(args: list[str], docker_config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [ensure_cosign(), *args],
        env={**os.environ, "DOCKER_CONFIG": str(docker_config)},
        capture_output=True,
        text=True,
        check=False,
    )


def _tamper_attestation(client: RegistryClient, repository: str, digest: str) -> None:
    """Rewrite the attestation's statement (a failed check count becomes 0) without re-signing it."""
    tag = signature_tag(digest, "att")
    manifest = client.get_manifest(repository, tag)
    document = json.loads(manifest.body)
    layer = document["layers"][0]
    envelope = client.get_blob_json(repository, layer["digest"])
    statement = json.loads(base64.b64decode(envelope["payload"]))
    statement["predicate"]["revision"] = "0" * 40
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    body = json.dumps(envelope).encode()
    blob = Path(os.environ.get("TMPDIR", "/tmp")) / f"tampered-{secrets.token_hex(4)}"
    blob.write_bytes(body)
    new_digest = "sha256:" + hashlib.sha256(body).hexdigest()
    BlobUploader(client, repository).upload_blob(new_digest, blob)
    blob.unlink()
    layer.update(digest=new_digest, size=len(body))
    new_body = json.dumps(document).encode()
    client.put_manifest(
        repository,
        tag,
        Manifest(manifest.media_type, new_body, "sha256:" + hashlib.sha256(new_body).hexdigest()),
    )


@pytest.mark.engine
def test_release_signs_and_attests_in_both_registries_and_verify_catches_forgeries(
    tmp_path: Path,
    base_image: str,
    open_registry: TestRegistry,
    auth_registry: TestRegistry,
    make_fault_proxy: ProxyFactory,
    key_pair: tuple[str, str, Path],
    cosign_recorder: tuple[Path, Path],
) -> None:
    key, key_password, public_key = key_pair
    wrapper, argv_log = cosign_recorder
    hub_proxy = make_fault_proxy(auth_registry.url)
    namespace = f"sign-{secrets.token_hex(3)}"
    project = make_project(
        tmp_path,
        base_image,
        f"""
[[registries]]
name = "hub"
url = "{hub_proxy.url}/{namespace}"
username_env = "TEST_HUB_USER"
password_env = "TEST_HUB_TOKEN"

[[registries]]
name = "private"
url = "{open_registry.url}/{namespace}"

[sign]
method = "key"
key_env = "{KEY_ENV}"
password_env = "{PASSWORD_ENV}"
public_key = "{public_key}"
""",
    )
    env = {
        "TEST_HUB_USER": auth_registry.username,
        "TEST_HUB_TOKEN": auth_registry.password,
        KEY_ENV: key,
        PASSWORD_ENV: key_password,
        "PIPELINE_COSIGN": str(wrapper),
        "PIPELINE_RETRY_ATTEMPTS": "2",
        "PIPELINE_RETRY_FIRST_DELAY": "0.1",
    }
    hub_repo, private_repo = (
        f"{hub_proxy.url}/{namespace}/{IMAGE}",
        f"{open_registry.url}/{namespace}/{IMAGE}",
    )
    hub = RegistryClient(auth_registry.url, Credentials(auth_registry.username, auth_registry.password))
    private = RegistryClient(open_registry.url)
    outputs: list[str] = []

    def human_tags(client: RegistryClient) -> list[str]:
        return [
            t
            for t in client.tags(f"{namespace}/{IMAGE}")
            if t != "buildcache" and not t.startswith("sha256-")
        ]

    with ArgvWatch() as argv:
        # 1. Signing fails in one registry (the hub refuses the signature's manifest): no tag moves anywhere.
        hub_proxy.always_fail("500", method="PUT", path=r"\.sig$")
        failed = run_pipeline(project, "release", env=env)
        outputs.append(failed.stdout + failed.stderr)
        assert failed.returncode != 0, outputs[-1][-3000:]
        (line,) = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
        assert "signing failed in hub" in line and "no tag was moved" in line and "signed in: private" in line
        report = json.loads((project / "release.json").read_text())
        assert report["status"] == "failed" and report["tags_moved"] == []
        signing = report["images"][0]["signing"]
        assert signing["hub"]["error"] and signing["private"]["signature"].endswith(".sig")
        assert human_tags(hub) == [] and human_tags(private) == []
        digest = report["images"][0]["index_digest"]

        # 2. Requiring a signature on that digest refuses it before any smoke test, naming the check.
        hub_proxy.heal()
        refused = run_pipeline(
            project, "release", "--digest", f"{IMAGE}={digest}", "--require-signature", env=env
        )
        outputs.append(refused.stdout + refused.stderr)
        assert refused.returncode != 0 and "signature check failed" in refused.stderr, outputs[-1][-2000:]
        assert json.loads((project / "release.json").read_text())["images"] == []  # nothing smoke-tested

        # 3. The rerun of the same digest completes it: signed and attested everywhere, then tagged.
        calls_before = len(argv_log.read_text().splitlines())
        done = run_pipeline(project, "release", "--digest", f"{IMAGE}={digest}", env=env)
        # Key decryptions for two registries: the key check, one signature and one attestation, both filed
        # in every registry by our client; no cosign run uploads anything.
        calls = argv_log.read_text().splitlines()[calls_before:]
        keyed = [c for c in calls if f"env://{KEY_ENV}" in c]
        assert sorted(c.split()[0] for c in keyed) == ["attest", "public-key", "sign"], keyed
        assert not [c for c in calls if c.startswith("attach")], calls
        outputs.append(done.stdout + done.stderr)
        assert done.returncode == 0, outputs[-1][-3000:]
        report_text = (project / "release.json").read_text()
        report = json.loads(report_text)
        assert report["status"] == "published"
        signing = report["images"][0]["signing"]
        for name, repo in (("hub", hub_repo), ("private", private_repo)):
            assert signing[name]["signature"] == f"{repo}:{signature_tag(digest, 'sig')}"
            assert signing[name]["attestation"] == f"{repo}:{signature_tag(digest, 'att')}"
            assert signing[name]["scheme"] == "tag" and signing[name]["error"] is None
        assert "1.2.3" in human_tags(hub) and "1.2.3" in human_tags(private)

        # 4. The cosign CLI itself accepts both, with the public key, in both registries.
        docker_config = _docker_config(tmp_path / "docker-config", auth_registry)
        for repo in (f"{auth_registry.url}/{namespace}/{IMAGE}", private_repo):
            verified = _cosign(
                ["verify", "--key", str(public_key), "--insecure-ignore-tlog=true", f"{repo}:1.2.3"],
                docker_config,
            )
            assert verified.returncode == 0, verified.stderr
            payload = json.loads(verified.stdout)[0]
            assert payload["critical"]["image"]["docker-manifest-digest"] == digest
            attested = _cosign(
                [
                    "verify-attestation",
                    "--key",
                    str(public_key),
                    "--insecure-ignore-tlog=true",
                    "--type",
                    PREDICATE_TYPE,
                    f"{repo}@{digest}",
                ],
                docker_config,
            )
            assert attested.returncode == 0, attested.stderr
            statement = json.loads(base64.b64decode(json.loads(attested.stdout.splitlines()[0])["payload"]))
            predicate = statement["predicateType"], statement["predicate"]
            assert predicate[0] == PREDICATE_TYPE and predicate[1]["version"] == "1.2.3"
            assert set(predicate[1]["platforms"]) == {"linux/amd64", "linux/arm64"}
            assert {
                (t["registry"], t["platform"]) for t in predicate[1]["smoke"]["targets"] if t["passed"]
            } == {(r, p) for r in ("hub", "private") for p in ("linux/amd64", "linux/arm64")}

        # 5. `pipeline verify` accepts the tag in both registries.
        for repo in (hub_repo, private_repo):
            ok = run_pipeline(project, "verify", f"{repo}:1.2.3", "--json", env=env)
            outputs.append(ok.stdout + ok.stderr)
            assert ok.returncode == 0, outputs[-1][-2000:]
            result = json.loads(ok.stdout)
            assert [c["name"] for c in result["checks"] if c["passed"]] == [
                "digest",
                "signature",
                "attestation",
                "platforms",
                "smoke",
            ]

        # 6. `pipeline smoke --require-signature` verifies first, then tests exactly the verified digest.
        smoke_json = tmp_path / "smoke.json"
        smoked = run_pipeline(
            project,
            "smoke",
            "--require-signature",
            "--registry",
            "private",
            "--platform",
            "linux/amd64",
            "--json",
            str(smoke_json),
            env=env,
        )
        outputs.append(smoked.stdout + smoked.stderr)
        assert smoked.returncode == 0, outputs[-1][-2000:]
        targets = json.loads(smoke_json.read_text())["targets"]
        assert [t["reference"] for t in targets] == [f"{private_repo}@{digest}"]

    # The key, its password and the registry password are on no command line, in no log, report or layer.
    recorded = argv_log.read_text()
    assert f"env://{KEY_ENV}" in recorded and "attest" in recorded
    key_body = "".join(key.splitlines()[1:-1])[:40]
    storage = [
        p
        for root in (open_registry.server.directory, auth_registry.server.directory)
        for p in root.rglob("*")
        if p.is_file()
    ]
    assert storage
    for secret in (key_body, key_password, auth_registry.password):
        for where, text in (
            ("cosign argv", recorded),
            ("process argv", "\n".join(argv.seen)),
            ("output", "\n".join(outputs)),
            ("report", report_text),
        ):
            assert secret not in text, f"a secret leaked into the {where}"
        for path in storage:
            assert secret.encode() not in path.read_bytes(), f"a secret is stored in the registry at {path}"

    # 7. A second image pushed under the same tag without signing fails verification, naming the check.
    subprocess.run(
        ["docker", "buildx", "imagetools", "create", "-t", f"{private_repo}:1.2.3", base_image],
        check=True,
        capture_output=True,
    )
    unsigned = run_pipeline(project, "verify", f"{private_repo}:1.2.3", env=env)
    assert unsigned.returncode != 0
    assert "signature check failed: cosign verify: no signatures found" in unsigned.stderr, unsigned.stderr
    refused_smoke = run_pipeline(project, "smoke", "--require-signature", "--registry", "private", env=env)
    assert refused_smoke.returncode != 0 and "refusing to run an unverified image" in refused_smoke.stderr
    assert "signature check failed" in refused_smoke.stderr and "passed" not in refused_smoke.stdout
    other = private.manifest_digest(f"{namespace}/{IMAGE}", "1.2.3")
    assert other is not None and other != digest

    # 8. A signature made for another digest, copied to this one's signature tag, is refused.
    repository = f"{namespace}/{IMAGE}"
    sig = private.get_manifest(repository, signature_tag(digest, "sig"))
    private.put_manifest(repository, signature_tag(other, "sig"), sig)
    copied = run_pipeline(project, "verify", f"{private_repo}@{other}", env=env)
    assert copied.returncode != 0
    assert (
        "signature check failed: cosign verify: no matching signatures: invalid or missing digest in claim"
        in copied.stderr
    )

    # 9. A tampered attestation fails the attestation check (in the authenticated registry).
    _tamper_attestation(hub, repository, digest)
    tampered = run_pipeline(project, "verify", f"{hub_repo}@{digest}", env=env)
    assert tampered.returncode != 0
    assert "attestation check failed: cosign verify-attestation: no matching attestations" in tampered.stderr

    # 10. A validly signed attestation that leaves out a platform fails the platforms check.
    predicate = json.loads(json.dumps(statement["predicate"]))
    del predicate["platforms"]["linux/arm64"]
    predicate_file = tmp_path / "partial.json"
    predicate_file.write_text(json.dumps(predicate))
    partial = subprocess.run(
        [
            ensure_cosign(),
            *attest_args(
                "key",
                f"{private_repo}@{digest}",
                predicate_file,
                key_env=KEY_ENV,
                tlog_upload=False,
                insecure=False,
            ),
        ],
        env={**os.environ, KEY_ENV: key, "COSIGN_PASSWORD": key_password},
        capture_output=True,
        text=True,
        check=False,
    )
    assert partial.returncode == 0, partial.stderr
    missing = run_pipeline(project, "verify", f"{private_repo}@{digest}", env=env)
    assert missing.returncode != 0
    assert "platforms check failed: linux/arm64 is missing" in missing.stderr, missing.stderr


def test_smoke_verifies_first_only_when_asked_or_required(tmp_path: Path) -> None:
    import argparse

    from pipeline.sign import verified_if_required

    targets = [f"127.0.0.1:1/acme/app@{DIGEST}"]
    config = _config(tmp_path, 'method = "key"\nkey_env = "K"\npassword_env = "P"')
    args = argparse.Namespace(config=config.path, references=[], require_signature=False, key=None)
    assert verified_if_required(targets, args) == {}  # nothing asked: nothing verified
    required = _config(tmp_path, 'method = "key"\nkey_env = "K"\npassword_env = "P"\nrequire = true')
    args = argparse.Namespace(config=required.path, references=[], require_signature=False, key=None)
    with pytest.raises(ConfigError, match="no public key to verify with"):
        verified_if_required(targets, args)  # [sign] require = true asks for it, and says what is missing


# --- made ahead of the gate, uploaded after it ---------------------------------------------------------------


def _processes_naming(text: str) -> list[str]:
    """Command lines of this machine's processes that mention `text` (cosign runs name their reference)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if text in line and "pytest" not in line:
                found.append(line)
    return found


def _wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.mark.engine
def test_signing_ahead_uploads_nothing_before_the_gate_and_redoes_what_a_hiccup_broke(
    tmp_path: Path,
    base_image: str,
    open_registry: TestRegistry,
    make_fault_proxy: ProxyFactory,
    key_pair: tuple[str, str, Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    key, password, public_key = key_pair
    client = RegistryClient(open_registry.url)
    digest = client.manifest_digest("test/base", "1")
    assert digest is not None
    proxy = make_fault_proxy(open_registry.url)
    registry = RegistryConfig(name="private", url=f"{proxy.url}/test")
    repository = registry.repository("base")
    settings = SignConfig(method="key", key_env=KEY_ENV, password_env=PASSWORD_ENV)
    signer = Signer(ensure_cosign(), settings, {KEY_ENV: key, "COSIGN_PASSWORD": password})

    def signature_tags() -> set[str]:
        return {t for t in client.tags("test/base") if t.startswith(digest.replace(":", "-"))}

    before = signature_tags()
    # 1. A gate that fails: what was made ahead is dropped, nothing reached the registry, no cosign is left.
    dropped = SigningAhead(signer, "base", [registry], digest)
    dropped.sign_ahead()
    _wait_until(lambda: bool(proxy.requests(method="GET", path="/manifests/")))  # cosign is at work
    time.sleep(1.0)
    dropped.cancel()
    assert proxy.requests(method="PUT") == [] and proxy.requests(method="POST") == []
    assert signature_tags() == before
    assert _processes_naming(repository) == []

    # 2. The registry fails while the signature is made ahead: after the gate it is made again (the warning
    # says so), and uploaded with the attestation; the cosign CLI accepts both.
    proxy.always_fail("503", method="GET", path="/manifests/")
    signing = SigningAhead(signer, "base", [registry], digest)
    signing.sign_ahead()
    # The signature's cosign reads the manifest and gives up; the attestation's (a digest needs no lookup)
    # opens the key and waits for its predicate, so it meets the healed registry. The first 503 comes first:
    # a process in the middle of exec (nice -> cosign) shows an empty command line in /proc for a moment.
    _wait_until(lambda: proxy.injected_total > 0)
    _wait_until(lambda: not [line for line in _processes_naming(repository) if "--upload=false" in line])
    assert [line for line in _processes_naming(repository) if "--predicate -" in line]
    proxy.heal()
    with caplog.at_level("WARNING"):
        (record,) = signing.publish(json.dumps({"index_digest": digest}))
    assert record.error is None, record.error
    assert "made ahead of the gate); doing it again now" in caplog.text
    assert {signature_tag(digest, "sig"), signature_tag(digest, "att")} <= signature_tags()
    docker_config = tmp_path / "docker-config"
    docker_config.mkdir()
    for args in (
        ["verify", "--key", str(public_key), "--insecure-ignore-tlog=true", f"{repository}@{digest}"],
        [
            "verify-attestation",
            "--key",
            str(public_key),
            "--insecure-ignore-tlog=true",
            "--type",
            PREDICATE_TYPE,
            f"{repository}@{digest}",
        ],
    ):
        checked = _cosign(args, docker_config)
        assert checked.returncode == 0, checked.stderr


@pytest.mark.engine
def test_a_failed_gate_uploads_no_signature_made_ahead(
    tmp_path: Path,
    base_image: str,
    open_registry: TestRegistry,
    key_pair: tuple[str, str, Path],
    cosign_recorder: tuple[Path, Path],
) -> None:
    key, key_password, _ = key_pair
    wrapper, argv_log = cosign_recorder
    namespace = f"unsigned-{secrets.token_hex(3)}"
    sign = f'[sign]\nmethod = "key"\nkey_env = "{KEY_ENV}"\npassword_env = "{PASSWORD_ENV}"\n'
    registries = f'[[registries]]\nname = "private"\nurl = "{open_registry.url}/{namespace}"\n\n{sign}'
    project = make_project(tmp_path, base_image, registries, smoke=FAILING_SMOKE)
    env = {KEY_ENV: key, PASSWORD_ENV: key_password, "PIPELINE_COSIGN": str(wrapper)}
    result = run_pipeline(project, "release", env=env)
    assert result.returncode != 0 and "no tag was moved" in result.stderr, result.stderr[-2000:]
    recorded = argv_log.read_text()
    # Made ahead while the smoke tests ran (so the test proves they were dropped, not never made) ...
    assert "--upload=false" in recorded and "--predicate -" in recorded, recorded
    # ... and never uploaded: no attach, no signature or attestation tag, no cosign left running.
    assert "attach" not in recorded
    assert "dropped the signature and attestation made ahead of the gate" in result.stderr
    assert [
        t for t in RegistryClient(open_registry.url).tags(f"{namespace}/{IMAGE}") if t.startswith("sha256-")
    ] == []
    assert _processes_naming(namespace) == []


@pytest.mark.engine
def test_our_uploads_are_cosigns_tag_scheme_and_a_rerun_replaces_the_smoke_statement(
    tmp_path: Path, base_image: str, open_registry: TestRegistry, key_pair: tuple[str, str, Path]
) -> None:
    """What cosign signs and our client files: the cosign CLI verifies both; a second smoke statement of
    the same digest replaces the first (as `cosign attest --replace`), while a statement of another
    predicate type and a signature cosign uploaded itself stay beside ours."""
    key, password, public_key = key_pair
    client = RegistryClient(open_registry.url)
    digest = client.manifest_digest("test/base", "1")
    assert digest is not None
    repository = f"upl{secrets.token_hex(3)}/base"
    copied = client.get_manifest("test/base", digest)
    for child in copied.document.get("manifests") or []:
        _copy_manifest(client, "test/base", repository, child["digest"])
    client.put_manifest(repository, digest, copied)
    reference = f"{open_registry.url}/{repository}@{digest}"
    env = {**os.environ, KEY_ENV: key, "COSIGN_PASSWORD": password}
    flags = [
        "--key",
        f"env://{KEY_ENV}",
        "--tlog-upload=false",
        "--allow-http-registry",
        "--allow-insecure-registry",
    ]
    docker_config = tmp_path / "docker-config"
    docker_config.mkdir()

    def cosign(*args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [ensure_cosign(), *args],
            input=stdin,
            env={**env, "DOCKER_CONFIG": str(docker_config)},
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    # cosign uploads one signature itself; ours goes beside it.
    cosign("sign", "--yes", *flags, reference)
    held = Held(tmp_path / "sig", tmp_path / "payload.json")
    cosign(
        "sign",
        "--yes",
        *flags,
        "--upload=false",
        "--output-signature",
        str(held.signature),
        "--output-payload",
        str(held.payload),
        reference,
    )
    attach(
        client,
        repository,
        digest,
        "sig",
        signature_layer(held.payload.read_bytes(), held.signature.read_text()),
    )
    signatures = client.get_manifest(repository, signature_tag(digest, "sig")).document["layers"]
    assert len(signatures) == 2

    other_type = "https://example.invalid/other/v1"
    cosign("attest", "--yes", *flags, "--type", other_type, "--predicate", "-", reference, stdin='{"x": 1}')
    for run in ("first", "second"):
        envelope = cosign(
            "attest",
            "--yes",
            *flags,
            "--type",
            PREDICATE_TYPE,
            "--predicate",
            "-",
            "--no-upload=true",
            reference,
            stdin=json.dumps({"run": run}),
        )
        layer = attestation_layer(envelope.encode(), PREDICATE_TYPE)
        attach(client, repository, digest, "att", layer, replaces=same_predicate(layer))
    layers = client.get_manifest(repository, signature_tag(digest, "att")).document["layers"]
    assert sorted(entry["annotations"]["predicateType"] for entry in layers) == sorted(
        [other_type, PREDICATE_TYPE]
    )

    checks = [
        "--key",
        str(public_key),
        "--insecure-ignore-tlog=true",
        "--allow-http-registry",
        "--allow-insecure-registry",
    ]
    verified = json.loads(cosign("verify", *checks, "--output", "json", reference))
    assert len(verified) == 2
    statements = [
        json.loads(base64.b64decode(json.loads(line)["payload"]))
        for line in cosign("verify-attestation", *checks, "--type", PREDICATE_TYPE, reference).splitlines()
        if line.strip()
    ]
    assert [s["predicate"] for s in statements] == [{"run": "second"}], statements


def _copy_manifest(client: RegistryClient, source: str, target: str, digest: str) -> None:
    manifest = client.get_manifest(source, digest)
    for blob in [manifest.document["config"], *manifest.document["layers"]]:
        response = client._request(
            "POST",
            f"/v2/{target}/blobs/uploads/?mount={blob['digest']}&from={source}",
            f"repository:{target}:pull,push repository:{source}:pull",
            body=b"",
        )
        assert response.status_code == 201, response.status_code
    client.put_manifest(target, digest, manifest)
