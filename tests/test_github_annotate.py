"""The glue between GitHub Actions and the CLI: running the CLI without deadlocks, and its annotations."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from pipeline.build import buildx_argv, spec_for
from pipeline.config import LoadedConfig, load_config
from pipeline.errors import ConfigError
from pipeline.github_annotate import (
    auth_variables,
    check_inputs,
    fan_out_matrix,
    install_cosign,
    prepare,
    registry_auths,
    runner_mapping,
    secret_environment,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
MEGABYTES = 4


def _noisy_child(path: Path) -> Path:
    """A stand-in for `python -m pipeline`: megabytes on stderr first (as buildx's progress), then on
    stdout, a lint finding on stdout and an `error:` line last, exit 3."""
    path.write_text(
        f"#!{sys.executable}\n"
        + textwrap.dedent(
            f"""
            import sys
            line = "#7 [linux/arm64 2/3] RUN make " + "x" * 90 + "\\n"
            count = {MEGABYTES} * 1024 * 1024 // len(line)
            for _ in range(count):
                sys.stderr.write(line)
            for _ in range(count):
                sys.stdout.write(line)
            sys.stdout.write("Dockerfile:3: warning PL101: copy the lockfile first\\n")
            sys.stdout.flush()
            sys.stderr.write("error: build of acme/app failed: exit code: 2\\n")
            raise SystemExit(3)
            """
        )
    )
    path.chmod(0o755)
    return path


def test_run_reads_both_streams_at_once_megabytes_each(tmp_path: Path) -> None:
    child = _noisy_child(tmp_path / "child")
    driver = (
        "import os, sys\n"
        "from pipeline.github_annotate import run\n"
        f"raise SystemExit(run(['build'], dict(os.environ), python={str(child)!r}))\n"
    )
    env = {**os.environ, "GITHUB_WORKSPACE": str(tmp_path)}
    # Before the fix this hung: stdout was read to its end while the child blocked on a full stderr pipe.
    result = subprocess.run(
        [sys.executable, "-c", driver],
        check=False,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 3
    noise = "#7 [linux/arm64 2/3] RUN make " + "x" * 90 + "\n"
    expected = (MEGABYTES * 1024 * 1024 // len(noise)) * len(noise)
    # Every byte passed through, in order, on its own stream.
    assert result.stderr.count(noise) * len(noise) == expected
    assert result.stdout.count(noise) * len(noise) == expected
    lines = result.stdout.splitlines()
    assert "::warning file=Dockerfile,line=3::PL101: copy the lockfile first" in lines
    assert "::error::build of acme/app failed: exit code: 2" in lines


# --- the inputs on top of the config ------------------------------------------------------------------

CONFIG = """
[labels]
licenses = "MIT"

[[images]]
name = "acme/app"
context = "app"

[[images]]
name = "acme-app"
context = "app"
platforms = ["linux/amd64", "linux/arm/v7"]
"""


# Docker Hub takes namespace/name: these images can go under docker.io/acme.
FLAT = CONFIG.replace('name = "acme/app"', 'name = "app"').replace('name = "acme-app"', 'name = "tool"')


def _project(tmp_path: Path, config: str = CONFIG) -> Path:
    (tmp_path / "app").mkdir(exist_ok=True)
    (tmp_path / "app" / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "pipeline.toml").write_text(config)
    return tmp_path / "pipeline.toml"


def _prepared(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **inputs: str) -> LoadedConfig:
    monkeypatch.chdir(tmp_path)
    path, _ = prepare(inputs)
    return load_config(path)


def test_build_push_action_inputs_reach_the_build_spec(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _project(tmp_path)
    config = _prepared(
        tmp_path,
        monkeypatch,
        PIPELINE_INPUT_TAGS="stable, candidate",
        PIPELINE_INPUT_LABELS="com.example.team=imaging\ncom.example.note=a=b",
        PIPELINE_INPUT_ANNOTATIONS="com.example.ticket=OPS-1",
        PIPELINE_INPUT_BUILD_ARGS="APP_ENV=prod",
        PIPELINE_INPUT_TARGET="runtime",
        PIPELINE_INPUT_PROVENANCE="false",
        PIPELINE_INPUT_SBOM="true",
        PIPELINE_INPUT_CACHE_FROM="type=registry,ref=127.0.0.1:5000/cache:app",
        PIPELINE_INPUT_CACHE_TO="type=inline",
        PIPELINE_INPUT_SECRETS="npm_token=s3cr3t-value",
    )
    image = config.image("acme/app")
    assert image.tags.raw == ("stable", "candidate")
    assert image.labels == {"com.example.team": "imaging", "com.example.note": "a=b"}
    assert image.annotations == {"com.example.ticket": "OPS-1"}
    spec = spec_for(config, image)
    assert spec.build_args == {"APP_ENV": "prod"} and spec.target == "runtime"
    assert (spec.provenance, spec.sbom) == (False, True)
    assert spec.cache_from == ({"type": "registry", "ref": "127.0.0.1:5000/cache:app"},)
    assert spec.cache_to == {"type": "inline"}
    # The secret's value stays out of the config and the command line: buildx reads it from the environment.
    assert spec.secrets == ("id=npm_token,env=PIPELINE_BUILD_SECRET_NPM_TOKEN",)
    assert "s3cr3t-value" not in config.path.read_text()
    argv = buildx_argv(spec, output={}, load_as="x:dev", metadata=tmp_path / "m.json", docker_cmd=["docker"])
    assert "s3cr3t-value" not in " ".join(argv)
    assert secret_environment({"PIPELINE_INPUT_SECRETS": "npm_token=s3cr3t-value"}) == {
        "PIPELINE_BUILD_SECRET_NPM_TOKEN": "s3cr3t-value"
    }


def test_registry_auths_name_variables_and_mask_only_passwords(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _project(
        tmp_path,
        FLAT
        + '\n[[registries]]\nname = "hub"\nurl = "docker.io/acme"\nusername_env = "MY_USER"\npassword_env = "MY_TOKEN"\n',
    )
    auths = "- registry: docker.io\n  username: acme\n  password: dckr_pat_secret\n"
    monkeypatch.chdir(tmp_path)
    path, commands = prepare({"PIPELINE_REGISTRY_AUTHS": auths})
    (hub,) = load_config(path).pipeline.registries
    assert (hub.username_env, hub.password_env) == auth_variables(0)
    assert commands == ["::add-mask::dckr_pat_secret"]  # the user name is the namespace: never masked
    assert secret_environment({"PIPELINE_REGISTRY_AUTHS": auths}) == {
        "PIPELINE_AUTH_0_USERNAME": "acme",
        "PIPELINE_AUTH_0_PASSWORD": "dckr_pat_secret",
    }
    with pytest.raises(ConfigError) as raised:
        registry_auths({"PIPELINE_REGISTRY_AUTHS": "- registry: [dckr_pat_secret"})
    assert "dckr_pat_secret" not in str(raised.value) and "registry-auths" in str(raised.value)


def test_sign_inputs_name_the_key_variables_and_mask_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _project(tmp_path)
    monkeypatch.chdir(tmp_path)
    pem = "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nc2VjcmV0LWtleS1ib2R5\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----"
    secrets = {"COSIGN_PRIVATE_KEY": pem, "COSIGN_PASSWORD": "key-pass-word"}
    path, commands = prepare({"PIPELINE_INPUT_SIGN": "key", **secrets})
    sign = load_config(path).pipeline.sign
    assert (sign.method, sign.key_env, sign.password_env) == ("key", "COSIGN_PRIVATE_KEY", "COSIGN_PASSWORD")
    # Every line of the key and the password, masked by the config step; in the derived config only names.
    assert set(commands) == {f"::add-mask::{line}" for line in [*pem.splitlines(), "key-pass-word"]}
    assert "c2VjcmV0" not in path.read_text() and "key-pass-word" not in path.read_text()


def test_sign_inputs_keep_or_replace_the_configs_sign(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _project(
        tmp_path,
        CONFIG
        + '\n[sign]\nmethod = "key"\nkey_env = "MY_KEY"\npassword_env = "MY_PASSWORD"\npublic_key = "c.pub"\n',
    )
    kept = _prepared(tmp_path, monkeypatch).pipeline.sign
    assert (kept.method, kept.key_env, kept.password_env) == ("key", "MY_KEY", "MY_PASSWORD")
    renamed = _prepared(tmp_path, monkeypatch, PIPELINE_INPUT_SIGN_KEY_ENV="CI_KEY").pipeline.sign
    assert (renamed.key_env, renamed.password_env, renamed.public_key) == ("CI_KEY", "MY_PASSWORD", "c.pub")
    # Keyless on GitHub: the names of a local key do not apply (the config would refuse them with keyless).
    keyless = _prepared(tmp_path, monkeypatch, PIPELINE_INPUT_SIGN="keyless").pipeline.sign
    assert (keyless.method, keyless.key_env, keyless.password_env) == ("keyless", None, None)


def test_cosign_is_installed_only_when_the_release_signs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _project(tmp_path)
    unsigned = _prepared(tmp_path, monkeypatch, PIPELINE_INPUT_SIGN_KEY_ENV="COSIGN_PRIVATE_KEY")
    assert unsigned.pipeline.sign.method is None  # a key's name alone does not switch signing on
    assert install_cosign(unsigned, {}) is False
    signed = _prepared(tmp_path, monkeypatch, PIPELINE_INPUT_SIGN="keyless")
    assert install_cosign(signed, {}) is True
    assert install_cosign(signed, {"PIPELINE_INPUT_INSTALL_COSIGN": "false"}) is False  # PATH or provisioned
    assert install_cosign(signed, {"PIPELINE_INPUT_PUSH": "false"}) is False  # nothing is signed locally
    assert install_cosign(signed, {"PIPELINE_INPUT_DRY_RUN": "true"}) is False


@pytest.mark.parametrize(
    ("inputs", "named"),
    [
        ({"PIPELINE_INPUT_IMAGES": "nope"}, "input images: no image named 'nope'"),
        ({"PIPELINE_INPUT_PLATFORMS": "linux/s390"}, "input platforms: unknown platform 'linux/s390'"),
        ({"PIPELINE_INPUT_LABELS": "no equals sign"}, "input labels: 'no equals sign' is not KEY=value"),
        ({"PIPELINE_INPUT_PROVENANCE": "maybe"}, "input provenance: 'maybe'"),
        ({"PIPELINE_INPUT_SIGN": "gpg"}, "input sign: 'gpg' is not key, keyless or empty"),
        ({"PIPELINE_INPUT_INSTALL_COSIGN": "yes"}, "input install-cosign: 'yes' is not true, false or empty"),
        ({"PIPELINE_INPUT_RUNNERS": "[1]"}, None),  # only the matrix reads runners
        # A pull request from a fork: no secrets, a registry that needs them, push left on.
        (
            {"PIPELINE_INPUT_REGISTRIES": '[[registries]]\nname = "hub"\nurl = "docker.io/acme"\n'},
            "registry hub: no credentials for docker.io; pass registry-auths",
        ),
        (
            {
                "PIPELINE_INPUT_REGISTRIES": '[[registries]]\nname = "p"\nurl = "r.example:5000/x"\nusername_env = "U"\npassword_env = "P"\n'
            },
            "registry p: U is empty",
        ),
        # Docker Hub takes namespace/name: a registries input that would make it three levels.
        (
            {"PIPELINE_INPUT_REGISTRIES": '[[registries]]\nname = "hub"\nurl = "docker.io/acme/deep"\n'},
            "action inputs: registries[0].url: 'docker.io/acme/deep': Docker Hub names are namespace/repository",
        ),
    ],
)
def test_bad_inputs_are_one_annotation_naming_the_input(
    tmp_path: Path, inputs: dict[str, str], named: str | None
) -> None:
    _project(tmp_path, FLAT)
    env = {k: v for k, v in os.environ.items() if k not in ("U", "P")} | {
        "GITHUB_WORKSPACE": str(tmp_path),
        **inputs,
    }
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.github_annotate", "prepare"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    errors = [line for line in result.stdout.splitlines() if line.startswith("::error")]
    if named is None:
        assert result.returncode == 0, result.stdout + result.stderr
        return
    assert result.returncode != 0 and len(errors) == 1, result.stdout + result.stderr
    assert named in errors[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / ".pipeline-action.toml").exists()  # nothing left for a cleanup step to miss


def test_push_false_needs_no_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _project(tmp_path, FLAT)
    registries = '[[registries]]\nname = "hub"\nurl = "docker.io/acme"\n'
    config = _prepared(
        tmp_path, monkeypatch, PIPELINE_INPUT_REGISTRIES=registries, PIPELINE_INPUT_PUSH="false"
    )
    assert [r.name for r in config.pipeline.registries] == ["hub"]


def test_ci_release_publishes_two_level_docker_hub_names(monkeypatch: pytest.MonkeyPatch) -> None:
    """ci.yml's release: this repository's images under `docker.io/<namespace>`, as Docker Hub takes them."""
    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "ci.yml").read_text())
    (step,) = [s for s in workflow["jobs"]["release"]["steps"] if s.get("id") == "release"]
    registries = step["with"]["registries"].replace("${{ vars.DOCKERHUB_NAMESPACE }}", "acme")
    registries = registries.replace("${{ vars.PRIVATE_REGISTRY }}", "registry.example.com/acme")
    # The user name is a variable (not masked); only the token is a secret.
    assert step["env"]["DOCKERHUB_USERNAME"] == "${{ vars.DOCKERHUB_USERNAME }}"
    monkeypatch.chdir(REPO_ROOT)
    path, _ = prepare({"PIPELINE_INPUT_REGISTRIES": registries, "PIPELINE_INPUT_PUSH": "false"})
    try:
        config = load_config(path)
        check_inputs(config, {"PIPELINE_INPUT_PUSH": "false"})
        hub = next(r for r in config.pipeline.registries if r.host == "docker.io")
        assert all(hub.repository(i.name).count("/") == 2 for i in config.pipeline.images)
    finally:
        path.unlink()


# --- the fan-out matrix -------------------------------------------------------------------------------


def test_matrix_names_never_collide_and_native_jobs_never_emulate(tmp_path: Path) -> None:
    config = load_config(_project(tmp_path))
    matrix = fan_out_matrix(config, [], runner_mapping('{"linux/arm64": "my-arm-runner"}'))["include"]
    assert len({entry["slug"] for entry in matrix}) == len(matrix) == 4
    assert len({entry["image_slug"] for entry in matrix}) == 2  # acme/app and acme-app stay apart
    by_platform = {(e["image"], e["platform"]): e for e in matrix}
    assert by_platform["acme/app", "linux/amd64"] | {} == by_platform["acme/app", "linux/amd64"]
    assert (
        by_platform["acme/app", "linux/amd64"]["runner"],
        by_platform["acme/app", "linux/amd64"]["emulate"],
    ) == ("ubuntu-24.04", False)
    assert (
        by_platform["acme/app", "linux/arm64"]["runner"],
        by_platform["acme/app", "linux/arm64"]["emulate"],
    ) == ("my-arm-runner", False)
    assert (
        by_platform["acme-app", "linux/arm/v7"]["runner"],
        by_platform["acme-app", "linux/arm/v7"]["emulate"],
    ) == ("ubuntu-24.04", True)
    # No image's download pattern (`<image_slug>--*`) picks up another image's digests.
    for entry in matrix:
        owners = {e["image"] for e in matrix if e["slug"].startswith(entry["image_slug"] + "--")}
        assert owners == {entry["image"]}
    with pytest.raises(ConfigError, match="input runners: unknown platform 'linux/sparc'"):
        runner_mapping('{"linux/sparc": "x"}')
