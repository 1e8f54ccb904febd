"""The project's declaration of images and registries: `pipeline.toml`, or `[tool.pipeline]` in pyproject.toml.

Validated on load so that a typo fails before anything is built, with the file and key path in one line.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pipeline.errors import ConfigError

SUPPORTED_PLATFORMS = frozenset(
    {
        "linux/amd64",
        "linux/arm64",
        "linux/arm/v7",
        "linux/arm/v6",
        "linux/386",
        "linux/ppc64le",
        "linux/s390x",
        "linux/riscv64",
    }
)
DEFAULT_PLATFORMS = ("linux/amd64", "linux/arm64")

# The repository part of a reference, as the distribution spec defines path components.
_REPOSITORY_NAME = re.compile(
    r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$"
)
_REGISTRY_URL = re.compile(
    r"^(?P<host>[A-Za-z0-9.-]+|\[[0-9a-fA-F:]+\])(?::(?P<port>[0-9]{1,5}))?(?P<namespace>(?:/[a-z0-9._-]+)*)$"
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
TagKind = Literal[
    "semver", "major_minor", "major", "latest", "channel", "branch", "edge", "sha", "pr", "nightly"
]
ALL_TAG_KINDS: tuple[TagKind, ...] = (
    "semver",
    "major_minor",
    "major",
    "latest",
    "channel",
    "branch",
    "edge",
    "sha",
    "pr",
    "nightly",
)


_NOT_A_VARIABLE_NAME = (
    "must name an environment variable (e.g. HUB_TOKEN), not hold the secret itself; this value looks like "
    "a secret, so it is not shown: put it in a variable (a CI secret) and the variable's name here"
)
# Prefixes of tokens that GitHub, GitLab, Docker Hub, AWS, Slack and OpenAI-style services issue.
_TOKEN_PREFIXES = ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "glpat-", "dckr_pat_", "xox", "sk-")
_AWS_KEY = re.compile(r"^(?:AKIA|ASIA)[0-9A-Z]{16}$")


def looks_like_secret(value: str) -> bool:
    """True for a value that is a token rather than a variable name (names are words, tokens are noise)."""
    if value.lower().startswith(_TOKEN_PREFIXES) or _AWS_KEY.match(value):
        return True
    letters_and_digits = sum(ch.isalnum() for ch in value)
    mixed_case = any(ch.islower() for ch in value) and any(ch.isupper() for ch in value)
    digits = sum(ch.isdigit() for ch in value)
    # Variable names are UPPER_SNAKE or lower_snake words; a long run mixing cases and digits is a token.
    return len(value) >= 20 and mixed_case and digits >= 3 and letters_and_digits / len(value) > 0.9


def _checked_registry_url(value: str, match: re.Match[str]) -> str:
    host, port, namespace = match["host"], match["port"], match["namespace"]
    if port is not None and not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r}: port {port} is outside 1-65535")
    labels = host.strip("[]").split(".") if not host.startswith("[") else []
    if any(label == "" for label in labels) or host.startswith(("-", ".")) or host.endswith("-"):
        raise ValueError(f"{value!r}: host {host!r} is not a valid host name")
    parts = [part for part in namespace.split("/") if part]
    for part in parts:
        if part in (".", "..") or not _REPOSITORY_NAME.match(part):
            raise ValueError(
                f"{value!r}: namespace part {part!r} is not a valid repository path component "
                "(lowercase letters and digits, separated by '.', '_' or '-')"
            )
    return value.rstrip("/")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TagsConfig(_Strict):
    """How an image's tags are spelled: `-alpine` variants, which kinds to emit, extra fixed tags."""

    prefix: str = ""
    suffix: str = ""
    kinds: tuple[TagKind, ...] = ALL_TAG_KINDS
    raw: tuple[str, ...] = ()


class SmokeSettings(_Strict):
    timeout: float = Field(default=120.0, gt=0, description="seconds for one check before it is killed")


class ImageConfig(_Strict):
    name: str
    context: str = "."
    dockerfile: str | None = None
    platforms: tuple[str, ...] = DEFAULT_PLATFORMS
    build_args: dict[str, str] = Field(default_factory=dict)
    target: str | None = None
    description: str = ""
    smoke: str | None = Field(
        default=None, description="container-structure-test YAML, relative to the config"
    )
    tags: TagsConfig = TagsConfig()
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(
        default_factory=dict, description="extra OCI annotations on the image index (or manifest)"
    )

    @field_validator("name")
    @classmethod
    def _valid_name(cls, value: str) -> str:
        if not _REPOSITORY_NAME.match(value) or len(value) > 255:
            raise ValueError(
                f"{value!r} is not a valid image name (lowercase letters, digits, '.', '_', '-' and '/' only)"
            )
        return value

    @field_validator("platforms")
    @classmethod
    def _known_platforms(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("needs at least one platform")
        for platform in value:
            if platform not in SUPPORTED_PLATFORMS:
                raise ValueError(
                    f"unknown platform {platform!r} (use one of {', '.join(sorted(SUPPORTED_PLATFORMS))})"
                )
        if len(set(value)) != len(value):
            raise ValueError("lists a platform twice")
        return value

    @field_validator("build_args")
    @classmethod
    def _no_secret_build_args(cls, value: dict[str, str]) -> dict[str, str]:
        # Build args end up in the image history for anyone who pulls it: secrets go through --secret.
        for key in value:
            if re.search(r"(PASSWORD|PASSWD|TOKEN|SECRET|API_?KEY|PRIVATE_?KEY)", key, re.IGNORECASE):
                raise ValueError(
                    f"build arg {key!r} looks like a secret; build args are visible in the image"
                )
        return value

    @property
    def short_name(self) -> str:
        return self.name.rsplit("/", 1)[-1]


DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})


class RegistryConfig(_Strict):
    name: str
    url: str
    username_env: str | None = None
    password_env: str | None = None
    insecure: bool = Field(
        default=False, description="Docker's meaning: TLS without verifying the certificate, else plain HTTP"
    )
    ca_file: Path | None = Field(
        default=None,
        description="PEM CA for the registry's TLS certificate, relative to the config (besides certs.d)",
    )

    @field_validator("ca_file")
    @classmethod
    def _ca_exists(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        root = (info.context or {}).get("root")
        path = (Path(root) / value).resolve() if root is not None else value
        if not path.is_file():
            raise ValueError(
                f"{str(path)!r} is not a file; give the PEM file of the CA that signed the registry's certificate"
            )
        return path

    def hub_repository_problem(self, image_name: str) -> str | None:
        """Why `image_name` cannot live here on Docker Hub (two-level names only), or None."""
        if self.host not in DOCKER_HUB_HOSTS:
            return None
        path = f"{self.namespace}/{image_name}" if self.namespace else image_name
        if path.count("/") > 1:
            return (
                f"registry {self.name} ({self.url}) is Docker Hub, which takes namespace/repository only: "
                f"image {image_name!r} would be {path!r}; use a one-part image name or drop the namespace from url"
            )
        return None

    @field_validator("url")
    @classmethod
    def _valid_url(cls, value: str) -> str:
        if "://" in value:
            raise ValueError(f"{value!r}: give host[:port][/namespace] without a scheme")
        match = _REGISTRY_URL.match(value)
        if not match:
            raise ValueError(f"{value!r} is not host[:port][/namespace]")
        checked = _checked_registry_url(value, match)
        host, _, namespace = checked.partition("/")
        if host in DOCKER_HUB_HOSTS and "/" in namespace:
            raise ValueError(
                f"{value!r}: Docker Hub names are namespace/repository; give docker.io/NAMESPACE only"
            )
        return checked

    @field_validator("username_env", "password_env", mode="before")
    @classmethod
    def _env_names_only(cls, value: object) -> object:
        # Never echo the value: whatever is here by mistake is most likely the secret itself.
        if value is not None and not isinstance(value, str):
            raise ValueError(_NOT_A_VARIABLE_NAME)
        if isinstance(value, str) and (not _ENV_NAME.match(value) or looks_like_secret(value)):
            raise ValueError(_NOT_A_VARIABLE_NAME)
        return value

    @model_validator(mode="after")
    def _both_or_neither(self) -> RegistryConfig:
        if (self.username_env is None) != (self.password_env is None):
            raise ValueError("set both username_env and password_env, or neither")
        return self

    @property
    def host(self) -> str:
        return self.url.split("/", 1)[0]

    @property
    def namespace(self) -> str:
        return self.url.split("/", 1)[1] if "/" in self.url else ""

    def repository(self, image_name: str) -> str:
        """Full repository for an image here, e.g. `127.0.0.1:5000/acme/hello`."""
        return f"{self.url}/{image_name}"


class VersionConfig(_Strict):
    tag_prefix: str = Field(
        default="v", description="release tags are PREFIX+X.Y.Z; X.Y.Z alone is accepted too"
    )
    default_branch: str | None = None


class LabelsConfig(_Strict):
    """Project-wide OCI metadata; per-image `description` and `labels` override it."""

    title: str | None = None
    description: str = ""
    url: str = ""
    source: str = ""
    licenses: str = ""
    vendor: str = ""


class LintConfig(_Strict):
    disable: dict[str, str] = Field(
        default_factory=dict, description="rule code -> reason it is disabled project-wide"
    )
    hadolint: bool = True
    fail_on: Literal["error", "warning", "info"] = "error"
    native_platforms: bool = Field(
        default=False,
        description="each platform is built on a runner of its own architecture (native fan-out), so no "
        "build step runs under emulation",
    )


class LocalRegistryConfig(_Strict):
    port: int = Field(default=5000, ge=1, le=65535)


class BuildConfig(_Strict):
    cache: Literal["auto", "gha", "registry", "inline", "local", "none"] = "auto"
    builder: str | None = Field(
        default=None, description="an existing buildx builder to build with (any driver); default: chosen"
    )
    provenance: bool | None = None
    sbom: bool | None = None
    # Raw buildx cache specs (`type=gha,scope=app`) that replace what `cache` would choose.
    cache_from: tuple[str, ...] = ()
    cache_to: str | None = None
    secrets: dict[str, str] = Field(
        default_factory=dict,
        description="build secret id -> name of the environment variable holding it (RUN --mount=type=secret)",
    )

    @field_validator("secrets")
    @classmethod
    def _secret_env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for secret_id, variable in value.items():
            if not _ENV_NAME.match(variable):
                raise ValueError(
                    f"secret {secret_id!r}: give the name of an environment variable, not the secret itself"
                )
        return value


class SignConfig(_Strict):
    """`[sign]`: sign the tested index digest with cosign and attest its smoke results (pipeline/sign.py).

    `method = "key"` reads the private key and its password from the environment variables named here;
    `"keyless"` uses GitHub Actions' OIDC token (Fulcio certificate, Rekor entry). Unset: nothing is signed.
    """

    method: Literal["key", "keyless"] | None = None
    key_env: str | None = Field(default=None, description="variable holding the cosign private key (PEM)")
    password_env: str | None = Field(default=None, description="variable holding the key's password")
    public_key: str | None = Field(
        default=None, description="cosign public key file, relative to the config, for verification"
    )
    attest: bool = True
    tlog_upload: bool = Field(default=False, description="key method: also record in Rekor (needs network)")
    identity: str | None = Field(
        default=None, description="keyless verification: regular expression of the signer's identity"
    )
    issuer: str = "https://token.actions.githubusercontent.com"
    require: bool = Field(
        default=False, description="`pipeline smoke` and `release --digest` refuse unsigned digests"
    )

    @field_validator("key_env", "password_env")
    @classmethod
    def _env_names_only(cls, value: str | None) -> str | None:
        if value is not None and not _ENV_NAME.match(value):
            raise ValueError(f"{value!r} must name an environment variable, not hold the secret itself")
        return value

    @model_validator(mode="after")
    def _key_method_needs_variables(self) -> SignConfig:
        if self.method == "key" and (self.key_env is None or self.password_env is None):
            raise ValueError('method = "key" needs key_env and password_env (names of environment variables)')
        if self.method == "keyless" and self.key_env is not None:
            raise ValueError('method = "keyless" signs without a key; remove key_env or use method = "key"')
        return self


class PipelineConfig(_Strict):
    images: Annotated[tuple[ImageConfig, ...], Field(min_length=1)]
    registries: tuple[RegistryConfig, ...] = ()
    version: VersionConfig = VersionConfig()
    labels: LabelsConfig = LabelsConfig()
    lint: LintConfig = LintConfig()
    local_registry: LocalRegistryConfig = LocalRegistryConfig()
    build: BuildConfig = BuildConfig()
    smoke: SmokeSettings = SmokeSettings()
    sign: SignConfig = SignConfig()
    deploy: tuple[DeployConfig, ...] = ()  # [[deploy]]: defined with its parts at the end of this file

    @model_validator(mode="after")
    def _unique_names(self) -> PipelineConfig:
        for kind, names in (
            ("images", [i.name for i in self.images]),
            ("registries", [r.name for r in self.registries]),
        ):
            duplicates = sorted({n for n in names if names.count(n) > 1})
            if duplicates:
                raise ValueError(f"{kind}: name {duplicates[0]!r} is declared twice")
        return self

    @model_validator(mode="after")
    def _docker_hub_names(self) -> PipelineConfig:
        for registry in self.registries:
            for image in self.images:
                problem = registry.hub_repository_problem(image.name)
                if problem is not None:
                    raise ValueError(problem)
        return self


class LoadedConfig(BaseModel):
    """The validated config with where it came from, so that relative paths resolve against its folder."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    path: Path
    root: Path
    pipeline: PipelineConfig

    def image(self, name: str) -> ImageConfig:
        for image in self.pipeline.images:
            if name in (image.name, image.short_name):
                return image
        known = ", ".join(i.name for i in self.pipeline.images)
        raise ConfigError(f"{self.path}: no image named {name!r} (declared: {known})")

    def context_dir(self, image: ImageConfig) -> Path:
        return (self.root / image.context).resolve()

    def dockerfile_path(self, image: ImageConfig) -> Path:
        if image.dockerfile is None:
            return self.context_dir(image) / "Dockerfile"
        return (self.root / image.dockerfile).resolve()

    def smoke_path(self, image: ImageConfig) -> Path | None:
        if image.smoke is not None:
            return (self.root / image.smoke).resolve()
        beside = self.dockerfile_path(image).parent / "smoke.yaml"
        return beside if beside.exists() else None


def _key_path(location: tuple[int | str, ...]) -> str:
    parts: list[str] = []
    for item in location:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        else:
            parts.append(("." if parts else "") + item)
    return "".join(parts) or "(top level)"


def _describe(error: dict[str, Any], prefix: tuple[str, ...]) -> str:
    location = tuple(prefix) + tuple(error["loc"])
    # pydantic appends the validator's name for after-validators; it is noise in a user-facing path.
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{_key_path(location)}: unknown key (check the spelling)"
    if kind == "missing":
        return f"{_key_path(location)}: required key is missing"
    message = str(error["msg"]).removeprefix("Value error, ")
    if location and location[-1] in ("username_env", "password_env"):
        return f"{_key_path(location)}: {message}"
    if kind.endswith("_type") or kind.endswith("_parsing"):
        message = f"wrong type: {message} (got {error.get('input')!r})"
    return f"{_key_path(location)}: {message}"


def _summary(error: ValidationError, prefix: tuple[str, ...]) -> str:
    """The first problem, and how many more there are, counting each key once: pydantic reports a value
    that fits none of `str | None` once per alternative, which is still one problem for the user."""
    errors: list[dict[str, Any]] = [dict(e) for e in error.errors()]
    # A tuple whose only items failed is then also "too short": a consequence, not another problem.
    failed = {tuple(e["loc"])[:1] for e in errors if len(tuple(e["loc"])) > 1}
    errors = [e for e in errors if not (e["type"] == "too_short" and tuple(e["loc"]) in failed)] or errors
    places = list(dict.fromkeys(_problem_place(e) for e in errors))
    more = len(places) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"{_describe(errors[0], prefix)}{suffix}"


def _problem_place(error: dict[str, Any]) -> tuple[int | str, ...]:
    # A union's alternatives appear as a last location part naming the type ('str', 'function-after[...]').
    location = tuple(error["loc"])
    while location and isinstance(location[-1], str) and ("[" in location[-1] or location[-1] in _TYPE_NAMES):
        location = location[:-1]
    return location


_TYPE_NAMES = frozenset({"str", "int", "float", "bool", "none", "list", "dict", "tuple"})


def find_config(start: Path) -> Path:
    for name in ("pipeline.toml", "pyproject.toml"):
        candidate = start / name
        if candidate.is_file() and (name == "pipeline.toml" or _has_tool_section(candidate)):
            return candidate
    raise ConfigError(
        f"no pipeline.toml (or [tool.pipeline] in pyproject.toml) in {start}; create one or pass --config PATH"
    )


def _has_tool_section(pyproject: Path) -> bool:
    try:
        return "pipeline" in tomllib.loads(pyproject.read_text()).get("tool", {})
    except (tomllib.TOMLDecodeError, OSError):
        return False


def load_config(path: Path | None = None, *, cwd: Path | None = None) -> LoadedConfig:
    config_path = path if path is not None else find_config(cwd or Path.cwd())
    if not config_path.is_file():
        raise ConfigError(f"{config_path}: config file not found; pass an existing file to --config")
    try:
        document = tomllib.loads(config_path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{config_path}: not valid TOML: {error}") from None
    prefix: tuple[str, ...] = ()
    if config_path.name == "pyproject.toml":
        document = document.get("tool", {}).get("pipeline")
        prefix = ("tool", "pipeline")
        if document is None:
            raise ConfigError(f"{config_path}: no [tool.pipeline] table; add one or use pipeline.toml")
    try:
        pipeline = PipelineConfig.model_validate(document, context={"root": config_path.resolve().parent})
    except ValidationError as error:
        raise ConfigError(f"{config_path}: {_summary(error, prefix)}") from None
    return LoadedConfig(path=config_path.resolve(), root=config_path.resolve().parent, pipeline=pipeline)


# --- [[deploy]]: where a tested digest runs (pipeline/deploy.py) ------------------------------------------

_SWARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


class DeployPort(_Strict):
    """One published port. `mode = "host"` binds on each node running a task (no routing mesh needed)."""

    target: int = Field(ge=1, le=65535)
    published: int | None = Field(default=None, ge=1, le=65535, description="omit for a free port per task")
    protocol: Literal["tcp", "udp"] = "tcp"
    mode: Literal["ingress", "host"] = "ingress"


class UpdatePolicy(_Strict):
    """Swarm's update config. The failure action is always rollback: a failed rollout must not stay half done."""

    parallelism: int = Field(default=1, ge=0, description="tasks updated at once (0: all)")
    delay: float = Field(default=0.0, ge=0, description="seconds between batches")
    order: Literal["start-first", "stop-first"] = "start-first"
    monitor: float = Field(default=5.0, gt=0, description="seconds a new task is watched for failure")
    max_failure_ratio: float = Field(default=0.0, ge=0, le=1)


class DeployConfig(_Strict):
    environment: str
    image: str = Field(description="an [[images]] name, full or short")
    registry: str | None = Field(default=None, description="registry the nodes pull from (default: first)")
    service: str = Field(description="the Swarm service; with `stack`, the compose service to pin")
    stack: str | None = None
    compose: str | None = Field(default=None, description="compose file of the stack, relative to the config")
    replicas: int = Field(default=1, ge=0)
    ports: tuple[DeployPort, ...] = ()
    update: UpdatePolicy = UpdatePolicy()
    health_gate: bool = Field(
        default=True, description="refuse an image without HEALTHCHECK; wait for healthy"
    )
    timeout: float = Field(default=300.0, gt=0, description="seconds for the whole rollout")
    stop_grace_period: float = Field(
        default=10.0, ge=0, description="seconds an old task gets after SIGTERM (Swarm's default: 10)"
    )

    @field_validator("environment", "service", "stack")
    @classmethod
    def _swarm_name(cls, value: str | None) -> str | None:
        if value is not None and not _SWARM_NAME.match(value):
            raise ValueError(
                f"{value!r}: use letters, digits, '_', '.' and '-' (at most 63, no leading symbol)"
            )
        return value

    @field_validator("environment")
    @classmethod
    def _not_a_subcommand(cls, value: str) -> str:
        if value == "status":
            raise ValueError(
                "'status' is the `pipeline deploy status` command; name the environment otherwise"
            )
        return value

    @model_validator(mode="after")
    def _stack_needs_compose(self) -> DeployConfig:
        if (self.stack is None) != (self.compose is None):
            raise ValueError("set both stack and compose (a stack deploy), or neither (a single service)")
        return self

    @property
    def swarm_service(self) -> str:
        """The service name Swarm knows: a stack prefixes its services with `<stack>_`."""
        return f"{self.stack}_{self.service}" if self.stack else self.service


PipelineConfig.model_rebuild()
