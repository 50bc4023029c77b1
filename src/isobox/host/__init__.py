"""The host floor: what every wing stands on and nothing above it decides.

`native` is the one CFFI boundary to the C core (`isobox._native`: clone, mounts,
openat2, the tree walk, pidfds); `idmap` finds the caller's subordinate id ranges and
writes a user namespace's maps. Imports only `isobox.errors` and the standard library.
"""
