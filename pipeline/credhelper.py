"""`docker-credential-pipeline get|store|erase|list`: the credential helper of a run's throwaway config.

Docker's credential-helper protocol: `get` reads a server name on stdin and answers JSON with the login.
The answer comes from the environment of the run (the pipeline's own logins, by variable name) or from the
user's own config file, at the moment docker asks: no secret is ever written to the throwaway config.

Standard library only, and nothing of the `pipeline` package: docker, buildx and cosign start this file for
every registry operation that needs a login, as `python -I -S credhelper.py`, and each start counts
(pipeline.dockerconfig writes the config that names it).
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Mapping

HELPER_NAME = "pipeline"
# Set in the environment of one run: {server: [username variable, password variable]} (names, not values).
VARIABLES_ENV = "PIPELINE_CREDENTIAL_VARIABLES"
# The user's own config.json files, whose `auths` the helper answers from.
USER_CONFIG_ENV = "PIPELINE_USER_DOCKER_CONFIG"
# Where a login whose values came in a mapping other than os.environ is put for the helper to read.
LOGIN_ENV_PREFIX = "PIPELINE_LOGIN_"
DOCKER_HUB = "docker.io"


def normalized_server(server: str) -> str:
    """`127.0.0.1:5000` for `http://127.0.0.1:5000/v2/`; `docker.io` for every spelling of Docker Hub."""
    host = server.strip().split("://", 1)[-1].split("/", 1)[0]
    return DOCKER_HUB if host in ("docker.io", "index.docker.io", "registry-1.docker.io") else host


def lookup(server: str, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """(username, secret) for a server: the pipeline's own login first, then the user's stored one."""
    wanted = normalized_server(server)
    variables = json.loads(environ.get(VARIABLES_ENV) or "{}")
    if wanted in variables:
        user_variable, password_variable = variables[wanted]
        username, password = environ.get(user_variable), environ.get(password_variable)
        if username and password:
            return username, password
    for user_file in environ.get(USER_CONFIG_ENV, "").split(os.pathsep):
        found = _stored_login(user_file, wanted) if user_file else None
        if found is not None:
            return found
    return None


def _stored_login(user_file: str, wanted: str) -> tuple[str, str] | None:
    """The login `docker login` stored for a server in a config file's `auths`, if any."""
    try:
        with open(user_file, encoding="utf-8") as stream:  # noqa: PTH123 (pathlib costs its import time)
            auths = json.load(stream).get("auths") or {}
    except (OSError, ValueError, AttributeError):
        return None
    for key, entry in auths.items():
        if normalized_server(key) != wanted or not isinstance(entry, dict):
            continue
        if entry.get("identitytoken"):
            return "<token>", str(entry["identitytoken"])
        if entry.get("auth"):
            username, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            return username, password
    return None


def main(argv: list[str] | None = None) -> int:
    action = (argv if argv is not None else sys.argv[1:] or [""])[0]
    if action == "get":
        server = sys.stdin.read().strip()
        found = lookup(server, os.environ)
        if found is None:
            print("credentials not found in native keychain")  # the text docker treats as "no login"
            return 1
        print(json.dumps({"ServerURL": server, "Username": found[0], "Secret": found[1]}))
        return 0
    if action in ("store", "erase"):
        sys.stdin.read()  # logins are never stored: they live in the environment of the run
        return 0
    if action == "list":
        print("{}")
        return 0
    print(f"usage: docker-credential-{HELPER_NAME} get|store|erase|list", file=sys.stderr)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
