/* isobox native core: file-system syscalls Python's os module lacks.
 *
 * openat2(2). Layer extraction (unpack.py) resolves every parent directory
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
 * The tree walk (ib_remove_tree): removing what a container or a layer left, with
 * read-only and mode-000 directories and any depth, in C because it is the common case
 * of every `--rm` and because a user namespace's child (IB_OP_RMTREE) must do it without
 * Python.  host/fs.py's remove_tree calls it first and falls back to its own walk.
 *
 * ib_fs_type: statfs(2)'s f_type, which Python's os module does not expose (os.statvfs
 * has no type): whether a runtime directory's base is a tmpfs.
 *
 * Like the rest of the parent-side core, the functions return and never exit: a negative
 * errno on failure (crun's convention), so Python can raise an OSError that names it.
 */
#define _GNU_SOURCE
#include "fsops.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
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

/* Removes everything below a directory, then nothing else, with at most three fds open
 * and constant stack whatever the depth: a container can nest directories deeper than
 * any fd limit or stack.  It goes down with openat and back up with "..", checking that
 * each parent is the directory it left (ids[]: one (dev, ino) a level, from mmap, as
 * the child may not malloc).  A directory entry is first tried with rmdir, and entered
 * only when that finds it not empty, so no name is remembered for the way back up: the
 * parent's next pass removes the emptied child.  getdents64 fills one fixed buffer;
 * after a pass that removed anything the directory is read again from the start,
 * because unlinking shifts offsets. */
struct linux_dirent64 {
    uint64_t d_ino;
    int64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

struct ib_ident {
    dev_t dev;
    ino_t ino;
};

static int empty_tree(int top, struct ib_ident *ids, int max_depth)
{
    char buf[2048];
    struct stat st;
    int fd = top, depth = 0, removed = 0, saved;
    if (fstat(top, &st) < 0)
        return -1;
    ids[0] = (struct ib_ident){st.st_dev, st.st_ino};
    for (;;) {
        long n = syscall(SYS_getdents64, fd, buf, sizeof buf);
        int entered = 0;
        if (n < 0)
            goto fail;
        for (long off = 0; off < n && !entered;) {
            struct linux_dirent64 *d = (struct linux_dirent64 *)(buf + off);
            off += d->d_reclen;
            if (!strcmp(d->d_name, ".") || !strcmp(d->d_name, ".."))
                continue;
            if (unlinkat(fd, d->d_name, 0) == 0) {
                removed++;
                continue;
            }
            /* EISDIR: a directory; EPERM: a directory, or another user's entry in a
             * sticky directory (which rmdir refuses in turn, ENOTDIR or EPERM) */
            if (errno != EISDIR && errno != EPERM)
                goto fail;
            if (unlinkat(fd, d->d_name, AT_REMOVEDIR) == 0) {
                removed++;
                continue;
            }
            if (errno != ENOTEMPTY && errno != EEXIST)
                goto fail;
            if (depth >= max_depth) {
                errno = ELOOP;
                goto fail;
            }
            /* not empty: make it searchable and writable (overlayfs leaves work/work with
             * mode 000) and enter it; never through a symlink: glibc does fchmodat with
             * AT_SYMLINK_NOFOLLOW without following (fchmodat2) */
            fchmodat(fd, d->d_name, 0700, AT_SYMLINK_NOFOLLOW);
            int sub = openat(fd, d->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sub < 0)
                goto fail;
            if (fstat(sub, &st) < 0) {
                saved = errno;
                close(sub);
                errno = saved;
                goto fail;
            }
            ids[++depth] = (struct ib_ident){st.st_dev, st.st_ino};
            if (fd != top)
                close(fd);
            fd = sub;
            removed = 0;
            entered = 1;
        }
        if (entered || n > 0)
            continue;
        if (removed) { /* the end of a pass that removed something: read it again */
            if (lseek(fd, 0, SEEK_SET) < 0)
                goto fail;
            removed = 0;
            continue;
        }
        if (depth == 0) /* empty, and it is the top */
            break;
        /* empty: back up to its parent, whose next pass removes it */
        int up = openat(fd, "..", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (up < 0)
            goto fail;
        if (fd != top)
            close(fd);
        fd = up;
        depth--;
        if (fstat(fd, &st) < 0)
            goto fail;
        if (st.st_dev != ids[depth].dev || st.st_ino != ids[depth].ino) {
            errno = ESTALE; /* moved while we were below it: stop rather than guess */
            goto fail;
        }
        removed = 0; /* a fresh fd reads from the start: its pass removes the emptied child */
    }
    if (fd != top)
        close(fd);
    return 0;
fail:
    saved = errno;
    if (fd != top)
        close(fd);
    errno = saved;
    return -1;
}

#define IB_RMTREE_MAX_DEPTH 65536 /* 1 MiB of ids, of which only what is used is touched */

int ib_remove_tree(int dirfd, const char *path)
{
    int fd = openat(dirfd, path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    size_t size = (IB_RMTREE_MAX_DEPTH + 1) * sizeof(struct ib_ident);
    struct ib_ident *ids = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    int rc = ids == MAP_FAILED ? -1 : empty_tree(fd, ids, IB_RMTREE_MAX_DEPTH);
    int saved = errno;
    if (ids != MAP_FAILED)
        munmap(ids, size);
    close(fd);
    if (rc < 0)
        return -saved;
    return unlinkat(dirfd, path, AT_REMOVEDIR) < 0 && errno != ENOENT ? -errno : 0;
}

int64_t ib_fs_type(const char *path)
{
    struct statfs st;
    if (statfs(path, &st) < 0)
        return -errno;
    /* f_type is a signed long (__fsword_t): a magic with the top bit set (RAMFS_MAGIC)
     * is negative where long has 32 bits; the magics themselves are 32-bit values. */
    return (int64_t)(uint32_t)st.f_type;
}
