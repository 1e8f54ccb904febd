"""Registries: the configured ones, and the embedded local registry used when none is configured."""

from __future__ import annotations

from pipeline.config import LoadedConfig, RegistryConfig

LOCAL_REGISTRY_NAME = "local"


def planned_registries(config: LoadedConfig) -> tuple[RegistryConfig, ...]:
    """Where a release publishes: the configured registries, else the embedded local one (its default port)."""
    if config.pipeline.registries:
        return config.pipeline.registries
    return (RegistryConfig(name=LOCAL_REGISTRY_NAME, url=f"127.0.0.1:{config.pipeline.local_registry.port}"),)
