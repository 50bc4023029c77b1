"""The native core: C for what must not run Python (the container child) and for the
syscalls Python's standard library does not expose. Built by CFFI; see build.py."""
