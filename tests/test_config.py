"""Config loading: every kind of bad input is one line naming the file and the key path."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import DEFAULT_PLATFORMS, load_config
from pipeline.errors import ConfigError

VALID = """
[[images]]
name = "hello"
context = "app"

[[registries]]
name = "hub"
url = "docker.io/acme"
username_env = "HUB_USER"
password_env = "HUB_TOKEN"
"""


def write(tmp_path: Path, text: str, name: str = "pipeline.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_valid_config_has_defaults(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, VALID))
    image = loaded.pipeline.images[0]
    assert image.platforms == DEFAULT_PLATFORMS
    assert loaded.dockerfile_path(image) == tmp_path / "app" / "Dockerfile"
    registry = loaded.pipeline.registries[0]
    assert (registry.host, registry.namespace) == ("docker.io", "acme")
    assert registry.repository("hello") == "docker.io/acme/hello"


def test_pyproject_tool_section(tmp_path: Path) -> None:
    write(tmp_path, '[project]\nname = "x"\n\n[[tool.pipeline.images]]\nname = "x"\n', "pyproject.toml")
    assert load_config(cwd=tmp_path).pipeline.images[0].name == "x"


def test_pipeline_toml_wins_over_pyproject(tmp_path: Path) -> None:
    write(tmp_path, '[[tool.pipeline.images]]\nname = "from-pyproject"\n', "pyproject.toml")
    write(tmp_path, '[[images]]\nname = "from-pipeline-toml"\n')
    assert load_config(cwd=tmp_path).pipeline.images[0].name == "from-pipeline-toml"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[[images]]\nname = "x"\ncontxt = "."\n', "images[0].contxt: unknown key"),
        ('[[images]]\nname = "x"\nplatforms = "linux/amd64"\n', "images[0].platforms: wrong type"),
        (
            '[[images]]\nname = "x"\nplatforms = ["linux/sparc"]\n',
            "images[0].platforms: unknown platform 'linux/sparc'",
        ),
        ('[[images]]\nname = "Hello World"\n', "images[0].name: 'Hello World' is not a valid image name"),
        (
            '[[images]]\nname = "x"\nbuild_args = { API_TOKEN = "x" }\n',
            "build arg 'API_TOKEN' looks like a secret",
        ),
        ("images = []\n", "images: "),
        ("", "images: required key is missing"),
        (
            '[[images]]\nname = "x"\n[[registries]]\nname = "r"\nurl = "https://r.io"\n',
            "registries[0].url: 'https://r.io'",
        ),
        (
            '[[images]]\nname = "x"\n[[registries]]\nname = "r"\nurl = "r.io"\npassword_env = "hunter2 secret"\n',
            "must name an environment variable",
        ),
        (
            '[[images]]\nname = "x"\n[[registries]]\nname = "r"\nurl = "r.io"\npassword_env = "P"\n',
            "set both username_env and password_env",
        ),
        ('[[images]]\nname = "x"\n[[images]]\nname = "x"\n', "name 'x' is declared twice"),
        ("[[images]\n", "not valid TOML"),
    ],
)
def test_bad_config_is_one_line_naming_file_and_key(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert "\n" not in message
    assert str(path) in message
    assert expected in message


def test_pyproject_errors_name_the_tool_table(tmp_path: Path) -> None:
    path = write(tmp_path, '[[tool.pipeline.images]]\nname = "x"\nbogus = 1\n', "pyproject.toml")
    with pytest.raises(ConfigError, match=r"tool\.pipeline\.images\[0\]\.bogus: unknown key"):
        load_config(path)


def test_missing_config(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no pipeline\.toml"):
        load_config(cwd=tmp_path)
    with pytest.raises(ConfigError, match=r"config file not found"):
        load_config(tmp_path / "nope.toml")


def test_cli_prints_one_line_and_exits_non_zero(tmp_path: Path) -> None:
    path = write(tmp_path, '[[images]]\nname = "x"\nplatforms = ["linux/sparc"]\n')
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "--config", str(path), "plan"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "linux/sparc" in result.stderr and str(path) in result.stderr


# --- issue 17: secrets in the wrong field, hostile URLs, one problem counted once ----------------------------

SECRET_LIKE = [
    "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z5A",
    "github_pat_11ABCDEFG0abcdefghijkl_mnopqrstuv",
    "hunter2 correct horse",
    "dckr_pat_Q2xYz1AbC3dEf4GhI5",
    "xK9mP2qR7vT4wY8zB3nL6jH1",
]


@pytest.mark.parametrize("value", SECRET_LIKE, ids=range(len(SECRET_LIKE)))
@pytest.mark.parametrize("field", ["password_env", "username_env"])
def test_a_secret_pasted_into_an_env_field_is_refused_and_never_printed(
    tmp_path: Path, field: str, value: str
) -> None:
    other = "username_env" if field == "password_env" else "password_env"
    text = f'[[images]]\nname = "x"\n[[registries]]\nname = "r"\nurl = "r.io"\n{field} = "{value}"\n{other} = "OK_NAME"\n'
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, text))
    message = str(raised.value)
    assert value not in message and value[:8] not in message
    assert f"registries[0].{field}: must name an environment variable" in message


def test_ordinary_variable_names_are_still_accepted(tmp_path: Path) -> None:
    for name in ("DOCKERHUB_TOKEN", "GHCR_PAT", "registry_password", "CI_REGISTRY_PASSWORD_2024"):
        text = f'[[images]]\nname = "x"\n[[registries]]\nname = "r"\nurl = "r.io"\nusername_env = "U"\npassword_env = "{name}"\n'
        assert load_config(write(tmp_path, text)).pipeline.registries[0].password_env == name


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("127.0.0.1:70000/x", "port 70000 is outside 1-65535"),
        ("127.0.0.1:0", "port 0 is outside 1-65535"),
        ("127.0.0.1:5000/../etc", "namespace part '..'"),
        ("127.0.0.1:5000/a/./b", "namespace part '.'"),
        ("registry..example", "is not a valid host name"),
        ("-bad.example/x", "is not a valid host name"),
    ],
)
def test_hostile_registry_urls_are_one_line(tmp_path: Path, url: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)) as raised:
        load_config(write(tmp_path, f'[[images]]\nname = "x"\n[[registries]]\nname = "r"\nurl = "{url}"\n'))
    assert "\n" not in str(raised.value)


def test_one_wrong_value_is_one_problem_not_two(tmp_path: Path) -> None:
    """`dockerfile = 5` fails `str | None` twice in pydantic's eyes, and empties `images`: still one problem."""
    with pytest.raises(ConfigError) as raised:
        load_config(write(tmp_path, '[[images]]\nname = "x"\ndockerfile = 5\n'))
    assert "more problem" not in str(raised.value)
    with pytest.raises(ConfigError, match=r"\(and 1 more problem\)"):
        load_config(write(tmp_path, '[[images]]\nname = "x"\ndockerfile = 5\ntarget = 6\n'))


@pytest.mark.parametrize(
    ("url", "image", "problem"),
    [
        ("docker.io/acme", "team/app", "'acme/team/app'"),
        ("index.docker.io/acme", "a/b", "'acme/a/b'"),
        ("docker.io", "org/team/app", "'org/team/app'"),
    ],
)
def test_docker_hub_takes_two_level_names_only_refused_at_load(
    tmp_path: Path, url: str, image: str, problem: str
) -> None:
    path = write(tmp_path, f'[[images]]\nname = "{image}"\n[[registries]]\nname = "hub"\nurl = "{url}"\n')
    with pytest.raises(ConfigError) as raised:
        load_config(path)
    message = str(raised.value)
    assert "Docker Hub" in message and "namespace/repository" in message and problem in message
    assert "\n" not in message


def test_docker_hub_namespace_of_two_levels_is_refused_and_official_images_go_under_library(
    tmp_path: Path,
) -> None:
    from pipeline.publish import repository_path

    path = write(tmp_path, '[[images]]\nname = "app"\n[[registries]]\nname = "hub"\nurl = "docker.io/a/b"\n')
    with pytest.raises(ConfigError, match=r"registries\[0\]\.url: 'docker\.io/a/b': Docker Hub names"):
        load_config(path)
    path = write(tmp_path, '[[images]]\nname = "app"\n[[registries]]\nname = "hub"\nurl = "docker.io"\n')
    (registry,) = load_config(path).pipeline.registries
    assert repository_path(registry, "app") == "library/app"
    path = write(tmp_path, '[[images]]\nname = "app"\n[[registries]]\nname = "hub"\nurl = "docker.io/acme"\n')
    (registry,) = load_config(path).pipeline.registries
    assert repository_path(registry, "app") == "acme/app"


def test_ca_file_resolves_against_the_config_folder_and_must_exist(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "corp-ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    registry = '[[registries]]\nname = "corp"\nurl = "registry.corp.example:5000"\nca_file = "{}"\n'
    loaded = load_config(write(tmp_path, VALID + registry.format("certs/corp-ca.pem")))
    assert loaded.pipeline.registries[1].ca_file == tmp_path / "certs" / "corp-ca.pem"
    with pytest.raises(ConfigError, match=r"registries\[1\]\.ca_file: .*missing\.pem' is not a file"):
        load_config(write(tmp_path, VALID + registry.format("certs/missing.pem")))
