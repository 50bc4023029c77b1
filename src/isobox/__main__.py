"""``python -m isobox``: the same as the ``isobox`` command."""

from __future__ import annotations

from .cli import entry

if __name__ == "__main__":
    entry()
