/* isobox native core: the file-system syscalls Python's os module lacks (see fsops.c).
 * The one place for openat2's flags and struct: spawn.c includes this header, and
 * Python reads the IB_RESOLVE_* values through fsops.cdef (lib.IB_RESOLVE_IN_ROOT). */
#ifndef ISOBOX_FSOPS_H
#define ISOBOX_FSOPS_H

#include <stdint.h>

/* openat2(2) resolve flags, as <linux/openat2.h> numbers them (kernel >= 5.6). */
#define IB_RESOLVE_NO_XDEV 0x01
#define IB_RESOLVE_NO_MAGICLINKS 0x02
#define IB_RESOLVE_NO_SYMLINKS 0x04
#define IB_RESOLVE_BENEATH 0x08
#define IB_RESOLVE_IN_ROOT 0x10

/* struct open_how from <linux/openat2.h>, spelt out so that building needs no recent
 * kernel headers; the kernel checks the size we pass (extensible struct, openat2(2)). */
struct ib_open_how {
    uint64_t flags;
    uint64_t mode;
    uint64_t resolve;
};

/* openat2(2) with the given open(2) flags, mode and RESOLVE_* flags.
 * Returns the new fd, or -errno (never sets errno for the caller to read). */
int ib_openat2(int dirfd, const char *path, int flags, unsigned int mode, uint64_t resolve);

/* Removes the tree at path (relative to dirfd, or AT_FDCWD), never following a symlink:
 * the directory's content, then the directory; a missing path is fine.  Async-signal-safe
 * (the child of a user namespace uses it, IB_OP_RMTREE).  Returns 0, or -errno (path is
 * not a directory: -ENOTDIR; deeper than 65536 levels: -ELOOP). */
int ib_remove_tree(int dirfd, const char *path);

#endif
