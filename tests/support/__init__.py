"""Helpers the tests and the benchmarks share, with no pytest in them.

A benchmark is a plain script: it imports these modules (``from support.registry import
Registry``) and never the pytest fixtures in ``tests/fixtures/``, which wrap these helpers
for the suite. A missing tool raises `support.host.MissingPrerequisite`; the suite turns
that into a skip (a failure in CI), a script into its error message.

- ``host``: facts about the machine (root or not, CI or not), finding tools.
- ``rootfs``: a root filesystem from Debian's busybox-static.
- ``registry``: a real docker-registry process (anonymous, Basic, token auth) and raw v2
  pushes.
- ``images``: the test images, built with umoci and skopeo and pushed to a registry.
- ``derive``: images derived from those, for the examples and the podman comparison.
- ``trees``: comparing directory trees and overlayfs layers file by file.
- ``proxy``: a counting forward proxy in front of a registry.
- ``faults``: an HTTP server that plays a registry badly on purpose.
"""
