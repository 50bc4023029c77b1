"""isobox as an OCI runtime: ``isobox-runtime``, runc's command line over the library's own
core, for containerd's shim, Podman's conmon and the OCI runtime validation suite.

`bundle` reads a bundle's config.json into checked values (refusing by name what it
cannot do yet); `plan` turns them into the native core's `Spec` — the same struct, and so
the same C child, as the library's `Container` — with `seccomp` compiling the spec's
profile by the library's compiler; `state` is what is known about a container under
``--root`` (one writer, one reader); `lifecycle` is create, start, state, kill, delete and
run, with the exec-fifo hand-off between create and start; `cli` the command line.

A wing beside `control` (both stand on `runtime`; neither imports the other): it drives
containers the way an engine's runtime does, one process per operation, where `control`
is the library's own way of owning a container from another process.
"""
