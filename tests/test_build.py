"""Builds: buildx's output reaches the user as it comes, its cause reaches the error line, and a build that
failed because a registry did is tried again."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import logging
import os
import re
from pathlib import Path

import pytest
from python_on_whales import DockerClient

from pipeline.build import BuildSpec, build, build_failure_cause
from pipeline.errors import BuildError
from tests.fixtures.faultproxy import FaultPlan, ProxyFactory


def _context(tmp_path: Path, dockerfile: str) -> BuildSpec:
    context = tmp_path / "context"
    context.mkdir()
    (context / "Dockerfile").write_text(dockerfile)
    return BuildSpec(
        image="acme/broken",
        context=context,
        dockerfile=context / "Dockerfile",
        platforms=("linux/amd64",),
        provenance=False,
    )


def test_cause_is_the_last_error_and_its_step() -> None:
    # The shape of buildx 0.13's plain progress on a failing RUN (the step names its platform when several
    # are built); the end-to-end test below checks the real thing.
    tail = [
        "#6 [linux/arm64 2/2] RUN make\n",
        "#6 0.2 make: *** No rule to make target. Stop.\n",
        '#6 ERROR: process "/bin/sh -c make" did not complete successfully: exit code: 2\n',
        "------\n",
        " > [linux/arm64 2/2] RUN make:\n",
        "0.2 make: *** No rule to make target. Stop.\n",
        "------\n",
        'ERROR: failed to solve: process "/bin/sh -c make" did not complete successfully: exit code: 2\n',
    ]
    assert build_failure_cause(tail) == (
        'process "/bin/sh -c make" did not complete successfully: exit code: 2 (in [linux/arm64 2/2] RUN make)'
    )
    assert build_failure_cause([]) == "buildx exited without output"


@pytest.mark.engine
def test_failed_build_streams_its_output_and_names_the_cause(
    tmp_path: Path, base_image: str, docker_engine: DockerClient, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _context(tmp_path, f"FROM {base_image}\nRUN echo building-the-thing && exit 3\n")
    with pytest.raises(BuildError) as raised:
        build(spec, output_dir=tmp_path / "out", client=docker_engine)
    message = str(raised.value)
    assert "see the build output above" not in message
    assert "did not complete successfully: exit code: 3" in message, message
    assert "RUN echo building-the-thing && exit 3" in message, message
    # The progress went to the user as well, not only into the message.
    assert "building-the-thing" in capsys.readouterr().err


@pytest.mark.engine
def test_build_retries_when_the_base_registry_fails_for_a_while(
    tmp_path: Path,
    base_image: str,
    docker_engine: DockerClient,
    make_fault_proxy: ProxyFactory,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("PIPELINE_RETRY_FIRST_DELAY", "0.01")
    registry, _, path = base_image.partition("/")
    # Every manifest request answers 503 at first: BuildKit gives up on the first build attempt.
    proxy = make_fault_proxy(registry, FaultPlan(always=True, faults=("503",), path="/manifests/"))
    spec = _context(tmp_path, f"FROM {proxy.url}/{path}\nRUN echo {tmp_path.name} > /built\n")
    caplog.set_level(logging.WARNING)

    def heal_after_the_first_failure(record: logging.LogRecord) -> bool:
        if "retry 1/" in record.getMessage():
            proxy.heal()
        return True

    logging.getLogger("pipeline.retry").addFilter(heal_after_the_first_failure)
    try:
        built = build(spec, output_dir=tmp_path / "out", client=docker_engine)
    finally:
        logging.getLogger("pipeline.retry").removeFilter(heal_after_the_first_failure)
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", built.index_digest)
    assert proxy.injected["503"] >= 1
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert retries and "manifests/1: 503" in retries[0], retries


@pytest.mark.engine
def test_build_secret_reaches_run_through_the_environment_only(
    tmp_path: Path, base_image: str, docker_engine: DockerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = "s3cret-" + os.urandom(8).hex()  # a new one every run: no cached RUN can answer for it
    monkeypatch.setenv("PIPELINE_BUILD_SECRET_NPM", value)
    digest = hashlib.sha256(value.encode()).hexdigest()
    spec = dataclasses.replace(
        _context(
            tmp_path,
            f"FROM {base_image}\nARG EXPECTED\n"
            'RUN --mount=type=secret,id=npm sha256sum /run/secrets/npm | grep -q "^$EXPECTED " && echo ok > /checked\n',
        ),
        build_args={"EXPECTED": digest},  # the secret's hash, so that the RUN can tell it got the right one
        secrets=("id=npm,env=PIPELINE_BUILD_SECRET_NPM",),
    )
    built = build(spec, output_dir=tmp_path / "out", client=docker_engine)
    assert built.layout is not None
    layers = [blob for blob in (built.layout / "blobs" / "sha256").iterdir() if blob.is_file()]
    # The RUN saw the secret (it compared it), and no layer holds it.
    assert all(value.encode() not in _unpacked(blob) for blob in layers if _is_layer(blob))


def _is_layer(blob: Path) -> bool:
    return blob.read_bytes()[:2] == b"\x1f\x8b"  # gzip: a layer, not a JSON manifest or config


def _unpacked(blob: Path) -> bytes:
    return gzip.decompress(blob.read_bytes())
