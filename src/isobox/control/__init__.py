"""Containers owned by another process: the control socket and its clients.

`owner` is the one sequence of owning a container for others to see (start it, record
how it was made, serve its socket, attend to it, finish), which the isobox command's
foreground run and the supervisor both follow, with `signals` (noted, not raised, from
before the start); `server` serves a running container's unix socket (inspect, wait,
exec, stop, kill, remove, its root for copies, its terminal's size) for the process that
owns it; `client` finds containers on disk and talks to their sockets (`containers()`,
`get_container()`, `ContainerHandle`: the same face as a `Container`); `supervisor` is
the small process that owns a detached container (`isobox run -d`, `run_detached`).
Depends on `isobox.runtime` and below.
"""
