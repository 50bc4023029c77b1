"""How an `Image` shows itself: a one-line repr, and a small escaped table in notebooks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import isobox
from isobox.images.image import Image
from isobox.images.store import Store


def test_repr_is_one_short_line(hub_mirror, tmp_path):
    image = Image.pull("busybox", store=Store.open(tmp_path / "store"))
    text = repr(image)
    assert re.fullmatch(
        r"<Image busybox:latest sha256:[0-9a-f]{12} linux/amd64 [0-9.]+ [kM]B>", text), text
    assert image.id is not None and image.id[:19] in text  # the ID, as `isobox images` shows
    assert "\n" not in text and len(text) < 100


@pytest.mark.unit
def test_repr_of_a_directory_image_names_the_directory(tmp_path):
    root = tmp_path / "root\x1b[2Jfs"
    root.mkdir()
    text = repr(Image.from_directory(root))
    assert text.startswith("<Image /") and text.endswith("root\\x1b[2Jfs>")
    assert "\x1b" not in text


def test_repr_html_is_a_table_with_everything_escaped(registry, tmp_path):
    hostile = "<script>alert('x')</script>"
    config = {"architecture": "amd64", "os": "linux", "created": "2024-01-02T03:04:05Z",
              "rootfs": {"type": "layers", "diff_ids": []},
              "config": {"Cmd": [hostile, "&amp;"], "Labels": {"a": hostile}}}
    registry.push_image("isobox-test/repr", "latest", [], config)
    image = Image.pull(f"{registry.host}/isobox-test/repr:latest", store=tmp_path / "store")
    page = image._repr_html_()
    assert page.startswith("<table>") and page.endswith("</table>")
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "&amp;amp;" in page  # escaped once more, shown as the text it is
    for value in (image.id, image.digest, "linux/amd64", "2024-01-02T03:04:05Z"):
        assert value in page
    assert isinstance(image, isobox.Image)


@pytest.mark.unit
def test_directory_image_html_has_no_empty_rows(tmp_path: Path):
    page = Image.from_directory(tmp_path)._repr_html_()
    assert "Reference" in page and "ID" not in page and "Size" not in page
