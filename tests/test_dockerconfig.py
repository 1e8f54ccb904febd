"""The throwaway docker config keeps the user's pull credentials, holds no secret, and our helper answers docker."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.dockerconfig import (
    HELPER_NAME,
    USER_CONFIG_ENV,
    VARIABLES_ENV,
    add_login,
    isolated_docker_config,
    lookup,
    normalized_server,
    remove_stale_configs,
    server_key,
    throwaway_settings,
)
from tests.fixtures.registries import TestRegistry
from tests.test_release import IMAGE, make_project, run_pipeline


def _auth(username: str, password: str) -> str:
    return base64.b64encode(f"{username}:{password}".encode()).decode()


def test_user_helpers_stay_and_stored_secrets_are_routed_to_ours() -> None:
    user = {
        "credsStore": "desktop",
        "credHelpers": {"123.dkr.ecr.us-east-1.amazonaws.com": "ecr-login", "ghcr.io": "gh"},
        "auths": {
            "ghcr.io": {"auth": _auth("me", "s1")},  # the user's own helper for it wins, as in docker
            "registry.example.com": {"auth": _auth("me", "s2")},
            "https://index.docker.io/v1/": {},  # credsStore bookkeeping, no secret
        },
        "proxies": {"default": {"httpProxy": "http://proxy:3128"}},
    }
    settings = throwaway_settings(user)
    assert settings["credsStore"] == "desktop" and settings["proxies"] == user["proxies"]
    assert settings["credHelpers"] == {
        "123.dkr.ecr.us-east-1.amazonaws.com": "ecr-login",
        "ghcr.io": "gh",
        "registry.example.com": HELPER_NAME,
    }
    assert settings["auths"] == {"https://index.docker.io/v1/": {}}
    assert "s1" not in json.dumps(settings) and _auth("me", "s2") not in json.dumps(settings)


@pytest.mark.parametrize(
    ("server", "normal", "key"),
    [
        ("127.0.0.1:5000", "127.0.0.1:5000", "127.0.0.1:5000"),
        ("http://127.0.0.1:5000/v2/", "127.0.0.1:5000", "127.0.0.1:5000"),
        ("https://index.docker.io/v1/", "docker.io", "https://index.docker.io/v1/"),
        ("registry-1.docker.io", "docker.io", "https://index.docker.io/v1/"),
        ("docker.io", "docker.io", "https://index.docker.io/v1/"),
    ],
)
def test_server_names(server: str, normal: str, key: str) -> None:
    assert normalized_server(server) == normal
    assert server_key(server) == key


def test_lookup_prefers_the_pipelines_login_then_the_users_file(tmp_path: Path) -> None:
    user_file = tmp_path / "config.json"
    user_file.write_text(
        json.dumps(
            {
                "auths": {
                    "https://index.docker.io/v1/": {"auth": _auth("hubme", "hubpw")},
                    "tok.example": {"identitytoken": "id-tok"},
                    "127.0.0.1:5000": {"auth": _auth("old", "oldpw")},
                }
            }
        )
    )
    environ = {
        USER_CONFIG_ENV: str(user_file),
        VARIABLES_ENV: json.dumps({"127.0.0.1:5000": ["U", "P"]}),
        "U": "ci",
        "P": "cipw",
    }
    assert lookup("127.0.0.1:5000", environ) == ("ci", "cipw")
    assert lookup("registry-1.docker.io", environ) == ("hubme", "hubpw")
    assert lookup("tok.example", environ) == ("<token>", "id-tok")
    assert lookup("elsewhere.example", environ) is None
    assert lookup("127.0.0.1:5000", {**environ, "P": ""}) == ("old", "oldpw")  # unset: the user's own


def test_throwaway_config_holds_no_secret_and_puts_everything_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    user_dir = tmp_path / "user-docker"
    user_dir.mkdir()
    user_text = json.dumps({"auths": {"private.example": {"auth": _auth("me", "user-secret")}}})
    (user_dir / "config.json").write_text(user_text)
    monkeypatch.setenv("DOCKER_CONFIG", str(user_dir))
    path_before = os.environ["PATH"]
    with isolated_docker_config() as directory:
        add_login("127.0.0.1:5999", ("CI_USER", "CI_TOKEN"), {"CI_USER": "ci", "CI_TOKEN": "run-secret"})
        # A test's own `docker login` into its throwaway config (no credsStore: docker writes `auths`).
        settings = json.loads((directory / "config.json").read_text())
        settings["auths"] = {"fixture.example": {"auth": _auth("fx", "fixture-secret")}}
        (directory / "config.json").write_text(json.dumps(settings))
        with isolated_docker_config() as nested:  # a release inside a test's own throwaway config
            assert lookup("fixture.example", os.environ) == ("fx", "fixture-secret")
            assert "fixture-secret" not in (nested / "config.json").read_text()
            assert lookup("private.example", os.environ) == ("me", "user-secret")
            assert lookup("127.0.0.1:5999", os.environ) == ("ci", "run-secret")
            assert nested != directory
        contents = b"".join(
            f.read_bytes() for f in directory.rglob("*") if f.is_file() and not f.is_symlink()
        )
        for secret in ("user-secret", "run-secret", _auth("me", "user-secret")):
            assert secret.encode() not in contents
        assert lookup("fixture.example", os.environ) is None  # the nested run's files are gone with it
        helper = directory / "bin" / f"docker-credential-{HELPER_NAME}"
        answer = subprocess.run(
            [str(helper), "get"], input="127.0.0.1:5999", capture_output=True, text=True, check=True
        )
        assert json.loads(answer.stdout) == {
            "ServerURL": "127.0.0.1:5999",
            "Username": "ci",
            "Secret": "run-secret",
        }
        missing = subprocess.run(
            [str(helper), "get"], input="nobody.example", capture_output=True, text=True, check=False
        )
        assert missing.returncode == 1 and "credentials not found" in missing.stdout
    assert os.environ["DOCKER_CONFIG"] == str(user_dir) and os.environ["PATH"] == path_before
    assert not [key for key in os.environ if key.startswith("PIPELINE_LOGIN_")]
    assert VARIABLES_ENV not in os.environ
    assert (user_dir / "config.json").read_text() == user_text
    assert not directory.exists()


def test_add_login_never_edits_the_users_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    with pytest.raises(RuntimeError, match="isolated_docker_config"):
        add_login("127.0.0.1:5000", ("U", "P"))


@pytest.mark.engine
def test_private_base_behind_htpasswd_builds_with_the_users_own_login(
    tmp_path: Path, base_image: str, open_registry: TestRegistry, auth_registry: TestRegistry
) -> None:
    # The pipeline's own login reaches the docker CLI through our helper: copy the base into the auth registry.
    private_base = f"{auth_registry.url}/private/base:1"
    env = {"HUB_U": auth_registry.username, "HUB_P": auth_registry.password}
    with isolated_docker_config():
        add_login(auth_registry.url, ("HUB_U", "HUB_P"), env)
        subprocess.run(
            ["docker", "buildx", "imagetools", "create", "-t", private_base, base_image],
            check=True,
            capture_output=True,
        )
    # The user logged in with `docker login` long ago: the secret is in their own config's auths.
    user_dir = tmp_path / "user-docker"
    user_dir.mkdir()
    auths = {auth_registry.url: {"auth": _auth(auth_registry.username, auth_registry.password)}}
    (user_dir / "config.json").write_text(json.dumps({"auths": auths}))
    project = make_project(
        tmp_path,
        private_base,
        f'[[registries]]\nname = "private"\nurl = "{open_registry.url}/private-base"\n',
    )
    result = run_pipeline(
        project, "release", env={"DOCKER_CONFIG": str(user_dir), "PIPELINE_STATE_DIR": str(tmp_path / "s")}
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert auth_registry.password not in result.stdout + result.stderr
    report = json.loads((project / "release.json").read_text())
    assert set(report["images"][0]["platforms"]) == {"linux/amd64", "linux/arm64"}
    assert json.loads((user_dir / "config.json").read_text()) == {"auths": auths}  # untouched
    assert report["images"][0]["name"] == IMAGE and report["status"] == "published"


def test_helper_usage_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.credhelper", "what"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 1 and "get|store|erase|list" in result.stderr


def test_stale_configs_of_dead_runs_are_removed_live_ones_kept(tmp_path: Path) -> None:
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    configs = {}
    for name, marker in (
        ("dead", dead.stdout.strip()),
        ("alive", str(os.getpid())),
        ("old", None),
        ("new", None),
    ):
        directory = tmp_path / f"pipeline-docker-config-{name}"
        directory.mkdir()
        (directory / "config.json").write_text("{}")
        if marker is not None:
            (directory / ".pipeline-throwaway").write_text(marker)
        configs[name] = directory
    os.utime(configs["old"], (0, 0))
    removed = remove_stale_configs(tmp_path)
    assert sorted(p.name for p in removed) == ["pipeline-docker-config-dead", "pipeline-docker-config-old"]
    assert configs["alive"].is_dir() and configs["new"].is_dir()
