"""Containers owned by another process: the control socket and its clients.

`server` serves a running container's unix socket (inspect, wait, exec, stop, kill,
remove) for the process that owns it; `client` finds containers on disk and talks to
their sockets (`containers()`, `get_container()`, `ContainerHandle`); `supervisor` is the
small process that owns a detached container (`isobox run -d`, `run_detached`). Depends on
`isobox.runtime` and below.
"""
