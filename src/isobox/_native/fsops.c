/* isobox native core: file-system syscalls Python's os module lacks.
 *
 * Only openat2(2) so far. Layer extraction (unpack.py) resolves every parent directory
 * with it, relative to a file descriptor of the layer directory, so that the *kernel*
 * confines path resolution to that directory: a hostile archive's "..", absolute paths
 * and symlinks (its own, or ones planted by earlier entries) cannot lead outside it,
 * and no string check has to be right about it.  Everything else (mkdirat, symlinkat,
 * linkat, mknodat, fchownat, utimensat ...) Python already has through `dir_fd=`.
 *
 * Which RESOLVE_* flags to use is the caller's choice; the callers use:
 *   RESOLVE_IN_ROOT       treat dirfd as "/" for the whole lookup: absolute symlinks and
 *                         ".." are clamped to it, as in a chroot (openat2(2), Linux 5.6).
 *                         Everyone: unpack.py, users.py, copy.py, and spawn.c's paths
 *                         inside a container.
 *   RESOLVE_NO_MAGICLINKS refuse /proc/<pid>/fd-style links, which jump anywhere
 *                         regardless of the root (openat2(2), Linux 5.6).  Everyone.
 *   RESOLVE_NO_XDEV       never cross a mount point: a layer is one file system, and a
 *                         bind mount inside it would be a way out (openat2(2), Linux 5.6).
 *                         unpack.py.
 *   RESOLVE_NO_SYMLINKS   refuse every symlink instead of clamping it: users.py walks an
 *                         image's /etc one component at a time and follows nothing.
 *   RESOLVE_BENEATH is exported for a caller that wants to refuse "..", not clamp it.
 *
 * Like the rest of the parent-side core, the functions return and never exit: a negative
 * errno on failure (crun's convention), so Python can raise an OSError that names it.
 */
#define _GNU_SOURCE
#include "fsops.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_openat2
#define SYS_openat2 437 /* the same number on every architecture (asm-generic, Linux 5.6) */
#endif

int ib_openat2(int dirfd, const char *path, int flags, unsigned int mode, uint64_t resolve)
{
    struct ib_open_how how;
    memset(&how, 0, sizeof how);
    how.flags = (uint64_t)(unsigned int)flags;
    /* openat2 refuses a mode without O_CREAT/O_TMPFILE (EINVAL), unlike openat. */
    how.mode = ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) ? mode : 0;
    how.resolve = resolve;
    for (int attempt = 0;; attempt++) {
        long fd = syscall(SYS_openat2, dirfd, path, &how, sizeof how);
        if (fd >= 0)
            return (int)fd;
        /* EAGAIN: with RESOLVE_IN_ROOT/BENEATH the kernel could not rule out a ".." race
         * (a concurrent rename or mount) and asks the caller to retry (openat2(2)).
         * EINTR cannot normally happen on local file systems but is harmless to retry. */
        if ((errno == EAGAIN || errno == EINTR) && attempt < 64)
            continue;
        return -errno;
    }
}
