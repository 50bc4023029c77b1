"""The host floor: what every wing stands on and nothing above it decides.

`native` is the one CFFI boundary to the C core (`isobox._native`: clone, mounts,
openat2, the tree walk, pidfds); `idmap` finds the caller's subordinate id ranges and
writes a user namespace's maps; `fs` replaces files whole and removes trees (the one
remover: the C walk, a Python walk, a user namespace for subordinate ids' files).
Imports only `isobox.errors` and the standard library.
"""
