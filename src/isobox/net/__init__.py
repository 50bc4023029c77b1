"""The network wing: what joins a container's network to the host's.

`ports` holds published ports as values (`PortBinding`: docker-py's ``ports=`` mapping
and Docker's ``-p`` strings parsed once, their JSON form, `PortMap`, how bound ports read
back for ``c.ports``, ``isobox port`` and ``isobox ps``); `forward` owns the forwarder:
the host's sockets, bound before the container starts, and the native process that
joins the container's network namespace and moves the bytes (_native/forward.c).
Beside the image wing, below the runtime; depends on `isobox.host` only.
"""
