"""pytest fixtures for tests that need isolated services (registered as the ``isobox``
pytest plugin when isobox is installed).

    def test_cache(isobox_container):
        c = isobox_container("redis:7", name="cache")
        c.wait_for_port(6379)
        ...

Every container a test starts through the factory is removed when the test ends, pass or
fail, and its output is attached to the report of a failing test.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, List, Union

import pytest

from .runtime.container import Container
from .images.image import Image


@pytest.fixture
def isobox_container(request: pytest.FixtureRequest) -> Iterator[Callable[..., Container]]:
    """A factory: ``isobox_container(image, command=None, **options)`` starts a container
    (an `Image` or a reference, taken from the store or pulled) and returns it."""
    started: List[Container] = []

    def start(image: Union[Image, str], command: Any = None, **options: Any) -> Container:
        if isinstance(image, str):
            image = Image.pull(image, if_missing=True, store=options.get("store"))
        container = Container(image, command, **options)
        started.append(container)
        return container.start()

    yield start
    failed = getattr(request.node, "rep_call", None)
    for container in reversed(started):
        if failed is not None and failed.failed:
            try:
                request.node.add_report_section(
                    "call", f"isobox {container.name}", container.logs().decode("utf-8", "replace"))
            except Exception:  # the report is best effort; removal is not
                pass
        container.remove(force=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: Any) -> Iterator[Any]:
    outcome: Any = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
