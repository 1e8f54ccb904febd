"""Typed failures. Every expected failure is a PipelineError; the CLI prints its one line and exits non-zero."""

from __future__ import annotations


class PipelineError(Exception):
    """An expected failure with a one-line message that names what is wrong and what to do."""

    exit_code = 1


class ConfigError(PipelineError):
    """The configuration file is missing or invalid."""

    exit_code = 2


class PreflightError(ConfigError):
    """Checks before any build found problems: one line each, all of them at once."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class EngineError(PipelineError):
    """No usable container engine, and none could be provisioned."""


class RegistryError(PipelineError):
    """A registry could not be started, reached or used."""


class AuthError(RegistryError):
    """A registry refused the credentials (or none were given); not worth retrying."""


class GitError(PipelineError):
    """The git repository cannot give a version (not a repository, shallow clone, dirty tree...)."""


class BuildError(PipelineError):
    """A buildx build failed."""


class SmokeError(PipelineError):
    """A smoke check failed, so nothing may be promoted."""


class LintError(PipelineError):
    """Lint found errors, or could not run."""


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: the run stops, cleans up, writes its report and exits 128 + signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class SignError(PipelineError):
    """Signing, attesting or verifying with cosign failed, or its key/password are missing or wrong."""


class DeployError(PipelineError):
    """A deploy was refused before anything changed, or a rollout failed and was rolled back."""
