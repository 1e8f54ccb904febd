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
from pipeline.lint.commands import compile_step
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
        # `apache2ctl -D FOREGROUND` starts the same server as apache2-foreground, workers as www-data.
        "apache2ctl",
        "apachectl",
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
# buildkitd and containerd mount filesystems and create namespaces for what they run, as dockerd does.
_NEEDS_ROOT = frozenset(
    {
        "nsenter",
        "dockerd",
        "dockerd-entrypoint.sh",
        "buildkitd",
        "containerd",
        "chroot",
        "modprobe",
        "iptables",
    }
)
_SUPERVISORS = frozenset({"supervisord", "supervisor", "s6-svscan", "s6-overlay", "runsvdir", "runit"})
# Images built around a supervisor running nginx and php-fpm (webdevops, serversideup, trafex...).
_SUPERVISED_BASE = re.compile(r"(^|/)(php-nginx|php-apache|php-fpm-nginx)[:@]|^webdevops/")
_PACKAGE_MANAGERS = frozenset({"apk", "apt-get", "apt", "yum", "dnf", "microdnf", "zypper"})
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
    # Ubuntu chiseled images (the .NET ones) run as their non-root `app` user by default, as `:nonroot` does.
    if any(word in base for word in ("nonroot", "rootless", "chiseled")) or _root_is_intended(model, shipped):
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


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def _root_is_intended(model: BuildModel, shipped: list[Stage], has_user: bool = False) -> bool:
    entrypoint = _words(_last(shipped, "ENTRYPOINT"))
    program = entrypoint or _words(_last(shipped, "CMD"))
    return (
        _meant_to_be_extended(model, shipped, program, bool(entrypoint))
        or _runs_as_github_action(model)
        or _needs_root(model, shipped, program)
        or _drops_root(model, shipped, program, has_user)
    )


def _meant_to_be_extended(
    model: BuildModel, shipped: list[Stage], program: list[str], entrypoint: bool
) -> bool:
    """A base or toolbox image, or one whose base image's own server gives up root."""
    base = model.resolve_base(shipped[-1]).lower()
    if not program:
        # No ENTRYPOINT/CMD of its own: meant to be extended, unless it exposes a service of its base's.
        return not _last(shipped, "EXPOSE") or bool(_SELF_DROPPING_BASES.match(base))
    if entrypoint:
        return False
    if _basename(program[0]) in _SHELLS and len(program) == 1:
        return True  # CMD ["/bin/sh"]: a toolbox image, run interactively
    return bool(_SELF_DROPPING_BASES.match(base)) and _basename(program[0]) in _SELF_DROPPING_SERVERS


def _runs_as_github_action(model: BuildModel) -> bool:
    # GitHub runs Docker actions as root and documents that their Dockerfile must not set USER.
    return model.context is not None and any(model.context.sent(n) for n in ("action.yml", "action.yaml"))


def _needs_root(model: BuildModel, shipped: list[Stage], program: list[str]) -> bool:
    inline = _inline_commands(program)
    return (
        any(c.name in _NEEDS_ROOT for c in inline)
        or any(_basename(word) in _NEEDS_ROOT for word in program)
        or _drives_docker(model, shipped)
        or _runs_a_supervisor(model, shipped, inline)
        # A build container (`ENTRYPOINT ["cargo", "build"]`) works on a mounted workspace as its owner.
        or (bool(inline) and compile_step(inline[0]) is not None)
    )


def _runs_a_supervisor(model: BuildModel, shipped: list[Stage], inline: list[Command]) -> bool:
    """A process supervisor starts the services as the users they are configured with, so it runs as root."""
    if any(c.name in _SUPERVISORS for c in inline):
        return True
    base = model.resolve_base(shipped[-1]).lower()
    return _SUPERVISED_BASE.search(base) is not None or any(
        command.name in _PACKAGE_MANAGERS and any(arg in _SUPERVISORS for arg in command.args)
        for stage in shipped
        for instruction in model.runs(stage)
        for command in model.commands(instruction)
    )


def _drops_root(model: BuildModel, shipped: list[Stage], program: list[str], has_user: bool) -> bool:
    if any(_drops(c) for c in _inline_commands(program)):
        return True
    script = _entrypoint_script(model, shipped, program)
    if script is not None:
        return any(_drops(c) for c in commands(script))
    # The script is not readable here: a privilege-dropping tool installed in the image, or a user created
    # but never switched to with USER, says that the entrypoint script switches to it.
    # No program at all (an EXPOSE but no ENTRYPOINT/CMD): nothing to read, so nothing that drops root.
    created = not has_user and bool(program) and _is_script(program[0]) and _creates_user(model, shipped)
    return _installs_dropper(model, shipped) or created


def _is_script(executable: str) -> bool:
    name = _basename(executable)
    return name.endswith(".sh") or "entrypoint" in name or name in _SHELLS


def _creates_user(model: BuildModel, shipped: list[Stage]) -> bool:
    return any(
        c.name in ("adduser", "useradd")
        for stage in shipped
        for instruction in model.runs(stage)
        for c in model.commands(instruction)
    )


def _inline_commands(program: list[str]) -> list[Command]:
    """What an exec-form ENTRYPOINT/CMD runs: `sh -c '...'` read as a script, else the program itself
    (and a wrapper's first argument, as in `tini -- gosu app server`)."""
    if not program:
        return []
    if _basename(program[0]) in _SHELLS and "-c" in program:
        return commands(" ".join(program[program.index("-c") + 1 :]))
    return [Command(_basename(program[0]), tuple(program[1:])), *commands(" ".join(program[1:]))]


def _drops(command: Command) -> bool:
    if command.name in _DROPPERS:
        return True
    if command.name == "chroot" and command.option("--userspec"):
        return True
    return command.name in ("su", "sudo") and (command.option("-c", "-u") or bool(command.positionals()))


def _entrypoint_script(model: BuildModel, shipped: list[Stage], program: list[str]) -> str | None:
    """The entrypoint script's text, read from the context file that a COPY/ADD put where it runs."""
    if model.context is None or not program:
        return None
    executable = program[1] if _basename(program[0]) in _SHELLS and len(program) > 1 else program[0]
    name = _basename(executable)
    for stage in shipped:
        for instruction in stage.instructions:
            words = instruction.words() if instruction.keyword in ("COPY", "ADD") else []
            for source in context_sources(instruction):
                lands = words[-1] + _basename(source) if words[-1].endswith("/") else words[-1]
                if lands != executable and _basename(lands) != name:
                    continue
                text = model.context.read(source) or model.context.read(f"{source.rstrip('/')}/{name}")
                if text is not None:
                    return text
    # Scripts copied with their folder (`COPY rootfs/ /`) are often at the context's root under their name.
    return model.context.read(name)


def _drives_docker(model: BuildModel, shipped: list[Stage]) -> bool:
    """The image installs a Docker client to drive the host's engine through its socket, which needs root."""
    return any(
        command.name in _PACKAGE_MANAGERS and any(arg in _DOCKER_CLIENTS for arg in command.args)
        for stage in shipped
        for instruction in model.runs(stage)
        for command in model.commands(instruction)
    )


def _installs_dropper(model: BuildModel, shipped: list[Stage]) -> bool:
    """gosu or su-exec put in the image: by a package manager, a download, or a COPY."""
    for stage in shipped:
        for instruction in stage.instructions:
            if instruction.keyword == "COPY" and any(
                _basename(w) in ("gosu", "su-exec") for w in instruction.words()
            ):
                return True
            for command in model.commands(instruction) if instruction.keyword == "RUN" else []:
                named = command.args if command.name in _PACKAGE_MANAGERS else ()
                fetched = command.args if command.name in ("wget", "curl") else ()
                if any(a.split("=")[0] in ("gosu", "su-exec") for a in named) or any(
                    "gosu" in a or "su-exec" in a for a in fetched
                ):
                    return True
    return False
