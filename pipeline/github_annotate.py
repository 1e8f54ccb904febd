"""The glue between GitHub Actions and the CLI, for `action.yml` and `.github/workflows/release.yml`.

`python -m pipeline.github_annotate prepare`  validates the config and the inputs (one `::error` naming the
    file and line, or the input, on failure), masks the passwords and build secrets, applies the inputs
    (registries, platforms, tags, labels, annotations, build args, target, cache, attestations, build secret
    ids, registry-auths logins, signing) as a derived config beside the original, and gives its path as the
    step output `config`, and whether the release will sign as `install-cosign`.
`python -m pipeline.github_annotate run -- ARGS`  runs `python -m pipeline ARGS` (build secrets and logins
    in its environment), streams both of its outputs, and turns its lint findings and its `error:` line into
    annotations on the file and line they name.
`python -m pipeline.github_annotate matrix`  the fan-out matrix (image x platform -> runner, per-call
    artifact prefix).
`python -m pipeline.github_annotate dry-run-outputs | labels-output`  outputs computed from the plan.

Everything the workflows need from their inputs comes in through environment variables, never through
`${{ }}` in a script, so that no input can inject shell.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import secrets
import sys
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from pipeline.config import SUPPORTED_PLATFORMS, LoadedConfig, find_config, load_config
from pipeline.errors import ConfigError
from pipeline.github import DERIVED_CONFIG_NAME, annotation, mask_commands
from pipeline.process import run_streaming

# Native GitHub-hosted runners per platform; anything else builds under QEMU on the amd64 runner.
NATIVE_RUNNERS = {"linux/amd64": "ubuntu-24.04", "linux/arm64": "ubuntu-24.04-arm"}
DEFAULT_RUNNER = "ubuntu-24.04"

_LINT_LINE = re.compile(
    r"^(?P<path>[^\s:][^:]*):(?P<line>[0-9]+): (?P<severity>error|warning|info) (?P<code>\S+): (?P<message>.*)$"
)
_ERROR_LINE = re.compile(r"^error: (?P<message>.*)$")
_KEY_SEGMENT = re.compile(r"([A-Za-z0-9_-]+)((?:\[[0-9]+\])*)")
_HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\"-]+?)\s*\]\]?\s*(?:#.*)?$")
_LEVEL = {"error": "error", "warning": "warning", "info": "notice"}


def split_list(text: str | None) -> list[str]:
    """Names from an input: separated by commas, spaces or newlines, as people type them in YAML."""
    return [item for item in re.split(r"[\s,]+", text or "") if item]


def workspace(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("GITHUB_WORKSPACE") or Path.cwd()).resolve()


def shown_path(path: Path, environ: Mapping[str, str]) -> str:
    """The path as GitHub wants it in an annotation: relative to the checkout."""
    resolved = path.resolve()
    try:
        return resolved.relative_to(workspace(environ)).as_posix()
    except ValueError:
        return resolved.as_posix()


# --- where a config key is written --------------------------------------------------------------------


def _parse_key_path(key_path: str) -> list[tuple[str, int | None]]:
    parts: list[tuple[str, int | None]] = []
    for name, indexes in _KEY_SEGMENT.findall(key_path):
        found = re.findall(r"\[([0-9]+)\]", indexes)
        parts.append((name, int(found[-1]) if found else None))
    return parts


def locate_key(text: str, key_path: str) -> int | None:
    """The 1-based line of `images[0].platforms` (or the nearest enclosing table) in a TOML text.

    A heuristic for annotations, not a TOML parser: it follows `[table]` and `[[array]]` headers and counts
    array entries, which is how every config in practice is written.
    """
    parts = _parse_key_path(key_path)
    if not parts:
        return None
    lines = text.splitlines()
    array_counts: dict[str, int] = {}
    current = ""  # the table the following keys belong to, with array indexes, e.g. "images[1].tags"
    best: int | None = None
    wanted_tables = []
    prefix = ""
    for name, index in parts[:-1]:
        prefix = f"{prefix}.{name}" if prefix else name
        if index is not None:
            prefix = f"{prefix}[{index}]"
        wanted_tables.append(prefix)
    last_name, last_index = parts[-1]
    full = f"{wanted_tables[-1]}.{last_name}" if wanted_tables else last_name
    if last_index is not None:
        full_indexed = f"{full}[{last_index}]"
        wanted_tables.append(full_indexed)
    for number, line in enumerate(lines, start=1):
        header = _HEADER.match(line)
        if header:
            name = header[2].replace('"', "")
            base = _indexed(name, array_counts)
            if header[1] == "[[":
                array_counts[name] = array_counts.get(name, -1) + 1
                current = f"{base}[{array_counts[name]}]"
                # Entries of an array restart the count of the arrays nested in them.
                for key in [k for k in array_counts if k.startswith(name + ".")]:
                    del array_counts[key]
            else:
                current = base
            if current in wanted_tables:
                best = number
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or "=" not in stripped:
            continue
        key = stripped.split("=", 1)[0].strip().strip('"')
        here = f"{current}.{key}" if current else key
        if here == full or here in wanted_tables:
            return number
    return best


def _indexed(dotted: str, counts: Mapping[str, int]) -> str:
    """`images.tags` inside the second [[images]] -> `images[1].tags`."""
    pieces = dotted.split(".")
    out: list[str] = []
    for position, piece in enumerate(pieces):
        out.append(piece)
        so_far = ".".join(pieces[: position + 1])
        if position < len(pieces) - 1 and so_far in counts:
            out[-1] = f"{piece}[{counts[so_far]}]"
    return ".".join(out)


def config_error_annotation(message: str, environ: Mapping[str, str], *, original: Path | None = None) -> str:
    """`path: key.path: problem` (the ConfigError shape) as an annotation on that file and line."""
    match = re.match(r"^(?P<path>[^:]+\.toml): (?:(?P<key>[A-Za-z0-9_.\[\]-]+): )?", message)
    if not match:
        return annotation("error", message)
    path = Path(match["path"])
    if path.name == DERIVED_CONFIG_NAME and original is not None:
        # The derived file only adds the action's inputs: a problem there is one of the inputs.
        return annotation(
            "error",
            f"action inputs: {message.removeprefix(match['path'] + ': ')}",
            file=shown_path(original, environ),
        )
    line: int | None = None
    key = match["key"]
    if key and path.is_file():
        try:
            line = locate_key(path.read_text(), key)
        except OSError:
            line = None
    return annotation("error", message, file=shown_path(path, environ), line=line or 1)


# --- prepare ------------------------------------------------------------------------------------------


def toml_dump(document: Mapping[str, Any]) -> str:
    """TOML for the config's shapes: tables, arrays of tables, strings, numbers, booleans, string lists."""
    out: list[str] = []
    _dump_table(document, (), out)
    return "\n".join(out).lstrip("\n") + "\n"


def _key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else json.dumps(name)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(item, dict) for item in value)


def _dump_table(table: Mapping[str, Any], path: tuple[str, ...], out: list[str]) -> None:
    for name, value in table.items():
        if not isinstance(value, dict) and not _is_table_array(value):
            out.append(f"{_key(name)} = {_value(value)}")
    for name, value in table.items():
        if isinstance(value, dict):
            out += ["", f"[{'.'.join(_key(p) for p in (*path, name))}]"]
            _dump_table(value, (*path, name), out)
        elif _is_table_array(value):
            for item in value:
                out += ["", f"[[{'.'.join(_key(p) for p in (*path, name))}]]"]
                _dump_table(item, (*path, name), out)


def _pipeline_document(path: Path) -> dict[str, Any]:
    document = tomllib.loads(path.read_text())
    if path.name == "pyproject.toml":
        section = document.get("tool", {}).get("pipeline", {})
        return dict(section) if isinstance(section, dict) else {}
    return document


def derive_document(
    document: dict[str, Any], *, registries_toml: str, use_registries: Sequence[str], platforms: Sequence[str]
) -> dict[str, Any]:
    """The config with the action's inputs applied; the original file is never written."""
    derived = dict(document)
    registries: list[dict[str, Any]] = [dict(r) for r in derived.get("registries", []) if isinstance(r, dict)]
    if registries_toml.strip():
        try:
            extra = tomllib.loads(registries_toml).get("registries", [])
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(
                f"input registries: not valid TOML ({error}); give [[registries]] tables"
            ) from None
        if not isinstance(extra, list) or not extra:
            raise ConfigError("input registries: no [[registries]] table in it")
        added = {str(r.get("name")) for r in extra if isinstance(r, dict)}
        registries = [r for r in registries if str(r.get("name")) not in added] + [dict(r) for r in extra]
    if use_registries:
        known = {str(r.get("name")) for r in registries}
        unknown = [name for name in use_registries if name not in known]
        if unknown:
            raise ConfigError(
                f"input use-registries: no registry named {unknown[0]!r} (declared: {', '.join(sorted(known)) or 'none'})"
            )
        registries = [r for r in registries if str(r.get("name")) in use_registries]
    if registries:
        derived["registries"] = registries
    else:
        derived.pop("registries", None)
    if platforms:
        derived["images"] = [{**image, "platforms": list(platforms)} for image in derived.get("images", [])]
    return derived


def _pairs(name: str, text: str) -> dict[str, str]:
    """`KEY=value` lines of an input (build-args, labels, annotations, secrets), as build-push-action takes them."""
    pairs: dict[str, str] = {}
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        key, sep, value = line.strip().partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"input {name}: {line.strip().split('=')[0]!r} is not KEY=value; give one per line"
            )
        pairs[key.strip()] = value
    return pairs


def _switch(name: str, text: str) -> bool | None:
    value = (text or "").strip().lower()
    if value in ("", "auto"):
        return None
    if value in ("true", "false"):
        return value == "true"
    raise ConfigError(f"input {name}: {text!r} is not true, false or empty")


def secret_variable(secret_id: str) -> str:
    """The environment variable a build secret of the `secrets` input travels in to the pipeline."""
    return "PIPELINE_BUILD_SECRET_" + re.sub(r"[^A-Za-z0-9]", "_", secret_id).upper()


def apply_build_inputs(derived: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """build-push-action's inputs on top of the config: tags, labels, annotations, build-args, target,
    secrets (ids only: the values stay in the environment), cache-from/cache-to, provenance, sbom."""
    tags = split_list(environ.get("PIPELINE_INPUT_TAGS"))
    labels = _pairs("labels", environ.get("PIPELINE_INPUT_LABELS", ""))
    annotations = _pairs("annotations", environ.get("PIPELINE_INPUT_ANNOTATIONS", ""))
    build_args = _pairs("build-args", environ.get("PIPELINE_INPUT_BUILD_ARGS", ""))
    target = environ.get("PIPELINE_INPUT_TARGET", "").strip()
    images = []
    for original in derived.get("images", []):
        image = dict(original)
        if tags:
            image["tags"] = {**image.get("tags", {}), "raw": [*image.get("tags", {}).get("raw", []), *tags]}
        for key, extra in (("labels", labels), ("annotations", annotations), ("build_args", build_args)):
            if extra:
                image[key] = {**image.get(key, {}), **extra}
        if target:
            image["target"] = target
        images.append(image)
    derived = {**derived, "images": images}
    build = dict(derived.get("build", {}))
    for key, name in (("provenance", "PROVENANCE"), ("sbom", "SBOM")):
        switch = _switch(key, environ.get(f"PIPELINE_INPUT_{name}", ""))
        if switch is not None:
            build[key] = switch
    cache_from = [
        line.strip() for line in environ.get("PIPELINE_INPUT_CACHE_FROM", "").splitlines() if line.strip()
    ]
    cache_to = environ.get("PIPELINE_INPUT_CACHE_TO", "").strip()
    if cache_from or cache_to:
        build["cache_from"] = cache_from
        if cache_to:
            build["cache_to"] = cache_to
    secrets_input = _pairs("secrets", environ.get("PIPELINE_INPUT_SECRETS", ""))
    if secrets_input:
        build["secrets"] = {
            **build.get("secrets", {}),
            **{key: secret_variable(key) for key in secrets_input},
        }
    if build:
        derived["build"] = build
    return derived


# The variables a signing key travels in when neither the input nor the config names others: the key as
# `cosign generate-key-pair` writes it, and the password under the name cosign itself reads.
DEFAULT_SIGN_KEY_ENV = "COSIGN_PRIVATE_KEY"
DEFAULT_SIGN_PASSWORD_ENV = "COSIGN_PASSWORD"  # noqa: S105 (the name of a variable, not a password)


def apply_sign_inputs(derived: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    """The `sign` input (key, keyless, or empty for the config's `[sign] method`) and, for a key, the names of
    the variables that hold it (inputs `sign-key-env`/`sign-password-env`, else the config's, else the
    defaults). Only names: the key and its password stay in the step's environment."""
    method = environ.get("PIPELINE_INPUT_SIGN", "").strip().lower()
    if method not in ("", "key", "keyless"):
        raise ConfigError(f"input sign: {method!r} is not key, keyless or empty")
    sign = dict(derived.get("sign", {}))
    if method:
        sign["method"] = method
    if sign.get("method") == "keyless":
        # A key the config names for local runs does not apply when the inputs switch to keyless.
        sign.pop("key_env", None)
        sign.pop("password_env", None)
    elif sign.get("method") == "key":
        for key, variable, default in (
            ("key_env", "PIPELINE_INPUT_SIGN_KEY_ENV", DEFAULT_SIGN_KEY_ENV),
            ("password_env", "PIPELINE_INPUT_SIGN_PASSWORD_ENV", DEFAULT_SIGN_PASSWORD_ENV),
        ):
            sign[key] = environ.get(variable, "").strip() or sign.get(key) or default
    if sign:
        derived = {**derived, "sign": sign}
    return derived


def install_cosign(config: LoadedConfig, environ: Mapping[str, str]) -> bool:
    """Whether the action should install cosign: the release signs (a method, pushing, not a dry run) and the
    `install-cosign` input is not false (then cosign on PATH, $PIPELINE_COSIGN or the provisioned one)."""
    wanted = _switch("install-cosign", environ.get("PIPELINE_INPUT_INSTALL_COSIGN", ""))
    return (
        wanted is not False
        and config.pipeline.sign.method is not None
        and environ.get("PIPELINE_INPUT_PUSH", "true").strip().lower() != "false"
        and environ.get("PIPELINE_INPUT_DRY_RUN", "false").strip().lower() != "true"
    )


def secret_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The build secrets and registry logins of the inputs, as the variables the derived config names."""
    values = {
        secret_variable(k): v for k, v in _pairs("secrets", environ.get("PIPELINE_INPUT_SECRETS", "")).items()
    }
    for index, auth in enumerate(registry_auths(environ)):
        user_env, password_env = auth_variables(index)
        values[user_env] = auth["username"]
        values[password_env] = auth["password"]
    return values


# --- registry-auths: one secret with every login, as docker/github-builder takes it ---------------------


def registry_auths(environ: Mapping[str, str]) -> list[dict[str, str]]:
    """The `registry-auths` secret: a YAML list of `registry`, `username`, `password` entries."""
    text = environ.get("PIPELINE_REGISTRY_AUTHS", "")
    if not text.strip():
        return []
    try:
        entries = yaml.safe_load(text)
    except yaml.YAMLError:
        entries = None  # the parser's message would quote the secret
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ConfigError("secret registry-auths: not a YAML list of {registry, username, password} entries")
    auths = []
    for position, entry in enumerate(entries):
        missing = [key for key in ("registry", "username", "password") if not str(entry.get(key) or "")]
        if missing:
            raise ConfigError(f"secret registry-auths: entry {position + 1} has no {missing[0]}")
        auths.append({key: str(entry[key]) for key in ("registry", "username", "password")})
    return auths


def auth_variables(index: int) -> tuple[str, str]:
    return f"PIPELINE_AUTH_{index}_USERNAME", f"PIPELINE_AUTH_{index}_PASSWORD"


_DOCKER_HUB_HOSTS = ("docker.io", "index.docker.io", "registry-1.docker.io")


def _same_host(a: str, b: str) -> bool:
    hub = {a, b} <= set(_DOCKER_HUB_HOSTS)
    return hub or a.split("/", 1)[0] == b.split("/", 1)[0]


def apply_registry_auths(derived: dict[str, Any], auths: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    """Name the registry-auths variables in every registry of that host (they win over the config's own
    username_env/password_env, which name variables of a developer's machine)."""
    registries = []
    for declared in derived.get("registries", []):
        registry = dict(declared)
        for index, auth in enumerate(auths):
            if _same_host(str(registry.get("url", "")), auth["registry"]):
                registry["username_env"], registry["password_env"] = auth_variables(index)
                break
        registries.append(registry)
    if registries:
        derived = {**derived, "registries": registries}
    return derived


def check_inputs(config: LoadedConfig, environ: Mapping[str, str]) -> None:
    """What the pipeline would only find later, found now and named by the input: images, credentials that
    are missing (a pull request from a fork gets no secrets). Docker Hub paths: the config's own validation."""
    images = split_list(environ.get("PIPELINE_INPUT_IMAGES"))
    known = {name for image in config.pipeline.images for name in (image.name, image.short_name)}
    for name in images:
        if name not in known:
            declared = ", ".join(image.name for image in config.pipeline.images)
            raise ConfigError(f"input images: no image named {name!r} in the config (declared: {declared})")
    if (
        environ.get("PIPELINE_INPUT_PUSH", "true").strip().lower() == "false"
        or environ.get("PIPELINE_INPUT_DRY_RUN", "false").strip().lower() == "true"
    ):
        return
    supplied = {**environ, **secret_environment(environ)}
    for registry in config.pipeline.registries:
        if registry.username_env is None and registry.host in (*_DOCKER_HUB_HOSTS, "ghcr.io"):
            raise ConfigError(
                f"registry {registry.name}: no credentials for {registry.host}; pass registry-auths from a "
                "secret, or set the push input to false (pull requests from forks get no secrets)"
            )
        for variable in (registry.username_env, registry.password_env):
            if variable and not supplied.get(variable):
                raise ConfigError(
                    f"registry {registry.name}: {variable} is empty; pass it (or registry-auths) from a secret, "
                    "or set the push input to false (pull requests from forks get no secrets)"
                )


def _append_output(environ: Mapping[str, str], name: str, value: str) -> None:
    target = environ.get("GITHUB_OUTPUT")
    if not target:
        return
    delimiter = f"ghadelimiter_{secrets.token_hex(8)}"
    with Path(target).open("a") as handle:
        handle.write(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")


def prepare(environ: Mapping[str, str]) -> tuple[Path, list[str]]:
    """Validate, mask, derive. Returns the config path to use and the workflow commands to print."""
    given = environ.get("PIPELINE_INPUT_CONFIG", "").strip()
    original = (Path.cwd() / given) if given else find_config(Path.cwd())
    loaded = load_config(original)
    registries_toml = environ.get("PIPELINE_INPUT_REGISTRIES", "")
    use_registries = split_list(environ.get("PIPELINE_INPUT_USE_REGISTRIES"))
    platforms = split_list(environ.get("PIPELINE_INPUT_PLATFORMS"))
    # Passwords and build secrets only: a masked user name (often the namespace too) would make GitHub drop
    # every output that names an image.
    commands = [
        f"::add-mask::{value}"
        for variable, value in secret_environment(environ).items()
        if value and not variable.endswith("_USERNAME")
    ]
    unknown = [platform for platform in platforms if platform not in SUPPORTED_PLATFORMS]
    if unknown:
        raise ConfigError(
            f"input platforms: unknown platform {unknown[0]!r} (use one of {', '.join(sorted(SUPPORTED_PLATFORMS))})"
        )
    # A typo fails here, before the derived config is written, not in the step after.
    _switch("install-cosign", environ.get("PIPELINE_INPUT_INSTALL_COSIGN", ""))
    derived = derive_document(
        _pipeline_document(loaded.path),
        registries_toml=registries_toml,
        use_registries=use_registries,
        platforms=platforms,
    )
    derived = apply_registry_auths(apply_build_inputs(derived, environ), registry_auths(environ))
    derived = apply_sign_inputs(derived, environ)
    if derived == _pipeline_document(loaded.path):
        check_inputs(loaded, environ)
        commands += mask_commands(loaded.pipeline, environ)
        return loaded.path, commands
    # Beside the original, because relative paths and the git repository are found from the config's folder;
    # untracked, so the tree does not count as dirty.
    target = loaded.root / DERIVED_CONFIG_NAME
    target.write_text(
        "# Written by the image-pipeline action from "
        f"{loaded.path.name} and the action's inputs; safe to delete.\n" + toml_dump(derived)
    )
    try:
        derived_config = load_config(target)
        check_inputs(derived_config, environ)
    except ConfigError:
        target.unlink()  # the cleanup step knows only a config the step gave as its output
        raise
    commands += mask_commands(derived_config.pipeline, environ)
    return target, commands


# --- run ----------------------------------------------------------------------------------------------


def _lint_annotation(match: re.Match[str], config_root: Path, environ: Mapping[str, str]) -> str:
    path = Path(match["path"])
    absolute = path if path.is_absolute() else config_root / path
    return annotation(
        _LEVEL[match["severity"]],
        f"{match['code']}: {match['message']}",
        file=shown_path(absolute, environ),
        line=int(match["line"]),
    )


def _config_root(args: Sequence[str], environ: Mapping[str, str]) -> tuple[Path, Path | None]:
    source = environ.get("PIPELINE_SOURCE_CONFIG")
    config: str | None = None
    for position, arg in enumerate(args):
        if arg == "--config" and position + 1 < len(args):
            config = args[position + 1]
        elif arg.startswith("--config="):
            config = arg.split("=", 1)[1]
    if config is None:
        return Path.cwd(), None
    path = Path(config).resolve()
    return path.parent, Path(source) if source else None


def run(args: Sequence[str], environ: Mapping[str, str], *, python: str = sys.executable) -> int:
    """Run the CLI, pass its output through as it comes, and annotate what it reports.

    Both streams are read at once (`run_streaming`): buildx fills stderr with its progress while stdout is
    quiet, and reading one to its end first would block both processes once the other pipe is full.
    """
    config_root, original = _config_root(args, environ)
    annotations: list[str] = []
    error_lines: list[str] = []

    def on_stdout(line: str) -> None:
        sys.stdout.write(line)
        match = _LINT_LINE.match(line.rstrip("\n"))
        if match:
            annotations.append(_lint_annotation(match, config_root, environ))

    def on_stderr(line: str) -> None:
        sys.stderr.write(line)
        match = _ERROR_LINE.match(line.rstrip("\n"))
        if match:
            error_lines.append(match["message"])

    # The build secrets and registry-auths logins reach the pipeline as the variables the config names.
    child_environ = {**environ, **secret_environment(environ)}
    finished = run_streaming(
        [python, "-m", "pipeline", *args], on_stdout=on_stdout, on_stderr=on_stderr, env=child_environ
    )
    sys.stdout.flush()
    sys.stderr.flush()
    for command in annotations:
        print(command)
    if finished.returncode != 0 and error_lines:
        print(config_error_annotation(error_lines[-1], environ, original=original))
    sys.stdout.flush()
    return finished.returncode


# --- outputs of a dry run -----------------------------------------------------------------------------


def _outputs_written(environ: Mapping[str, str]) -> bool:
    target = environ.get("GITHUB_OUTPUT")
    if not target or not Path(target).is_file():
        return False
    return any(line.startswith(("version<<", "version=")) for line in Path(target).read_text().splitlines())


def plan_outputs(config: LoadedConfig, images: Sequence[str], environ: Mapping[str, str]) -> dict[str, Any]:
    """What a dry run would publish, as the action's outputs: no digest, the tags it would move."""
    from pipeline.plan import make_plan

    plan = make_plan(config, allow_dirty=True, environ=environ)
    chosen = [i for i in plan.images if not images or i.name in images or i.name.rsplit("/", 1)[-1] in images]
    document = plan.to_json()
    document["images"] = [entry for entry in document["images"] if entry["name"] in {i.name for i in chosen}]
    tags = [reference for image in chosen for reference in plan.references(image)]
    if not _outputs_written(environ):
        _append_output(environ, "version", plan.version)
        _append_output(environ, "tags", "\n".join(tags))
        _append_output(environ, "digest", "")
        _append_output(
            environ, "json", json.dumps({"mode": "dry-run", "plan": document}, separators=(",", ":"))
        )
    summary = environ.get("GITHUB_STEP_SUMMARY")
    if summary:
        lines = [f"### Dry run of release {plan.version}", "", "Nothing was built or pushed. Would tag:", ""]
        lines += [f"- `{reference}`" for reference in tags] or ["- nothing"]
        with Path(summary).open("a") as handle:
            handle.write("\n".join(lines) + "\n")
    return document


def labels_output(config: LoadedConfig, images: Sequence[str], environ: Mapping[str, str]) -> str:
    """The `labels` output: the first chosen image's labels from the plan, KEY=value per line."""
    from pipeline.plan import make_plan

    plan = make_plan(config, allow_dirty=True, environ=environ)
    chosen = [i for i in plan.images if not images or i.name in images or i.name.rsplit("/", 1)[-1] in images]
    labels = chosen[0].labels if chosen else {}
    text = "\n".join(f"{key}={value}" for key, value in labels.items())
    _append_output(environ, "labels", text)
    return text


# --- fan-out matrix -----------------------------------------------------------------------------------


def slug(text: str) -> str:
    """A name for artifacts and jobs: readable, and distinct for distinct texts (`acme/app` and `acme-app`
    read alike, so a short hash of the text itself follows)."""
    readable = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()
    return f"{readable}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def runner_mapping(text: str | None) -> dict[str, str]:
    """The `runners` input: a JSON object platform -> runner label, on top of the native defaults."""
    if not (text or "").strip():
        return dict(NATIVE_RUNNERS)
    try:
        given = json.loads(text or "")
    except ValueError:
        given = None
    if not isinstance(given, dict) or not all(isinstance(v, str) and v for v in given.values()):
        raise ConfigError('input runners: give a JSON object such as {"linux/arm64": "ubuntu-24.04-arm"}')
    unknown = [platform for platform in given if platform not in SUPPORTED_PLATFORMS]
    if unknown:
        raise ConfigError(f"input runners: unknown platform {unknown[0]!r}")
    return {**NATIVE_RUNNERS, **given}


def fan_out_matrix(
    config: LoadedConfig, images: Iterable[str], runners: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """`include` entries for a matrix job: one per image and platform, on its runner from `runners` (native:
    nothing emulated); a platform without one builds on the default runner under QEMU (`emulate`)."""
    runners = NATIVE_RUNNERS if runners is None else runners
    wanted = list(images)
    chosen = [config.image(name) for name in wanted] if wanted else list(config.pipeline.images)
    include = [
        {
            "image": image.name,
            "platform": platform,
            "runner": runners.get(platform, DEFAULT_RUNNER),
            "emulate": platform not in runners,
            "slug": f"{slug(image.name)}--{slug(platform)}",
            "image_slug": slug(image.name),
        }
        for image in chosen
        for platform in image.platforms
    ]
    return {"include": include}


# --- CLI ----------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.github_annotate", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("prepare", help="validate and derive the config from the PIPELINE_INPUT_* variables")
    run_parser = commands.add_parser("run", help="run `python -m pipeline ARGS` and annotate its findings")
    run_parser.add_argument("pipeline_args", nargs=argparse.REMAINDER)
    matrix_parser = commands.add_parser(
        "matrix", help="print the fan-out matrix and write it to GITHUB_OUTPUT"
    )
    matrix_parser.add_argument("--config", type=Path, default=None)
    dry_parser = commands.add_parser(
        "dry-run-outputs", help="the action's outputs for a dry run, from the plan"
    )
    dry_parser.add_argument("--config", type=Path, default=None)
    labels_parser = commands.add_parser("labels-output", help="the labels output, from the plan")
    labels_parser.add_argument("--config", type=Path, default=None)
    args = parser.parse_args(argv)
    environ = dict(os.environ)
    if args.command == "prepare":
        given = environ.get("PIPELINE_INPUT_CONFIG", "").strip()
        try:  # the file the derived config came from: a problem in the derived one is one of the inputs
            original: Path | None = (Path.cwd() / given) if given else find_config(Path.cwd())
        except ConfigError:
            original = None
        try:
            path, commands_out = prepare(environ)
        except ConfigError as error:
            print(config_error_annotation(str(error), environ, original=original))
            print(f"error: {error}", file=sys.stderr)
            return error.exit_code
        for command in commands_out:
            print(command)
        # Step outputs rather than GITHUB_ENV: later steps opt in to them, nothing else in the job sees them.
        _append_output(environ, "config", str(path))
        _append_output(environ, "source-config", str((original or find_config(Path.cwd())).resolve()))
        _append_output(environ, "install-cosign", str(install_cosign(load_config(path), environ)).lower())
        print(f"config: {shown_path(path, environ)}")
        return 0
    if args.command == "run":
        forwarded = list(args.pipeline_args)
        if forwarded[:1] == ["--"]:
            forwarded = forwarded[1:]
        return run(forwarded, environ)
    if args.command == "labels-output":
        labels_output(load_config(args.config), split_list(environ.get("PIPELINE_INPUT_IMAGES")), environ)
        return 0
    if args.command == "dry-run-outputs":
        plan_outputs(load_config(args.config), split_list(environ.get("PIPELINE_INPUT_IMAGES")), environ)
        return 0
    try:
        config = load_config(args.config)
        matrix = fan_out_matrix(
            config,
            split_list(environ.get("PIPELINE_INPUT_IMAGES")),
            runner_mapping(environ.get("PIPELINE_INPUT_RUNNERS")),
        )
    except ConfigError as error:
        print(config_error_annotation(str(error), environ))
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    images = sorted({entry["image"] for entry in matrix["include"]})
    merge = {"include": [{"image": name, "image_slug": slug(name)} for name in images]}
    _append_output(environ, "matrix", json.dumps(matrix, separators=(",", ":")))
    _append_output(environ, "merge-matrix", json.dumps(merge, separators=(",", ":")))
    _append_output(environ, "images", " ".join(images))
    # Artifact names of this call: two calls of the workflow in one run must not meet.
    _append_output(environ, "artifact-prefix", f"image-pipeline-{secrets.token_hex(4)}-")
    print(json.dumps(matrix, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
