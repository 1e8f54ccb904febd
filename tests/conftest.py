"""Shared fixtures. Fixture families live in their own modules and are loaded as plugins."""

from __future__ import annotations

pytest_plugins = [
    "tests.fixtures.freshmachine",
    "tests.fixtures.engine",
    "tests.fixtures.leftovers",
    "tests.fixtures.registries",
    "tests.fixtures.gitrepos",
    "tests.fixtures.faultproxy",
    "tests.fixtures.hostedrunner",
    "tests.fixtures.hub",
    "tests.fixtures.tlsregistry",
    "tests.fixtures.connectproxy",
]
