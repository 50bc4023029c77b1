"""``python -m isobox.oci``: the isobox-runtime command."""

from .cli import entry

entry()
