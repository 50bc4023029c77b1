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

/* statfs(2)'s f_type of the file system holding path (a final symlink is followed), as
 * an unsigned 32-bit magic number: which file system a directory is on, without reading
 * and parsing /proc/self/mountinfo (some 40 us, on every container start: runtime/rundir.py).
 * Returns the magic, or -errno. */
int64_t ib_fs_type(const char *path);

/* f_type values (<linux/magic.h>): the memory file systems a runtime directory may be on. */
#define IB_TMPFS_MAGIC 0x01021994
#define IB_RAMFS_MAGIC 0x858458f6

#endif
