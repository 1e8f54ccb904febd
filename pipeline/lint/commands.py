"""What the commands of a RUN do, read from the words of each simple command (see `shell`).

Each function answers one question a rule asks (does this command install an ecosystem's dependencies, and
from the project's manifest or by name? does it compile, and is its output tied to an architecture? does it
leave or remove a package cache?), so that rules never match words in the raw text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pipeline.lint.shell import Command

InstallKind = Literal["manifest", "implicit", "packages", "tool"]
"""`manifest`: installs what the project's manifest lists (`npm ci`, `pip install -r`, `go mod download`);
`implicit`: fetches dependencies as a side effect of building (`go build`, `cargo build`, `mvn package`);
`packages`: installs packages named on the command line; `tool`: installs a global tool (`npm i -g pnpm`,
`pip install --upgrade pip`, `cargo install cargo-chef`), which says nothing about the project's manifest."""


@dataclass(frozen=True)
class Install:
    ecosystem: str
    kind: InstallKind


MANIFESTS: dict[str, str] = {
    "pip": "requirements.txt",
    "uv": "pyproject.toml uv.lock",
    "poetry": "pyproject.toml poetry.lock",
    "pipenv": "Pipfile Pipfile.lock",
    "npm": "package.json package-lock.json",
    "yarn": "package.json yarn.lock",
    "pnpm": "package.json pnpm-lock.yaml",
    "go": "go.mod go.sum",
    "bundler": "Gemfile Gemfile.lock",
    "cargo": "Cargo.toml Cargo.lock",
    "maven": "pom.xml",
    "gradle": "build.gradle settings.gradle",
    "composer": "composer.json composer.lock",
    "dotnet": "*.csproj",
    "mix": "mix.exs mix.lock",
}
# Where each ecosystem keeps downloaded packages; a cache mount there makes an implicit fetch cheap.
CACHE_DIRS: dict[str, tuple[str, ...]] = {
    "go": ("/go/pkg/mod", "/root/go/pkg/mod", "/root/.cache/go", "/go/pkg", "/root/.cache"),
    "cargo": ("/usr/local/cargo/registry", "/root/.cargo", "cargo"),
    "maven": ("/root/.m2", ".m2"),
    "gradle": ("/root/.gradle", ".gradle"),
    "dotnet": ("/root/.nuget", ".nuget"),
}
_YARN_VALUED = (
    "--network-timeout",
    "--cwd",
    "--mutex",
    "--cache-folder",
    "--modules-folder",
    "--registry",
    "--network-concurrency",
    "--global-folder",
    "--link-folder",
)
_NPM_VALUED = ("--prefix", "--cache", "--registry", "--omit", "--include", "-w", "--workspace")
_PIP_VALUED = (
    "-r",
    "--requirement",
    "-c",
    "--constraint",
    "-i",
    "--index-url",
    "--extra-index-url",
    "-f",
    "--find-links",
    "--target",
    "-t",
    "--prefix",
    "--root",
    "--trusted-host",
    "--platform",
    "--python-version",
    "--only-binary",
    "--no-binary",
    "--cache-dir",
    "--progress-bar",
    "-w",
    "--wheel-dir",
)
_GO_BUILDS = frozenset({"build", "install", "test", "run", "vet", "generate", "get", "list"})
_MAVEN_BUILDS = frozenset(
    {"package", "install", "verify", "compile", "deploy", "test", "spring-boot:repackage"}
)
_GRADLE_BUILDS = frozenset(
    {"build", "assemble", "bootjar", "installdist", "jar", "shadowjar", "disttar", "test", "bootwar", "war"}
)


def normalize(command: Command) -> Command:
    """`python -m pip install` is `pip install`; `./mvnw` is `mvn`; `pip3` is `pip`."""
    name = command.name
    if name.startswith("python") and len(command.args) >= 2 and command.args[0] == "-m":
        return normalize(Command(command.args[1], command.args[2:]))
    aliases = {"pip3": "pip", "mvnw": "mvn", "gradlew": "gradle", "corepack": "corepack", "apt": "apt-get"}
    if name in aliases:
        return Command(aliases[name], command.args)
    if name.startswith("pip3."):
        return Command("pip", command.args)
    return command


def _pip(command: Command) -> Install | None:
    # `pip wheel` downloads and builds every dependency just as `pip install` does.
    if command.subcommand(_PIP_VALUED) not in ("install", "wheel"):
        return None
    targets = command.positionals(_PIP_VALUED)[1:]
    if command.option("-r", "--requirement") or any(
        t in (".", "./") or t.startswith(("./", "/")) for t in targets
    ):
        return Install("pip", "manifest")
    if command.option("-e", "--editable"):
        return Install("pip", "manifest")
    if set(t.split("=")[0].split("<")[0].split(">")[0].lower() for t in targets) <= {
        "pip",
        "setuptools",
        "wheel",
    }:
        return Install("pip", "tool")
    return Install("pip", "packages")


def _node(command: Command) -> Install | None:
    name = command.name
    valued = _YARN_VALUED if name == "yarn" else _NPM_VALUED
    sub = command.subcommand(valued)
    words = command.positionals(valued)[1:]
    if command.option("-g", "--global") or sub == "global":
        return Install(name, "tool")
    if name == "npm" and sub in ("install", "i", "ci", "add", "isntall"):
        return Install("npm", "packages" if words else "manifest")
    if name == "yarn" and sub in (None, "install"):
        return Install("yarn", "manifest")
    if name == "yarn" and sub == "add":
        return Install("yarn", "packages")
    if name == "pnpm" and sub in ("install", "i", "fetch"):
        return Install("pnpm", "manifest")
    if name == "pnpm" and sub == "add":
        return Install("pnpm", "packages")
    return None


def _go(command: Command, go_stage: bool) -> Install | None:
    if command.name == "make" and go_stage:
        return Install("go", "implicit")
    if command.name != "go":
        return None
    sub = command.subcommand(("-C", "-o", "-ldflags", "-tags", "-gcflags"))
    if sub == "mod":
        return Install("go", "manifest") if "download" in command.args else None
    if sub == "install" and any("@" in arg for arg in command.args):
        return Install("go", "tool")
    if sub in _GO_BUILDS:
        return Install("go", "implicit")
    return None


def _cargo(command: Command) -> Install | None:
    sub = command.subcommand(("--target", "--bin", "-p", "--package", "--features", "-j", "--manifest-path"))
    words = command.positionals(("--target", "--bin", "-p", "--package", "--features", "-j"))
    if sub == "fetch":
        return Install("cargo", "manifest")
    if sub == "chef":
        # cargo-chef: `cook` builds only the dependencies of a recipe, before the sources arrive.
        return Install("cargo", "manifest") if "cook" in words else None
    if sub == "install":
        return Install("cargo", "implicit" if command.option("--path") else "tool")
    if sub in ("build", "test", "run", "check", "doc"):
        return Install("cargo", "implicit")
    return None


def _jvm(command: Command) -> Install | None:
    goals = set(command.positionals(("-f", "--file", "-s", "-P", "-pl", "-p")))
    if command.name == "gradle":
        # Gradle matches task names regardless of case (`bootjar` runs bootJar).
        goals = {goal.lower() for goal in goals}
    if command.name == "mvn":
        if any(goal.startswith(("dependency:go-offline", "dependency:resolve")) for goal in goals):
            return Install("maven", "manifest")
        return Install("maven", "implicit") if goals & _MAVEN_BUILDS else None
    if command.name == "gradle":
        if "dependencies" in goals or command.option("--refresh-dependencies"):
            return Install("gradle", "manifest")
        return Install("gradle", "implicit") if goals & _GRADLE_BUILDS else None
    return None


def _other(command: Command) -> Install | None:
    name, sub = command.name, command.subcommand()
    table: dict[tuple[str, str | None], Install] = {
        ("bundle", "install"): Install("bundler", "manifest"),
        ("bundle", None): Install("bundler", "manifest"),
        ("composer", "install"): Install("composer", "manifest"),
        ("composer", "update"): Install("composer", "manifest"),
        ("composer", "require"): Install("composer", "packages"),
        ("dotnet", "restore"): Install("dotnet", "manifest"),
        ("dotnet", "build"): Install("dotnet", "implicit"),
        ("dotnet", "publish"): Install("dotnet", "implicit"),
        ("mix", "deps.get"): Install("mix", "manifest"),
        ("poetry", "install"): Install("poetry", "manifest"),
        ("pipenv", "install"): Install("pipenv", "manifest"),
        ("pipenv", "sync"): Install("pipenv", "manifest"),
        ("uv", "sync"): Install("uv", "manifest"),
    }
    if name == "uv" and sub == "pip" and "install" in command.args:
        return Install("uv", "manifest" if command.option("-r", "--requirement") else "packages")
    return table.get((name, sub))


# `yarn --version` is a smoke test: a bare `yarn` (or `bundle`) installs, but not when it only asks this.
_ONLY_ASKS = frozenset({"--version", "-v", "-V", "--help", "-h"})


def dependency_install(command: Command, go_stage: bool = False) -> Install | None:
    """The ecosystem and kind of dependency install this command runs, if any."""
    command = normalize(command)
    if command.args and set(command.args) <= _ONLY_ASKS:
        return None
    if command.name == "pip":
        return _pip(command)
    if command.name in ("npm", "yarn", "pnpm"):
        return _node(command)
    if command.name in ("go", "make"):
        return _go(command, go_stage)
    if command.name == "cargo":
        return _cargo(command)
    if command.name in ("mvn", "gradle"):
        return _jvm(command)
    return _other(command)


def os_install(command: Command) -> bool:
    """apk add, apt-get install, yum/dnf/microdnf/zypper install: OS packages."""
    command = normalize(command)
    sub = command.subcommand(("-o", "-t", "--repository", "-X", "--virtual", "-t"))
    if command.name == "apk":
        return sub == "add"
    if command.name in ("apt-get", "aptitude"):
        return sub == "install"
    if command.name in ("yum", "dnf", "microdnf", "zypper", "tdnf"):
        return sub in ("install", "in")
    return False


def compile_step(command: Command, go_stage: bool = False) -> tuple[str, bool, bool] | None:
    """(what, cross_friendly, native_output) when the command compiles; None otherwise."""
    command = normalize(command)
    name = command.name
    sub = command.subcommand(("-o", "-C", "-ldflags", "--target", "-p", "-f", "--prefix", "--cwd"))
    if name == "go" and sub in ("build", "install"):
        return (f"go {sub}", True, True)
    if name == "make" and go_stage:
        return ("make (go build)", True, True)
    if (
        name == "cargo"
        and sub in ("build", "install")
        and not (sub == "install" and not command.option("--path"))
    ):
        return (f"cargo {sub}", True, True)
    if name in ("rustc", "gcc", "g++", "cc", "c++", "clang", "clang++"):
        return (name, False, True)
    if name == "zig" and sub == "build":
        return ("zig build", True, True)
    if name in ("mvn", "gradle"):
        found = _jvm(command)
        return (name, True, False) if found is not None and found.kind == "implicit" else None
    if name == "dotnet" and sub in ("build", "publish"):
        return (f"dotnet {sub}", True, False)
    if name in ("npm", "yarn", "pnpm") and (
        sub == "build" or (sub == "run" and "build" in command.args[1:2])
    ):
        return (f"{name} run build", True, False)
    if name in ("tsc", "webpack", "hugo") or (name == "vite" and sub == "build"):
        return (name, True, False)
    if name == "pip" and sub == "wheel":
        return ("pip wheel", False, True)
    return None


__all__ = [
    "CACHE_DIRS",
    "MANIFESTS",
    "Install",
    "compile_step",
    "dependency_install",
    "normalize",
    "os_install",
]
