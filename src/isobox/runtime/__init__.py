"""The runtime wing: an image and options in, a sandboxed process out.

`container` is the public `Container` (start, wait, stop, exec, logs, remove), made from
a `config` (`ContainerConfig`: the options checked, and their one JSON form); `protocol`
is the face it shares with a container another process owns (`ContainerProtocol`). What
it asks the C core to do is planned by `rootfs` and `mounts` (the ordered mount
operations), `users` (the image's users and groups), `seccomp` (Docker's profile,
compiled to BPF), `devices` and `cgroups` (the device policy and limits); `spawn` is
what starting children needs process-wide (the spawner thread, forks, fd limits),
`stdio` its processes' pipes, `tty` terminals; `logs` pumps and rotates output; `state`
is what is known about a container on disk (`ContainerState`: one writer, one reader);
`rundir` its run-time files on a tmpfs; `copy` is `docker cp`; `wait` the readiness
waits; `named_volumes` the volumes that outlive containers; `spelling` how users write
commands, environments, signals and names; `doctor` what this host allows. Depends on
`isobox.images`, `isobox.net` (published ports) and `isobox.host`.
"""
