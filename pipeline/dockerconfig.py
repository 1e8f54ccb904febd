"""The throwaway Docker client config of one run, and the credential helper that keeps it free of secrets.

A run points DOCKER_CONFIG at a private folder so that its logins never land in the user's config or
keychain. That folder must still let the docker CLI and buildx pull what the user can pull (private bases,
caches): it keeps the user's `credsStore`, `credHelpers` and credential-free `auths` entries as they are.
Secrets never enter it. Registries with a login (the pipeline's own, and the user's `auths` entries that
hold one) are routed to `docker-credential-pipeline`, a helper of ours (docker's credential-helper
protocol: `get` reads a server name on stdin, answers JSON) that reads the secret from the environment or
from the user's own config file at the moment docker asks. A run killed with SIGKILL leaves only names.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from pipeline import credhelper
from pipeline.credhelper import (
    DOCKER_HUB,
    HELPER_NAME,
    LOGIN_ENV_PREFIX,
    USER_CONFIG_ENV,
    VARIABLES_ENV,
    lookup,
    normalized_server,
)
from pipeline.process import pid_exists

__all__ = [
    "HELPER_NAME",
    "USER_CONFIG_ENV",
    "VARIABLES_ENV",
    "add_login",
    "isolated_docker_config",
    "lookup",
    "normalized_server",
    "remove_stale_configs",
    "server_key",
    "throwaway_settings",
]

_MARKER = ".pipeline-throwaway"
_DOCKER_HUB_KEY = "https://index.docker.io/v1/"


def server_key(server: str) -> str:
    """A server name as docker spells it in config.json (`https://index.docker.io/v1/` for Docker Hub)."""
    return _DOCKER_HUB_KEY if normalized_server(server) == DOCKER_HUB else normalized_server(server)


def user_config_dir(environ: Mapping[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(environ.get("DOCKER_CONFIG") or str(Path.home() / ".docker"))


def _has_secret(entry: object) -> bool:
    return isinstance(entry, dict) and bool(entry.get("auth") or entry.get("identitytoken"))


def throwaway_settings(user_settings: Mapping[str, object]) -> dict[str, object]:
    """The user's settings with every stored secret replaced by a route to our helper (pure)."""
    settings = dict(user_settings)
    auths = dict(settings.get("auths") or {})  # type: ignore[call-overload]
    helpers = dict(settings.get("credHelpers") or {})  # type: ignore[call-overload]
    for server in [s for s, entry in auths.items() if _has_secret(entry)]:
        del auths[server]
        helpers.setdefault(server, HELPER_NAME)  # a helper the user named for it wins, as in docker
    if auths:
        settings["auths"] = auths
    else:
        settings.pop("auths", None)
    if helpers:
        settings["credHelpers"] = helpers
    return settings


def _helper_script(python: str) -> str:
    # -I -S: no site, no user paths; the helper is one stdlib-only file. docker (and cosign, and buildx) run it
    # for every registry operation that needs a login, so its start-up counts: a third of the time that
    # `python -m pipeline.dockerconfig` took (site and the package's imports), 38 ms against 108 here.
    script = shlex.quote(credhelper.__file__)
    return f'#!/bin/sh\nexec {shlex.quote(python)} -I -S {script} "$@"\n'


def is_throwaway(directory: Path) -> bool:
    return (directory / _MARKER).is_file()


_PREFIX = "pipeline-docker-config-"
# A throwaway config of an older version (no marker) may hold a `docker login`; after a day it is no run's.
_UNMARKED_STALE_SECONDS = 86400.0


def remove_stale_configs(parent: Path | None = None, now: float | None = None) -> list[Path]:
    """Remove throwaway configs left by runs that were killed (SIGKILL leaves the folder, never a secret in
    ours; older versions' could hold a login). A config whose run is still alive is left alone."""
    removed = []
    now = time.time() if now is None else now
    for directory in Path(parent or tempfile.gettempdir()).glob(f"{_PREFIX}*"):
        try:
            if directory.stat().st_uid != os.getuid():
                continue
            marker = directory / _MARKER
            if marker.is_file():
                stale = not pid_exists(int(marker.read_text().strip() or "0"))
            else:
                stale = now - directory.stat().st_mtime > _UNMARKED_STALE_SECONDS
        except (OSError, ValueError):
            continue
        if stale:
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory)
    return removed


@contextlib.contextmanager
def isolated_docker_config() -> Iterator[Path]:
    """A throwaway DOCKER_CONFIG (and our helper on PATH) for one run; the environment is put back after."""
    original = user_config_dir()
    nested = is_throwaway(original)  # inside another run's config: the user's file is still the outer one
    # Inside another run's config, that config is the one to extend (it may hold a `docker login` of its
    # own), and the files the helper reads are the outer ones plus it.
    user_file = original / "config.json"
    user_files = (
        [*os.environ.get(USER_CONFIG_ENV, "").split(os.pathsep), str(user_file)]
        if nested
        else [str(user_file)]
    )
    saved = {key: os.environ.get(key) for key in ("DOCKER_CONFIG", "PATH", VARIABLES_ENV, USER_CONFIG_ENV)}
    saved.update((key, value) for key, value in os.environ.items() if key.startswith(LOGIN_ENV_PREFIX))
    remove_stale_configs()
    with tempfile.TemporaryDirectory(prefix=_PREFIX) as scratch:
        directory = Path(scratch)
        directory.chmod(0o700)
        user_settings: dict[str, object] = {}
        with contextlib.suppress(OSError, ValueError):
            user_settings = json.loads(user_file.read_text())
        (directory / "config.json").write_text(json.dumps(throwaway_settings(user_settings)))
        (directory / _MARKER).write_text(str(os.getpid()))
        for name in ("cli-plugins", "buildx", "contexts"):
            if (original / name).exists():
                (directory / name).symlink_to(original / name)
        helper = directory / "bin" / f"docker-credential-{HELPER_NAME}"
        helper.parent.mkdir()
        helper.write_text(_helper_script(sys.executable))
        helper.chmod(0o700)
        os.environ["DOCKER_CONFIG"] = str(directory)
        os.environ["PATH"] = f"{helper.parent}{os.pathsep}{os.environ.get('PATH', '')}"
        os.environ[USER_CONFIG_ENV] = os.pathsep.join(f for f in user_files if f)
        os.environ[VARIABLES_ENV] = os.environ.get(VARIABLES_ENV, "{}") if nested else "{}"
        try:
            yield directory
        finally:
            for key in [k for k in os.environ if k.startswith(LOGIN_ENV_PREFIX) and k not in saved]:
                del os.environ[key]
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def add_login(
    server: str,
    variables: tuple[str, str],
    environ: Mapping[str, str] | None = None,
) -> None:
    """Route `server` to our helper in the current throwaway config; the helper reads the two variables.

    No secret is written anywhere: the config names the helper, the environment holds the values. Values
    from a mapping other than os.environ are copied into the process environment (under our own names,
    removed when the throwaway config goes), since the helper runs as a child of the docker CLI.
    """
    username_variable, password_variable = variables
    if environ is not None and environ is not os.environ:
        index = sum(1 for key in os.environ if key.startswith(LOGIN_ENV_PREFIX)) // 2
        for name, source in (("USERNAME", username_variable), ("PASSWORD", password_variable)):
            os.environ[f"{LOGIN_ENV_PREFIX}{index}_{name}"] = environ[source]
        username_variable = f"{LOGIN_ENV_PREFIX}{index}_USERNAME"
        password_variable = f"{LOGIN_ENV_PREFIX}{index}_PASSWORD"
    directory = user_config_dir()
    if not is_throwaway(directory):
        raise RuntimeError("add_login needs isolated_docker_config(): it never edits the user's own config")
    config_file = directory / "config.json"
    settings = json.loads(config_file.read_text())
    key = server_key(server)
    settings.setdefault("credHelpers", {})[key] = HELPER_NAME
    if isinstance(settings.get("auths"), dict):
        settings["auths"].pop(key, None)
    config_file.write_text(json.dumps(settings))
    known = json.loads(os.environ.get(VARIABLES_ENV) or "{}")
    known[normalized_server(server)] = [username_variable, password_variable]
    os.environ[VARIABLES_ENV] = json.dumps(known)
