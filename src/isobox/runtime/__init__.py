"""The runtime wing: an image and options in, a sandboxed process out.

`container` is the public `Container` (start, wait, stop, exec, logs, remove); what it
asks the C core to do is planned by `rootfs` and `mounts` (the ordered mount operations),
`users` (the image's users and groups), `seccomp` (Docker's profile, compiled to BPF),
`devices` and `cgroups` (the device policy and limits); `logs` pumps and rotates output;
`state` keeps what is known about a container on disk; `copy` is `docker cp`; `wait` the
readiness waits; `named_volumes` the volumes that outlive containers; `spelling` how
users write environments, signals and names; `doctor` what this host allows. Depends on
`isobox.images` and `isobox.host`.
"""
