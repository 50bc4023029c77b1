"""Shared test set-up. Fixtures live in tests/fixtures/, one module per real part; the
pytest-free helpers they wrap (which the benchmarks import too) in tests/support/."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

pytest_plugins = [
    "fixtures.host",
    "fixtures.rootfs",
    "fixtures.registry",
    "fixtures.images",
    "fixtures.faults",
    "fixtures.examples",
    "fixtures.seam",
    "pytester",  # test_seam.py runs small test files
]

# No example database: the suite also runs as an unprivileged user from a read-only tree.
settings.register_profile(
    "isobox", database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("isobox")


def pytest_sessionfinish(session: object, exitstatus: int) -> None:
    """Without root, rootless pulls and containers leave files owned by the caller's
    subordinate ids in pytest's temp dirs, which pytest itself cannot delete: remove those
    trees through isobox's own user-namespace removal, so no test run leaks them."""
    import getpass
    import os
    import pathlib
    import tempfile

    if os.geteuid() == 0:
        return
    from isobox.host.fs import remove_tree

    base = pathlib.Path(tempfile.gettempdir()) / f"pytest-of-{getpass.getuser()}"
    if not base.is_dir():
        return
    me = os.geteuid()
    for top in base.iterdir():
        if top.is_symlink() or not top.is_dir():
            continue
        if _holds_foreign_files(str(top), me):
            try:
                remove_tree(top)
            except Exception:  # best effort: never turn a green run red at teardown
                pass


def _holds_foreign_files(top: str, me: int) -> bool:
    """Whether anything below ``top`` belongs to another uid. Iterative: tests nest
    directories deeper than os.walk can recurse."""
    import os

    stack = [top]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                if entry.stat(follow_symlinks=False).st_uid != me:
                    return True
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
            except OSError:
                pass
    return False
