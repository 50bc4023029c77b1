"""Shared test set-up. Fixtures live in tests/fixtures/, one module per real part."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

pytest_plugins = [
    "fixtures.host",
    "fixtures.rootfs",
    "fixtures.registry",
    "fixtures.images",
]

# No example database: the suite also runs as an unprivileged user from a read-only tree.
settings.register_profile(
    "isobox", database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("isobox")
