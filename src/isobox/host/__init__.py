"""The host floor: what every wing stands on and nothing above it decides.

`native` is the one CFFI boundary to the C core (`isobox._native`: clone, mounts,
openat2, the tree walk, pidfds); `idmap` finds the caller's subordinate id ranges and
writes a user namespace's maps; `privilege` decides rootful or rootless once (a store
carries the decision down); `fs` replaces files whole and removes trees (the one
remover: the C walk, a Python walk, a user namespace for subordinate ids' files);
`remover` is the process's background thread that removes what a store moved aside.
Imports only `isobox.errors`, attrs and the standard library.
"""
