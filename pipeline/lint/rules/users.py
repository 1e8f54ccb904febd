"""PL31x the user the image runs as.

Root is fine, and not reported, when the image gives it up itself (an entrypoint that execs through gosu,
su-exec, setpriv, `chroot --userspec`...), when it is a base or builder image meant to be extended (no
ENTRYPOINT/CMD of its own, or a bare shell), when it runs on Windows, or when its job needs root (entering
host namespaces, docker-in-docker), or when its base image's own entrypoint drops privileges (nginx,
php-fpm, the official database images).
"""

from __future__ import annotations

import re

from pipeline.dockerfile import Instruction, Stage, split_words
from pipeline.lint.copies import context_sources
from pipeline.lint.findings import Finding, Rule
from pipeline.lint.model import BuildModel
from pipeline.lint.shell import Command, commands

NO_USER = Rule(
    "PL310", "warning", "no USER: the container runs as root", "add USER with a numeric non-root uid"
)
ROOT_USER = Rule(
    "PL311", "warning", "last USER is root", "switch to a non-root USER after the root-only steps"
)
RULES = (NO_USER, ROOT_USER)

_DROPPERS = frozenset(
    {"gosu", "su-exec", "setpriv", "runuser", "s6-setuidgid", "setuidgid", "chpst", "suexec"}
)
_SHELLS = frozenset({"sh", "bash", "ash", "dash", "zsh", "pwsh", "powershell", "cmd", "fish"})
# The servers of those images, as their CMD names them.
_SELF_DROPPING_SERVERS = frozenset(
    {
        "nginx",
        "php-fpm",
        "httpd-foreground",
        "apache2-foreground",
        "httpd",
        "postgres",
        "redis-server",
        "mysqld",
        "mariadbd",
        "mongod",
        "rabbitmq-server",
        "memcached",
        "docker-php-entrypoint",
    }
)
# Programs whose job is root's: entering the host's namespaces, running a Docker engine.
_NEEDS_ROOT = frozenset({"nsenter", "dockerd", "dockerd-entrypoint.sh", "chroot", "modprobe", "iptables"})
_DOCKER_CLIENTS = frozenset({"docker", "docker-cli", "docker-ce-cli", "docker.io", "docker-cli-compose"})
# Official images whose own entrypoint or server drops root after binding ports or fixing volume owners.
_SELF_DROPPING_BASES = re.compile(
    r"^(?:docker\.io/)?(?:library/)?(nginx|httpd|php|postgres|redis|mysql|mariadb|mongo|rabbitmq|memcached|"
    r"elasticsearch|cassandra|couchdb|docker|jenkins/jenkins)(:|$)"
)


def check(model: BuildModel) -> list[Finding]:
    shipped = model.shipped
    if not shipped or any(model.is_windows(stage) for stage in shipped):
        return []
    for stage in shipped:  # the final stage first, then what it is built FROM
        users = [i for i in stage.instructions if i.keyword == "USER"]
        if users:
            last = users[-1]
            user = (split_words(last.arguments) or [""])[0].split(":", 1)[0]
            if user not in ("root", "0") or _root_is_intended(model, shipped, has_user=True):
                return []
            return [
                ROOT_USER.at(
                    model.path,
                    last.start_line,
                    "the image ends as USER root; add USER <uid> (e.g. 10001) after the steps that need root",
                )
            ]
    base = model.resolve_base(shipped[-1]).lower()
    if "nonroot" in base or "rootless" in base or _root_is_intended(model, shipped):
        return []
    final = shipped[0]
    return [
        NO_USER.at(
            model.path,
            final.from_instruction.start_line,
            f"{final.label} (the image that ships) never sets USER, so it runs as root; add USER 10001:10001 "
            "(numeric, so Kubernetes runAsNonRoot can verify it) near its end",
        )
    ]


def _last(shipped: list[Stage], keyword: str) -> Instruction | None:
    for stage in shipped:
        found = [i for i in stage.instructions if i.keyword == keyword]
        if found:
            return found[-1]
    return None


def _words(instruction: Instruction | None) -> list[str]:
    if instruction is None:
        return []
    if instruction.exec_form is not None:
        return list(instruction.exec_form)
    return split_words(instruction.arguments)


def _root_is_intended(model: BuildModel, shipped: list[Stage], has_user: bool = False) -> bool:
    entrypoint = _words(_last(shipped, "ENTRYPOINT"))
    cmd = _words(_last(shipped, "CMD"))
    program = entrypoint or cmd
    if not program:
        # No ENTRYPOINT/CMD of its own: a base or builder image meant to be extended, or its base's own.
        base = model.resolve_base(shipped[-1]).lower()
        return not _last(shipped, "EXPOSE") or bool(_SELF_DROPPING_BASES.match(base))
    if not entrypoint and program[0].rsplit("/", 1)[-1] in _SHELLS and len(program) == 1:
        return True  # CMD ["/bin/sh"]: a toolbox image, run interactively
    if _SELF_DROPPING_BASES.match(model.resolve_base(shipped[-1]).lower()) and (
        not entrypoint and program[0].rsplit("/", 1)[-1] in _SELF_DROPPING_SERVERS
    ):
        return True
    if model.context is not None and any(model.context.sent(name) for name in ("action.yml", "action.yaml")):
        return True  # a GitHub Docker action: GitHub runs it as root and documents that USER must not be set
    inline = _inline_commands(program)
    if any(c.name in _DROPPERS or c.name in _NEEDS_ROOT for c in inline) or any(
        w.rsplit("/", 1)[-1] in _NEEDS_ROOT for w in program
    ):
        return True
    if any(c.name == "chroot" and c.option("--userspec") for c in inline) or _drives_docker(model, shipped):
        return True
    script = _entrypoint_script(model, shipped, program)
    if script is not None:
        return any(_drops(c) for c in commands(script))
    # The script is not readable here: a privilege-dropping tool installed in the image, or a user created
    # but never switched to with USER, says that the entrypoint script switches to it.
    created = not has_user and _is_script(program[0]) and _creates_user(model, shipped)
    return _installs_dropper(model, shipped) or created


def _is_script(executable: str) -> bool:
    name = executable.rsplit("/", 1)[-1]
    return name.endswith(".sh") or "entrypoint" in name or name in _SHELLS


def _creates_user(model: BuildModel, shipped: list[Stage]) -> bool:
    return any(
        c.name in ("adduser", "useradd")
        for stage in shipped
        for instruction in model.runs(stage)
        for c in model.commands(instruction)
    )


def _inline_commands(program: list[str]) -> list[Command]:
    if program and program[0].rsplit("/", 1)[-1] in _SHELLS and "-c" in program:
        index = program.index("-c")
        return commands(" ".join(program[index + 1 :]))
    return [Command(program[0].rsplit("/", 1)[-1], tuple(program[1:])), *commands(" ".join(program[1:2]))]


def _drops(command: Command) -> bool:
    if command.name in _DROPPERS:
        return True
    if command.name == "chroot" and command.option("--userspec"):
        return True
    return command.name in ("su", "sudo") and (command.option("-c", "-u") or bool(command.positionals()))


def _entrypoint_script(model: BuildModel, shipped: list[Stage], program: list[str]) -> str | None:
    """The text of the entrypoint script, found through the COPY that put it in the image."""
    if model.context is None:
        return None
    executable = program[0]
    if executable.rsplit("/", 1)[-1] in _SHELLS and len(program) > 1:
        executable = program[1]
    name = executable.rsplit("/", 1)[-1]
    for stage in shipped:
        for instruction in stage.instructions:
            if instruction.keyword not in ("COPY", "ADD"):
                continue
            words = instruction.words()
            if len(words) < 2:
                continue
            destination = words[-1]
            for source in context_sources(instruction):
                if (
                    destination == executable
                    or destination.rstrip("/").endswith("/" + name)
                    or (destination.endswith("/") and source.rsplit("/", 1)[-1] == name)
                    or source.rsplit("/", 1)[-1] == name
                ):
                    text = model.context.read(source)
                    if text is not None:
                        return text
                    folder = model.context.read(source.rstrip("/") + "/" + name)
                    if folder is not None:
                        return folder
    return model.context.read(name)


def _drives_docker(model: BuildModel, shipped: list[Stage]) -> bool:
    """The image installs a Docker client to drive the host's engine through its socket, which needs root."""
    return any(
        command.name in ("apk", "apt-get", "apt", "yum", "dnf")
        and any(arg in _DOCKER_CLIENTS for arg in command.args)
        for stage in shipped
        for instruction in model.runs(stage)
        for command in model.commands(instruction)
    )


def _installs_dropper(model: BuildModel, shipped: list[Stage]) -> bool:
    for stage in shipped:
        for instruction in stage.instructions:
            if instruction.keyword == "COPY" and any(
                re.search(r"(^|/)(gosu|su-exec)$", w) for w in instruction.words()
            ):
                return True
            if instruction.keyword != "RUN":
                continue
            for command in model.commands(instruction):
                if command.name in ("apk", "apt-get", "apt", "yum", "dnf") and any(
                    arg in ("gosu", "su-exec") or arg.startswith("gosu=") for arg in command.args
                ):
                    return True
                if command.name in ("wget", "curl") and any(
                    "gosu" in arg or "su-exec" in arg for arg in command.args
                ):
                    return True
    return False
