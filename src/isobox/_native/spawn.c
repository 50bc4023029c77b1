/* isobox native core: starting a container.
 *
 * Three processes take part:
 *   P  the Python process (parent side, this file's ib_spawn and then Python code);
 *   C  the child made by clone in new namespaces; it becomes the container's pid 1.
 *      ib_spawn_shared (the usual path) runs C in P's memory until its execve, as
 *      posix_spawn does; ib_spawn (init=1) and ib_join make a copy of P;
 *   G  with init=1 only: C clones G in its own memory (CLONE_VM | CLONE_VFORK), G execs
 *      the command and C stays as a minimal init.
 *
 * Two pipes, each one way (as BenchExec explains: with one pipe a sender might read the
 * bytes it has just sent itself):
 *   sync: P -> C.  P writes the id maps (uid_map/gid_map, or newuidmap), then writes the
 *         byte IB_SYNC_GO.  C reads it before any other work; EOF means P died: C exits.
 *         (ib_join: a second IB_SYNC_GO releases G, once P holds a pidfd of it.)
 *         P keeps its end open until C's execve succeeded, so C can tell (POLLHUP) whether
 *         P died after it re-armed PR_SET_PDEATHSIG.
 *   err:  C -> P, O_CLOEXEC.  On failure C (or G) writes one struct ib_fail {step, errno}
 *         and _exits.  A successful execve closes the last write end: P reads EOF.
 *
 * With an exec fifo (isobox-runtime's create; spec->exec_fifo_dir >= 0) C has no
 * parent-death signal (spec->pdeathsig = 0) and, once set up, writes the record
 * {IB_STEP_CREATED, 0} on err: P (create) reads it and exits, closing its pipe ends.  C
 * then blocks in open(2) of the FIFO for writing until another process (start) opens it
 * for reading, writes one byte to it, and goes on to its seccomp filter and execve; a
 * failure from then on is a line on stderr and the exit status (no reader of err is left).
 *
 * Why C and not Python in the child: between clone and execve only async-signal-safe code
 * may run in a copy of a multithreaded process (the GIL or malloc's locks may be held by a
 * thread that no longer exists; see BenchExec's container.py and its issue #435).  So the
 * child uses syscalls only: no malloc, no stdio, and everything (paths, options, the mount
 * plan) was prepared by Python before clone.
 *
 * The child walks a fixed list of steps, in the order spawn.h lists them (IB_CHILD_STEPS:
 * close inherited fds, pdeathsig and the go byte, cgroups, setsid, hostname, loopback,
 * make / private; then the mount plan, which holds the rootfs, /proc, /dev, /sys, pivot_root,
 * masked and read-only paths; then rlimits, terminal, bounding set, groups, gid, uid,
 * caps, no_new_privs, stdio, chdir, re-armed pdeathsig, seccomp, (init fork), execve).
 * Each fixed step has its name beside it there (ib_step_name); a plan op is named by
 * Python from its own description.
 */
#define _GNU_SOURCE
#include "spawn.h"
#include "fsops.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/sched.h>
#include <net/if.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#define IB_SYNC_GO 'G'

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif
#ifndef MOVE_MOUNT_T_EMPTY_PATH
#define MOVE_MOUNT_T_EMPTY_PATH 0x00000040
#endif

/* Container paths are resolved with the container's root as "/" and magic links refused
 * (see "container paths" below). */
#define IN_ROOT (IB_RESOLVE_IN_ROOT | IB_RESOLVE_NO_MAGICLINKS)

#define cleanup_close __attribute__((cleanup(close_fdp)))

static void close_fdp(int *fd)
{
    if (*fd >= 0) {
        int saved = errno;
        close(*fd);
        errno = saved;
    }
}

/* ---- the child's failure path -------------------------------------------------------- */

static int child_err_fd = -1;
/* Set once the child told P it waits for `start` (exec fifo): P is gone, so a failure is
 * told as a line on stderr, "isobox-runtime: exec: errno 2", and by the exit status. */
static int child_fail_to_stderr;

static void write_text(int fd, const char *text)
{
    ssize_t n;
    size_t len = strlen(text);
    do
        n = write(fd, text, len);
    while (n < 0 && errno == EINTR);
}

__attribute__((noreturn)) static void fail(uint32_t step, int err)
{
    struct ib_fail rec = {.step = step, .err = err};
    ssize_t n;
    if (child_fail_to_stderr) {
        char digits[12];
        int i = (int)sizeof digits - 1;
        unsigned v = (unsigned)err;
        const char *name = ib_step_name(step);
        digits[i] = '\0';
        do
            digits[--i] = (char)('0' + v % 10);
        while ((v /= 10) > 0 && i > 0);
        write_text(2, "isobox-runtime: ");
        write_text(2, name ? name : "setup");
        write_text(2, ": errno ");
        write_text(2, digits + i);
        write_text(2, "\n");
        _exit(127);
    }
    do
        n = write(child_err_fd, &rec, sizeof rec);
    while (n < 0 && errno == EINTR);
    _exit(127);
}

/* Evaluates expr; when it is negative, reports step with errno and exits. */
#define TRY(step, expr)                \
    do {                               \
        if ((expr) < 0)                \
            fail((step), errno);       \
    } while (0)

static int read_full(int fd, void *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, (char *)buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? -1 : (int)got;
        got += (size_t)n;
    }
    return (int)got;
}

/* ---- plan operations ------------------------------------------------------------------- */

/* Flags a bind remount must carry over: in a user namespace the kernel refuses a remount
 * that would clear nosuid/nodev/noexec/noatime locked by the mount's creator (mount(2),
 * EPERM; runc's "getUnprivilegedMountFlags" does the same). */
static unsigned long locked_flags(const char *path)
{
    struct statvfs st;
    unsigned long out = 0;
    if (statvfs(path, &st) < 0)
        return 0;
    if (st.f_flag & ST_NOSUID)
        out |= MS_NOSUID;
    if (st.f_flag & ST_NODEV)
        out |= MS_NODEV;
    if (st.f_flag & ST_NOEXEC)
        out |= MS_NOEXEC;
    if (st.f_flag & ST_NOATIME)
        out |= MS_NOATIME;
    if (st.f_flag & ST_NODIRATIME)
        out |= MS_NODIRATIME;
    if (st.f_flag & ST_RELATIME)
        out |= MS_RELATIME;
    return out;
}

/* mount(2)'s per-mount flags as mount_setattr(2)'s attributes (the same bits for these). */
static uint64_t mount_attrs(unsigned long flags)
{
    return (flags & MS_RDONLY ? MOUNT_ATTR_RDONLY : 0) | (flags & MS_NOSUID ? MOUNT_ATTR_NOSUID : 0) |
           (flags & MS_NODEV ? MOUNT_ATTR_NODEV : 0) | (flags & MS_NOEXEC ? MOUNT_ATTR_NOEXEC : 0);
}

static int remount_bind(const char *target, unsigned long flags)
{
    /* MS_REMOUNT|MS_BIND changes per-mount flags only (mount(2), "Remounting"). */
    return mount(NULL, target, NULL, MS_REMOUNT | MS_BIND | flags | locked_flags(target), NULL);
}

/* Overlayfs through the new mount API, one fsconfig per lower dir ("lowerdir+", Linux
 * 6.8): no page-size limit on the number of layers.  Returns 1 when the kernel lacks the
 * API (the caller falls back to mount(2)), 0 on success, -1 with errno on failure. */
static int overlay_fsmount(const struct ib_op *op)
{
    cleanup_close int fs = (int)syscall(SYS_fsopen, "overlay", FSOPEN_CLOEXEC);
    if (fs < 0)
        return errno == ENOSYS ? 1 : -1;
    /* shown as the device in /proc/mounts, as mount(2) would show it */
    if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "source", "overlay", 0) < 0)
        return -1;
    for (const char *const *l = op->strv; l && *l; l++)
        if (syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "lowerdir+", *l, 0) < 0)
            return errno == EINVAL && l == op->strv ? 1 : -1;
    if (op->upper && syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "upperdir", op->upper, 0) < 0)
        return -1;
    if (op->work && syscall(SYS_fsconfig, fs, FSCONFIG_SET_STRING, "workdir", op->work, 0) < 0)
        return -1;
    /* userxattr: in a user namespace overlayfs must keep its metadata in user.* xattrs
     * (trusted.* needs CAP_SYS_ADMIN in the initial namespace; Linux 5.11). */
    /* volatile: the upper layer is never synced, not even at unmount (overlayfs.rst,
     * "Volatile mount"); a container is never mounted again once it stops. */
    if ((op->opt & IB_OPT_VOLATILE) &&
        syscall(SYS_fsconfig, fs, FSCONFIG_SET_FLAG, "volatile", NULL, 0) < 0)
        return -1;
    if ((op->opt & IB_OPT_USERXATTR) &&
        syscall(SYS_fsconfig, fs, FSCONFIG_SET_FLAG, "userxattr", NULL, 0) < 0)
        return -1;
    if (syscall(SYS_fsconfig, fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
        return -1;
    /* the per-mount flags (nodev: see rootfs.py) */
    cleanup_close int mnt = (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, mount_attrs(op->flags));
    if (mnt < 0)
        return -1;
    return (int)syscall(SYS_move_mount, mnt, "", AT_FDCWD, op->target, MOVE_MOUNT_F_EMPTY_PATH);
}

static int do_overlay(const struct ib_op *op)
{
    int rc = overlay_fsmount(op);
    if (rc <= 0)
        return rc;
    if (!op->data) {
        errno = ENOSYS;
        return -1;
    }
    /* kernels before 6.8: the classic option string, prepared by Python */
    return mount("overlay", op->target, "overlay", op->flags, op->data);
}

static int do_pivot(const char *newroot)
{
    /* pivot_root(".", ".") stacks the old root on top of the new one, so a single detach
     * removes it without needing a directory for it (pivot_root(2), NOTES; runc does this). */
    if (chdir(newroot) < 0)
        return -1;
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        return -1;
    if (umount2(".", MNT_DETACH) < 0)
        return -1;
    return chdir("/");
}

/* mount(2) follows a symlink at the target: an image could point /proc or /sys at a host
 * path.  Before pivot_root every parent of a plan target is ours (the rootfs mount point,
 * our /dev tmpfs), so refusing a symlink in the last component is enough; nothing in the
 * container runs yet that could race with it. */
static int refuse_symlink(const char *target)
{
    struct stat st;
    if (lstat(target, &st) == 0 && S_ISLNK(st.st_mode)) {
        errno = ELOOP;
        return -1;
    }
    return 0;
}

/* ---- container paths -------------------------------------------------------------------
 *
 * After pivot_root (or setns, for exec) the paths still to resolve are the image's or the
 * caller's to choose (the working directory, mount destinations, the command), and /proc
 * is mounted: a plain lookup would follow /proc/self/fd/N to whatever our fds point at,
 * /proc/self/cwd, or /proc/self/exe to the host's interpreter this process still is
 * (CVE-2024-21626, CVE-2019-5736).  So they are resolved by the kernel with the
 * container's root as "/" and magic links refused (openat2 RESOLVE_IN_ROOT |
 * RESOLVE_NO_MAGICLINKS, Linux 5.6), relative to an fd of that root.  Ordinary symlinks
 * are followed, inside the root, as Docker follows them. */

/* openat2 below root; -1 with errno. */
static int open_in(int root, const char *path, int flags)
{
    int fd = ib_openat2(root, path, flags | O_CLOEXEC, 0, IN_ROOT);
    if (fd < 0) {
        errno = -fd;
        return -1;
    }
    return fd;
}

/* "/proc/self/fd/N" for one of our fds: how mount(2) and a reopen reach what it points at
 * (our own fd: no lookup by the container's choice). */
static void fd_path(char buf[32], int fd)
{
    static const char prefix[] = "/proc/self/fd/";
    char digits[12];
    int n = 0;
    unsigned v = (unsigned)fd;
    do
        digits[n++] = (char)('0' + v % 10);
    while ((v /= 10) > 0);
    memcpy(buf, prefix, sizeof prefix - 1);
    size_t len = sizeof prefix - 1;
    while (n > 0)
        buf[len++] = digits[--n];
    buf[len] = '\0';
}

/* An O_PATH fd of a mount destination inside the root; the last component must not be a
 * symlink (ELOOP), as refuse_symlink says before pivot_root. */
static int open_target(int root, const char *path)
{
    struct stat st;
    int fd = open_in(root, path, O_PATH | O_NOFOLLOW);
    if (fd < 0)
        return -1;
    if (fstat(fd, &st) < 0 || S_ISLNK(st.st_mode)) {
        int saved = S_ISLNK(st.st_mode) ? ELOOP : errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

/* mkdir -p inside the root: each prefix is resolved in the root (its symlinks followed
 * there), and a missing component is made in the directory its parent resolved to. */
static int mkdir_p_in(int root, const char *path, mode_t mode)
{
    char buf[4096];
    size_t len = strlen(path), start = 0;
    int parent = root, saved;
    if (len >= sizeof buf) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(buf, path, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        if (i == start + 1) { /* an empty component ("//") */
            start = i;
            continue;
        }
        char was = buf[i];
        buf[i] = '\0';
        int fd = open_in(root, buf, O_PATH | O_DIRECTORY);
        if (fd < 0 && errno == ENOENT) {
            if (mkdirat(parent, buf + start + 1, mode) < 0 && errno != EEXIST)
                goto fail;
            fd = open_in(root, buf, O_PATH | O_DIRECTORY);
        }
        if (fd < 0 && errno == ENOTDIR && i == len)
            break; /* the last component is there but not a directory: its user says so */
        if (fd < 0)
            goto fail;
        if (parent != root)
            close(parent);
        parent = fd;
        buf[i] = was;
        start = i;
    }
    if (parent != root)
        close(parent);
    return 0;
fail:
    saved = errno;
    if (parent != root)
        close(parent);
    errno = saved;
    return -1;
}

/* chdir inside the root through an fd (never a path lookup of our own), then make sure
 * the kernel sees the result below the root: getcwd(2) prefixes "(unreachable)" to a
 * directory outside it, which is how runc 1.1.12 detects CVE-2024-21626.  A failed check
 * is EXDEV. */
static int chdir_in(int root, const char *path)
{
    char cwd[4096];
    int fd = open_in(root, path, O_PATH | O_DIRECTORY);
    if (fd < 0)
        return -1;
    int rc = fchdir(fd);
    int saved = errno;
    close(fd);
    if (rc < 0) {
        errno = saved;
        return -1;
    }
    long n = syscall(SYS_getcwd, cwd, sizeof cwd);
    if (n < 0 && errno != ERANGE && errno != ENAMETOOLONG)
        return -1;
    if (n > 0 && cwd[0] != '/') {
        errno = EXDEV;
        return -1;
    }
    return 0;
}

/* Ownership inside a layer being unpacked without root: we are root of a user namespace
 * that maps the caller's subordinate ids, so the kernel stores the host subuid.  The path
 * is resolved with the layer as root (openat2 RESOLVE_IN_ROOT, Linux 5.6): an archive's
 * symlink cannot send the chown outside it. */
static int chown_in(const struct ib_op *op)
{
    cleanup_close int root = open(op->source, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root < 0)
        return -1;
    cleanup_close int fd = open_in(root, op->target, O_PATH | O_NOFOLLOW);
    if (fd < 0)
        return -1;
    uid_t uid = (uid_t)(op->dev >> 32);
    gid_t gid = (gid_t)(op->dev & 0xffffffffu);
    if (fchownat(fd, "", uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
        return -1;
    if (op->opt & IB_OPT_CHMOD) {
        /* an O_PATH fd cannot fchmod; its /proc/self/fd link can (not a symlink here) */
        char path[32];
        fd_path(path, fd);
        return chmod(path, op->mode);
    }
    return 0;
}

/* Sets flags on every mount of a tree (AT_RECURSIVE, mount_setattr(2), Linux 5.12): a
 * read-only bind must not leave a writable submount below it (Docker 25 does the same).
 * Returns 1 when the kernel lacks mount_setattr (the caller falls back to the top mount
 * alone), 0 on success, -1 with errno. */
static int set_tree_flags(int dirfd, const char *path, unsigned long flags)
{
    struct mount_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.attr_set = mount_attrs(flags);
    if (!attr.attr_set)
        return 0;
    if (syscall(SYS_mount_setattr, dirfd, path,
                AT_RECURSIVE | AT_SYMLINK_NOFOLLOW | (path[0] ? 0 : AT_EMPTY_PATH), &attr, sizeof attr) == 0)
        return 0;
    return errno == ENOSYS ? 1 : -1;
}

/* An op whose destination the image or caller chose, after pivot_root: resolved inside
 * the root (see "container paths").  root is an O_PATH fd of "/". */
static int run_op_in_root(const struct ib_op *op, int root, int *fds)
{
    char path[32];
    int rc;

    switch (op->kind) {
    case IB_OP_MKDIR_P:
        return mkdir_p_in(root, op->target, op->mode);
    case IB_OP_WRITE: {
        cleanup_close int fd = open_in(root, op->target, O_WRONLY | O_NOFOLLOW);
        size_t len = op->data ? strlen(op->data) : 0;
        if (fd < 0)
            return -1;
        return write(fd, op->data ? op->data : "", len) == (ssize_t)len ? 0 : -1;
    }
    case IB_OP_MKNOD:
    case IB_OP_SYMLINK: {
        /* made in the directory the parent resolves to inside the root */
        char parent[4096];
        const char *base = strrchr(op->target, '/');
        size_t plen = base ? (size_t)(base - op->target) : 0;
        if (!base || !base[1] || plen >= sizeof parent) {
            errno = EINVAL;
            return -1;
        }
        memcpy(parent, op->target, plen);
        parent[plen] = '\0';
        cleanup_close int dir = open_in(root, plen ? parent : "/", O_PATH | O_DIRECTORY);
        if (dir < 0)
            return -1;
        if (op->kind == IB_OP_SYMLINK)
            rc = symlinkat(op->source, dir, base + 1);
        else
            rc = mknodat(dir, base + 1, op->mode, (dev_t)op->dev);
        return rc < 0 && errno == EEXIST ? 0 : rc;
    }
    case IB_OP_TOUCH: {
        /* An existing file is fine as it is. It is looked at through O_PATH, never opened
         * for writing: on the overlay root a write open copies a lower layer's file up
         * into the container's upper directory (with an fsync: the dearest step of a
         * start on a disk). A symlink in the last component is refused (ELOOP). */
        struct stat st;
        int fd = ib_openat2(root, op->target, O_PATH | O_NOFOLLOW | O_CLOEXEC, 0, IN_ROOT);
        if (fd == -ENOENT)
            fd = ib_openat2(root, op->target, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC,
                            op->mode, IN_ROOT);
        if (fd < 0) {
            errno = -fd;
            return -1;
        }
        rc = fstat(fd, &st);
        close(fd);
        if (rc == 0 && S_ISLNK(st.st_mode)) {
            errno = ELOOP;
            return -1;
        }
        return rc;
    }
    case IB_OP_MOUNT: {
        struct stat st;
        cleanup_close int fd = open_target(root, op->target);
        if (fd < 0 || fstat(fd, &st) < 0)
            return -1;
        if (!S_ISDIR(st.st_mode)) {
            fd_path(path, fd);
            return mount(op->source, path, op->fstype, op->flags, op->data);
        }
        /* A directory is reached as our working directory, so no /proc is needed (a
         * bundle mounts /proc itself, after pivot_root); then back to the root. */
        if (fchdir(fd) < 0)
            return -1;
        rc = mount(op->source, ".", op->fstype, op->flags, op->data);
        int saved = errno;
        if (fchdir(root) < 0)
            return -1;
        errno = saved;
        return rc;
    }
    case IB_OP_ATTACH: {
        if (op->ref < 0 || fds[op->ref] < 0) {
            errno = EBADF;
            return -1;
        }
        rc = op->flags ? set_tree_flags(fds[op->ref], "", op->flags) : 0;
        if (rc < 0)
            return -1;
        cleanup_close int fd = open_target(root, op->target);
        if (fd < 0)
            return -1;
        if (syscall(SYS_move_mount, fds[op->ref], "", fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
            return -1;
        close(fds[op->ref]);
        fds[op->ref] = -1;
        if (rc == 0)
            return 0;
        /* Linux < 5.12: only the top mount can be remounted; look it up again, now that the
         * tree is attached, to reach the new mount rather than the one below it */
        cleanup_close int top = open_in(root, op->target, O_PATH);
        if (top < 0)
            return -1;
        fd_path(path, top);
        return remount_bind(path, op->flags);
    }
    }
    errno = EINVAL;
    return -1;
}

/* Performs op i of the plan; fds[] holds the mount trees of IB_OP_OPEN_TREE ops. */
static int run_op(const struct ib_op *ops, int i, int *fds)
{
    const struct ib_op *op = &ops[i];
    struct stat st;
    int fd, rc;

    switch (op->kind) {
    case IB_OP_MOUNT:
    case IB_OP_BIND:
    case IB_OP_REMOUNT:
    case IB_OP_OVERLAY:
    case IB_OP_MASK:
        if (refuse_symlink(op->target) < 0)
            return -1;
        break;
    }
    switch (op->kind) {
    case IB_OP_MOUNT:
        return mount(op->source, op->target, op->fstype, op->flags, op->data);
    case IB_OP_BIND:
        if (mount(op->source, op->target, NULL, MS_BIND | MS_REC, NULL) < 0)
            return -1;
        if (!op->flags)
            return 0;
        /* every mount of the tree (the host's /sys has cgroup and other submounts) */
        fd = set_tree_flags(AT_FDCWD, op->target, op->flags);
        return fd <= 0 ? fd : remount_bind(op->target, op->flags);
    case IB_OP_REMOUNT:
        /* A path that is not a mount point (/proc/sys) must first become one.  A mount
         * point is remounted as it is: binding "/" onto itself would stack a writable
         * copy that "/.." reaches, since our root stays the mount below. */
        if (!(op->opt & IB_OPT_IN_PLACE) &&
            mount(op->target, op->target, NULL, MS_BIND | MS_REC, NULL) < 0)
            return -1;
        return remount_bind(op->target, op->flags);
    case IB_OP_OVERLAY:
        return do_overlay(op);
    case IB_OP_MKDIR:
        if (mkdir(op->target, op->mode) < 0 && errno != EEXIST)
            return -1;
        return 0;
    case IB_OP_MKNOD:
        return mknod(op->target, op->mode, (dev_t)op->dev);
    case IB_OP_TOUCH:
        /* an existing file is fine as it is (and may not be writable for us) */
        if (lstat(op->target, &st) == 0)
            return 0;
        fd = open(op->target, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, op->mode);
        if (fd < 0)
            return -1;
        close(fd);
        return 0;
    case IB_OP_SYMLINK:
        if (symlink(op->source, op->target) < 0 && errno != EEXIST)
            return -1;
        return 0;
    case IB_OP_MASK:
        if (lstat(op->target, &st) < 0)
            return -1;
        if (S_ISDIR(st.st_mode))
            return mount("tmpfs", op->target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                         "size=0,mode=0555");
        return mount("/dev/null", op->target, NULL, MS_BIND, NULL);
    case IB_OP_RMTREE:
        if ((rc = ib_remove_tree(AT_FDCWD, op->target)) < 0) {
            errno = -rc;
            return -1;
        }
        return 0;
    case IB_OP_PIVOT:
        return do_pivot(op->target);
    case IB_OP_OPEN_TREE:
        /* A detached copy of the host mount tree at source, taken while the host's
         * paths are still reachable (open_tree(2), Linux 5.2); attached after pivot_root,
         * where the destination resolves inside the container. */
        fd = (int)syscall(SYS_open_tree, AT_FDCWD, op->source,
                          OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
        if (fd < 0)
            return -1;
        fds[i] = fd;
        return 0;
    case IB_OP_CHOWN_IN:
        return chown_in(op);
    case IB_OP_WRITE: {
        cleanup_close int wfd = open(op->target, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
        size_t len = op->data ? strlen(op->data) : 0;
        if (wfd < 0)
            return -1;
        return write(wfd, op->data ? op->data : "", len) == (ssize_t)len ? 0 : -1;
    }
    }
    errno = EINVAL;
    return -1;
}

/* Walks the plan.  After IB_OP_PIVOT, the ops that name a destination the image or the
 * caller chose (MKDIR_P, TOUCH, MOUNT, ATTACH, MKNOD, SYMLINK, WRITE) resolve it inside the new
 * root. */
static void run_plan(const struct ib_spec *spec)
{
    int fds[spec->n_ops > 0 ? spec->n_ops : 1];
    int root = -1, rc;
    for (int i = 0; i < spec->n_ops; i++)
        fds[i] = -1;
    for (int i = 0; i < spec->n_ops; i++) {
        const struct ib_op *op = &spec->ops[i];
        int in_root = root >= 0 && (op->kind == IB_OP_MKDIR_P || op->kind == IB_OP_TOUCH ||
                                    op->kind == IB_OP_MOUNT || op->kind == IB_OP_ATTACH ||
                                    op->kind == IB_OP_MKNOD || op->kind == IB_OP_SYMLINK ||
                                    op->kind == IB_OP_WRITE);
        if (op->kind == IB_OP_ATTACH && (op->ref < 0 || op->ref >= i)) {
            errno = EBADF;
            rc = -1;
        } else if (op->kind == IB_OP_ATTACH && root < 0) {
            errno = EINVAL; /* a plan error: attach ops come after pivot_root */
            rc = -1;
        } else {
            rc = in_root ? run_op_in_root(op, root, fds) : run_op(spec->ops, i, fds);
        }
        if (rc < 0 && !((op->opt & IB_OPT_OPTIONAL) && errno == ENOENT))
            fail(IB_STEP_PLAN + (uint32_t)i, errno);
        if (op->kind == IB_OP_PIVOT && (root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC)) < 0)
            fail(IB_STEP_PLAN + (uint32_t)i, errno);
    }
    if (root >= 0)
        close(root);
}

/* ---- process attributes ---------------------------------------------------------------- */

static int loopback_up(void)
{
    struct ifreq ifr;
    cleanup_close int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return -1;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        return -1;
    ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
    return ioctl(s, SIOCSIFFLAGS, &ifr);
}

static int reduce_bounding_set(const int *keep, int n_keep)
{
    for (int cap = 0; cap < 64; cap++) {
        int kept = 0;
        for (int i = 0; i < n_keep; i++)
            kept |= keep[i] == cap;
        if (kept)
            continue;
        /* EINVAL: the running kernel does not know this capability number. */
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 && errno != EINVAL)
            return -1;
    }
    return 0;
}

/* Inheritable and ambient sets are emptied (CVE-2022-24769: moby stopped granting
 * inheritable capabilities); permitted/effective for root follow the bounding set at
 * execve, and a non-root user gets none, as in Docker. */
static int clear_inheritable_and_ambient(void)
{
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    if (syscall(SYS_capget, &hdr, data) < 0)
        return -1;
    data[0].inheritable = data[1].inheritable = 0;
    if (syscall(SYS_capset, &hdr, data) < 0)
        return -1;
    /* EINVAL: kernels before 4.3 have no ambient capabilities. */
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        return -1;
    return 0;
}

/* The spec's five sets, as a bundle's config.json gives them (isobox-runtime; runc's
 * order): effective, permitted and inheritable with capset(2) after setuid (which kept
 * the permitted set: PR_SET_KEEPCAPS), then each ambient capability raised, which needs
 * it permitted and inheritable (PR_CAP_AMBIENT_RAISE, Linux 4.3).  EINVAL: the running
 * kernel does not know that capability number.  extra joins effective and permitted for a
 * while, and no ambient capability is raised then (see finish_and_exec: a seccomp filter
 * without no_new_privs needs CAP_SYS_ADMIN). */
static int set_capability_sets(const struct ib_spec *spec, unsigned long long extra)
{
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    for (int i = 0; i < 2; i++) {
        data[i].effective = (uint32_t)((spec->cap_effective | extra) >> (32 * i));
        data[i].permitted = (uint32_t)((spec->cap_permitted | extra) >> (32 * i));
        data[i].inheritable = (uint32_t)(spec->cap_inheritable >> (32 * i));
    }
    if (syscall(SYS_capset, &hdr, data) < 0)
        return -1;
    if (extra)
        return 0;
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
        return -1;
    /* EPERM: the capability is not both permitted and inheritable, so it cannot be
     * ambient; left out, as runc leaves it out (with a warning, since runc 1.1.6) */
    for (int cap = 0; cap < 64; cap++)
        if ((spec->cap_ambient >> cap) & 1 &&
            prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) < 0 && errno != EINVAL &&
            errno != EPERM)
            return -1;
    return 0;
}

/* Sends fd over a unix socket (SCM_RIGHTS) with one byte of data. */
static int send_fd(int sock, int fd)
{
    char byte = 'F';
    struct iovec iov = {.iov_base = &byte, .iov_len = 1};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctrl;
    memset(&ctrl, 0, sizeof ctrl);
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctrl.buf,
                         .msg_controllen = sizeof ctrl.buf};
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &fd, sizeof(int));
    ssize_t n;
    do
        n = sendmsg(sock, &msg, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n < 0 ? -1 : 0;
}

/* A pty for the container, allocated in its own devpts (so `tty` shows /dev/pts/0 there)
 * and owned by its user; the master goes to the parent over console_sock (SCM_RIGHTS), as
 * runc's --console-socket does.  TIOCGPTPEER (Linux 4.13) opens the slave without a path
 * lookup.  Returns the slave fd. */
static int setup_console(int sock, uint32_t uid, unsigned short rows, unsigned short cols)
{
    cleanup_close int master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
    int unlock = 0;
    if (master < 0 || ioctl(master, TIOCSPTLCK, &unlock) < 0)
        return -1;
    /* sized before the command starts, so its first `stty size` is right */
    struct winsize ws = {.ws_row = rows, .ws_col = cols};
    if (rows && cols && ioctl(master, TIOCSWINSZ, &ws) < 0)
        return -1;
    int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (slave < 0)
        return -1;
    /* EINVAL/EPERM: the uid is not mapped for chown here; the tty stays root's. */
    if (fchown(slave, uid, (gid_t)-1) < 0 && errno != EINVAL && errno != EPERM)
        return -1;
    if (send_fd(sock, master) < 0) {
        close(slave);
        return -1;
    }
    close(sock);
    return slave;
}

static int setup_stdio(const int stdio[3])
{
    int moved[3];
    /* Move every source fd above 2 first, so that dup2 into 0..2 cannot clobber a source
     * still to be used (e.g. stdout passed as fd 2). */
    for (int i = 0; i < 3; i++) {
        moved[i] = -1;
        if (stdio[i] >= 0 && (moved[i] = fcntl(stdio[i], F_DUPFD_CLOEXEC, 3)) < 0)
            return -1;
    }
    for (int i = 0; i < 3; i++)
        if (moved[i] >= 0 && dup2(moved[i], i) < 0)
            return -1;
    return 0;
}

/* close(2) every fd from lo to hi inclusive: close_range(2) (Linux 5.9), else one by one
 * up to the soft limit. */
static int close_between(unsigned lo, unsigned hi)
{
    if (syscall(SYS_close_range, lo, hi, 0) == 0)
        return 0;
    if (errno != ENOSYS)
        return -1;
    struct rlimit rl;
    unsigned max = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 1048576 ? (unsigned)rl.rlim_cur : 1048576;
    for (unsigned fd = lo; fd <= hi && fd < max; fd++)
        close((int)fd);
    return 0;
}

/* Closes every fd but the n in keep[] (any order; negative entries are ignored; keep[] is
 * sorted in place).  Really closed, not only marked close-on-exec: the child inherited
 * every fd of the Python process (its other containers' files, a pull's O_PATH fds of
 * the layer being written), and a path like /proc/self/fd/N resolves through them until
 * execve (CVE-2024-21626). */
static int close_fds_except(int *keep, int n)
{
    unsigned next = 0; /* the lowest fd not yet closed or kept */
    for (int i = 1; i < n; i++) {
        int v = keep[i], j = i;
        for (; j > 0 && keep[j - 1] > v; j--)
            keep[j] = keep[j - 1];
        keep[j] = v;
    }
    for (int i = 0; i < n; i++) {
        if (keep[i] < 0 || (unsigned)keep[i] < next) /* unset, or a duplicate */
            continue;
        if ((unsigned)keep[i] > next && close_between(next, (unsigned)keep[i] - 1) < 0)
            return -1;
        next = (unsigned)keep[i] + 1;
    }
    return close_between(next, ~0U);
}

#define IB_MAX_KEPT_FDS 64

/* The first thing a child does, before any path lookup: close every fd it inherited but
 * the ones the spec and the protocol name (stdio 0-2 are replaced or kept on purpose). */
static void drop_inherited_fds(const struct ib_spec *spec, int sync_fd, int err_fd,
                               const int *ns_fds, int n_ns)
{
    int keep[IB_MAX_KEPT_FDS];
    int n = 0;
    if (spec->n_cgroup_procs + n_ns + 10 > IB_MAX_KEPT_FDS)
        fail(IB_STEP_CLOSE_FDS, EINVAL);
    keep[n++] = 0;
    keep[n++] = 1;
    keep[n++] = 2;
    keep[n++] = sync_fd;
    keep[n++] = err_fd;
    for (int i = 0; i < 3; i++)
        keep[n++] = spec->stdio[i];
    keep[n++] = spec->console_sock;
    keep[n++] = spec->root_sock;
    keep[n++] = spec->exec_fifo_dir;
    for (int i = 0; i < spec->n_cgroup_procs; i++)
        keep[n++] = spec->cgroup_procs[i];
    for (int i = 0; i < n_ns; i++)
        keep[n++] = ns_fds[i];
    TRY(IB_STEP_CLOSE_FDS, close_fds_except(keep, n));
}

/* Makes a relative path (kept in buf) absolute from the working directory, which
 * chdir_in checked is inside the root (getcwd(2) gives it relative to our root). */
static int join_cwd(char *buf, size_t size)
{
    char rel[4096];
    size_t rlen = strlen(buf);
    if (rlen >= sizeof rel) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(rel, buf, rlen + 1);
    long n = syscall(SYS_getcwd, buf, size);
    if (n <= 0 || buf[0] != '/')
        return -1;
    size_t clen = strlen(buf);
    if (clen + 1 + rlen + 1 > size) {
        errno = ENAMETOOLONG;
        return -1;
    }
    buf[clen] = '/';
    memcpy(buf + clen + 1, rel, rlen + 1);
    return 0;
}

/* What the kernel will run for path, resolved as it will resolve it but inside the root
 * with magic links refused, and so for a script's interpreter ("#!"), to the kernel's
 * depth of nested interpreters.  Otherwise "/proc/self/exe" as the command, or a script
 * starting "#!/proc/self/exe", would run the host's interpreter that this process still
 * is until its execve (CVE-2019-5736), or /proc/self/fd/N whatever that fd is.  Returns
 * 0 to go ahead (execve gives its own errors), or -1 with errno: ENOENT when the path is
 * not there, ELOOP for a magic link (or a symlink loop).
 *
 * Before the first process's execve nothing else runs in the container, so nothing can
 * change the files between this check and execve; an exec into a running container has
 * that window (a process there may swap a file meanwhile).  What the window could still
 * reach is the interpreter this process is a copy of, which the kernel keeps unwritable
 * while any process runs it (ETXTBSY), and the owner runs it as long as its containers
 * live.  A script we may not read is not looked into (its interpreter could not read it
 * either). */
static int check_exec_path(int root, const char *path)
{
    char cur[4096], head[256];
    size_t len = strlen(path);
    if (len >= sizeof cur) {
        errno = ENAMETOOLONG;
        return -1;
    }
    memcpy(cur, path, len + 1);
    for (int depth = 0; depth < 5; depth++) { /* BINPRM_MAX_RECURSION (4) interpreters */
        struct stat st;
        char self[32];
        if (cur[0] != '/' && join_cwd(cur, sizeof cur) < 0)
            return 0;
        int fd = open_in(root, cur, O_PATH);
        if (fd < 0)
            return -1;
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
            close(fd);
            return 0;
        }
        fd_path(self, fd);
        int r = open(self, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
        close(fd);
        if (r < 0)
            return 0;
        ssize_t n = read(r, head, sizeof head - 1);
        close(r);
        if (n < 3 || head[0] != '#' || head[1] != '!')
            return 0;
        head[n] = '\0';
        char *s = head + 2, *e;
        while (*s == ' ' || *s == '\t')
            s++;
        for (e = s; *e && *e != ' ' && *e != '\t' && *e != '\n'; e++)
            ;
        if (e == s)
            return 0;
        *e = '\0';
        memcpy(cur, s, (size_t)(e - s) + 1);
    }
    return 0;
}

/* The command as execvpe() would find it (without its /bin/sh fallback for ENOEXEC, as
 * runc), with PATH taken from the container's environment, not ours, and each candidate
 * checked by check_exec_path, written to out.  Done before the seccomp filter, like the
 * rest of the setup: the filter is the container's policy (a bundle's profile may deny
 * openat2), not ours; only execve runs under it.  Fails the child when nothing runs. */
static void resolve_command(const struct ib_spec *spec, int root, char *out, size_t size)
{
    const char *file = spec->file;
    char buf[4096];
    int seen_eacces = 0, seen_magic = 0;
    size_t flen = strlen(file);

    if (strchr(file, '/')) {
        if (check_exec_path(root, file) < 0 && errno != ENOENT && errno != ENOTDIR)
            fail(IB_STEP_EXEC_CHECK, errno);
        if (flen + 1 > size)
            fail(IB_STEP_EXEC, ENAMETOOLONG);
        memcpy(out, file, flen + 1);
        return;
    }
    for (const char *p = spec->path ? spec->path : "";; ) {
        const char *end = strchrnul(p, ':');
        const char *dir = p;
        size_t dlen = (size_t)(end - p);
        if (dlen == 0) /* an empty PATH entry means the current directory */
            dir = ".", dlen = 1;
        if (dlen + 1 + flen + 1 <= sizeof buf && dlen + 1 + flen + 1 <= size) {
            struct stat st;
            memcpy(buf, dir, dlen);
            buf[dlen] = '/';
            memcpy(buf + dlen + 1, file, flen + 1);
            if (check_exec_path(root, buf) < 0) {
                if (errno == ELOOP)
                    seen_magic = 1;
                else if (errno != ENOENT && errno != ENOTDIR && errno != ENAMETOOLONG &&
                         errno != EACCES)
                    fail(IB_STEP_EXEC_CHECK, errno);
                if (errno != EACCES)
                    goto next;
            }
            /* what execve would refuse with EACCES (a directory, no x bit) is passed over,
             * as execvpe passes over it */
            if (stat(buf, &st) == 0) {
                if (S_ISREG(st.st_mode) && access(buf, X_OK) == 0) {
                    memcpy(out, buf, dlen + 1 + flen + 1);
                    return;
                }
                seen_eacces = 1;
            } else if (errno == EACCES) {
                seen_eacces = 1;
            } else if (errno != ENOENT && errno != ENOTDIR && errno != ELOOP && errno != ENAMETOOLONG) {
                fail(IB_STEP_EXEC, errno);
            }
        }
    next:
        if (*end == '\0')
            break;
        p = end + 1;
    }
    if (seen_magic && !seen_eacces)
        fail(IB_STEP_EXEC_CHECK, ELOOP);
    fail(IB_STEP_EXEC, seen_eacces ? EACCES : ENOENT);
}

static void drop_all_capabilities(void)
{
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    syscall(SYS_capset, &hdr, data);
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
}

/* /proc/1/cmdline shows [argv_start, argv_end) of our memory: the Python process's own
 * command line.  Overwrite it in place, as setproctitle does. */
static void hide_command_line(const struct ib_spec *spec)
{
    char *start = (char *)(uintptr_t)spec->argv_start, *end = (char *)(uintptr_t)spec->argv_end;
    static const char name[] = "init";
    if (!start || end <= start || (size_t)(end - start) < sizeof name)
        return;
    memset(start, 0, (size_t)(end - start));
    memcpy(start, name, sizeof name);
}

/* pid 1 for init=1: forwards every signal to the command and reaps every zombie, like
 * `docker run --init` (tini).  Exits with the command's status, 128+N for a signal. */
__attribute__((noreturn)) static void init_loop(pid_t child, const sigset_t *all)
{
    for (;;) {
        siginfo_t si;
        int sig = sigwaitinfo(all, &si);
        if (sig < 0)
            continue;
        if (sig != SIGCHLD) {
            kill(child, sig);
            continue;
        }
        for (;;) {
            int status;
            pid_t pid = waitpid(-1, &status, WNOHANG);
            if (pid <= 0)
                break;
            if (pid == child)
                _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
        }
    }
}

/* ---- the child --------------------------------------------------------------------------- */

static void unblock_signals(void)
{
    sigset_t none;
    sigemptyset(&none);
    TRY(IB_STEP_UNBLOCK_SIGNALS, sigprocmask(SIG_SETMASK, &none, NULL));
}

/* Python ignores SIGPIPE and SIGXFSZ and may have handlers installed: give the command
 * default dispositions (ignored ones survive execve, handlers do not but must not run
 * here).  The parent blocked every signal around clone; they stay blocked until the
 * caller unblocks them. */
static void reset_signals(void)
{
    for (int sig = 1; sig < _NSIG; sig++)
        signal(sig, SIG_DFL); /* EINVAL for SIGKILL/SIGSTOP and the libc-internal ones */
}

/* SIGKILL when P's thread dies; armed first, then checked against the sync pipe. */
/* The container's cgroups: "0" moves the writer itself (cgroups(7)), through files the
 * parent opened (cgroups.py: a v1 hierarchy's `tasks`, v2's `cgroup.procs`).  Moving
 * oneself through v1's `tasks` skips the global lock that moving a process by pid takes
 * (cgroup_procs_write_start), whose write side waits for an RCU grace period: ~0.2 ms
 * per hierarchy when the parent wrote our pid.  We are single-threaded, so the thread is
 * the process; whatever we fork inherits it. */
static void enter_cgroups(const struct ib_spec *spec)
{
    for (int i = 0; i < spec->n_cgroup_procs; i++) {
        ssize_t n;
        do
            n = write(spec->cgroup_procs[i], "0", 1);
        while (n < 0 && errno == EINTR);
        if (n < 0)
            fail(IB_STEP_CGROUP, errno);
    }
}

static void wait_for_go(const struct ib_spec *spec, int sync_fd)
{
    char go = 0;
    /* Not for isobox-runtime's create, whose process exits while we wait for `start`: a
     * shim or conmon supervises the container, as with runc. */
    if (spec->pdeathsig)
        TRY(IB_STEP_PDEATHSIG, prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0));
    if (read_full(sync_fd, &go, 1) != 1 || go != IB_SYNC_GO)
        _exit(126); /* P died or gave up before release: nothing to report to */
}

/* A stack for a child that shares our memory until its execve; its lowest page is a
 * guard page, so an overflow faults instead of writing over whatever lies below. */
static char *map_stack(size_t size)
{
    char *stack = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED)
        return NULL;
    if (mprotect(stack, 4096, PROT_NONE) < 0) {
        int saved = errno;
        munmap(stack, size);
        errno = saved;
        return NULL;
    }
    return stack;
}

/* G under init=1: the init's death must take it along (it is also pid-namespace-bound). */
#define IB_INIT_STACK_SIZE (256 * 1024)

struct init_args {
    const struct ib_spec *spec;
    const char *command; /* resolve_command's */
};

static int init_command(void *p)
{
    const struct init_args *a = p; /* in the init's frame, which sleeps until our execve */
    if (a->spec->pdeathsig)
        TRY(IB_STEP_REARM_PDEATHSIG, prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0));
    unblock_signals();
    execve(a->command, (char *const *)a->spec->argv, (char *const *)a->spec->envp);
    fail(IB_STEP_EXEC, errno);
}

/* Everything after the filesystem: the process's attributes, then execve.  Shared by the
 * container's first process and by processes joined to it (exec). */
__attribute__((noreturn)) static void finish_and_exec(const struct ib_spec *spec, int sync_fd, int err_fd)
{
    int stdio[3] = {spec->stdio[0], spec->stdio[1], spec->stdio[2]};
    int console = -1;
    char command[4096];
    /* A filter installed without no_new_privs needs CAP_SYS_ADMIN (seccomp(2)): a bundle's
     * sets may lack it, so it is kept until the filter is in, and the sets are then set
     * again (runc installs such a filter before it drops capabilities, for the same reason) */
    int late_caps = spec->set_ids && spec->cap_sets && spec->seccomp_filter && !spec->no_new_privs;
    sigset_t all;

    umask((mode_t)spec->umask); /* Docker's and the library's: 022 */

    for (int i = 0; i < spec->n_rlimits; i++) {
        struct rlimit rl = {.rlim_cur = spec->rlimits[i].soft, .rlim_max = spec->rlimits[i].hard};
        TRY(IB_STEP_RLIMITS, setrlimit(spec->rlimits[i].resource, &rl));
    }
    if (spec->console_sock >= 0) {
        TRY(IB_STEP_CONSOLE, console = setup_console(spec->console_sock, spec->uid,
                                                     spec->tty_rows, spec->tty_cols));
        stdio[0] = stdio[1] = stdio[2] = console;
    }

    if (spec->set_ids) {
        TRY(IB_STEP_CAPBSET, reduce_bounding_set(spec->caps, spec->n_caps));
        if (spec->set_groups)
            TRY(IB_STEP_SETGROUPS,
                (int)syscall(SYS_setgroups, (size_t)spec->n_groups, spec->groups));
        /* raw syscalls: glibc's setresuid signals every thread of the (copied) process to
         * apply the change, and our copy has threads that do not exist. */
        TRY(IB_STEP_SETGID, (int)syscall(SYS_setresgid, spec->gid, spec->gid, spec->gid));
        /* with the spec's sets, keep the permitted set across setuid to a non-root id */
        if (spec->cap_sets)
            TRY(IB_STEP_SETUID, prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0));
        TRY(IB_STEP_SETUID, (int)syscall(SYS_setresuid, spec->uid, spec->uid, spec->uid));
        TRY(IB_STEP_CAPS, spec->cap_sets ? set_capability_sets(spec, late_caps ? 1ULL << CAP_SYS_ADMIN : 0)
                                         : clear_inheritable_and_ambient());
    }
    if (spec->no_new_privs)
        TRY(IB_STEP_NO_NEW_PRIVS, prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0));

    TRY(IB_STEP_STDIO, setup_stdio(stdio));
    if (console >= 0) {
        close(console);
        /* the pty becomes the session's controlling terminal (we called setsid) */
        TRY(IB_STEP_CONSOLE, ioctl(0, TIOCSCTTY, 0));
    }
    {
        /* what the command gets: stdio, and the protocol's two pipes until execve */
        int keep[6] = {0, 1, 2, sync_fd, err_fd, spec->exec_fifo_dir};
        TRY(IB_STEP_CLOSE_FDS, close_fds_except(keep, 6));
    }
    /* "/" is the container's root here (after pivot_root, or setns for exec) */
    int root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root < 0)
        fail(IB_STEP_CHDIR, errno);
    if (spec->workdir)
        TRY(IB_STEP_CHDIR, chdir_in(root, spec->workdir));

    /* A credential change clears the parent-death signal (prctl(2)): arm it again, then
     * make sure P did not die in between.  P holds the sync pipe until our execve (or,
     * with an exec fifo, until we report CREATED below). */
    if (spec->pdeathsig)
        TRY(IB_STEP_REARM_PDEATHSIG, prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0));
    {
        struct pollfd pfd = {.fd = sync_fd, .events = POLLIN};
        if (poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLHUP | POLLERR)))
            _exit(126);
    }
    close(sync_fd);

    if (!spec->file)
        _exit(0);

    if (spec->exec_fifo_dir >= 0) {
        /* isobox-runtime's create, as runc's exec fifo: tell P we are set up (P, create,
         * then exits), and block in open(2) of the FIFO until `start` opens it to read
         * (fifo(7)); the byte we write tells `start` we got past it.  No Python here nor
         * anywhere between clone and execve: the waiting process is this child itself. */
        struct ib_fail created = {.step = IB_STEP_CREATED, .err = 0};
        int fifo;
        if (write(err_fd, &created, sizeof created) != (ssize_t)sizeof created)
            _exit(126);
        child_fail_to_stderr = 1;
        do
            fifo = openat(spec->exec_fifo_dir, spec->exec_fifo, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
        while (fifo < 0 && errno == EINTR);
        if (fifo < 0)
            fail(IB_STEP_WAIT_START, errno);
        TRY(IB_STEP_WAIT_START, (int)write(fifo, "0", 1));
        close(fifo);
        close(spec->exec_fifo_dir);
    }

    resolve_command(spec, root, command, sizeof command);
    close(root);

    /* Last, so the filter needs to allow nothing of the setup above (bubblewrap's order);
     * no_new_privs makes it installable without CAP_SYS_ADMIN.  Before the init fork:
     * the init is filtered too. */
    if (spec->seccomp_filter) {
        struct sock_fprog prog = {.len = (unsigned short)spec->seccomp_len,
                                  .filter = (struct sock_filter *)spec->seccomp_filter};
        TRY(IB_STEP_SECCOMP, prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0));
        if (late_caps)
            TRY(IB_STEP_CAPS, set_capability_sets(spec, 0));
    }

    if (spec->init) {
        /* The init is a copy of the Python process that never execs: before the command
         * can run, keep its memory and /proc/1/exe (the host's interpreter) out of the
         * container's reach (CVE-2019-5736) and hide the host's command line it still
         * carries. */
        prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
        hide_command_line(spec);
        prctl(PR_SET_NAME, (unsigned long)"init", 0, 0, 0);
        /* G runs in our memory until its execve (as ib_spawn_shared does), so this copy
         * is not copied again; we sleep meanwhile.  The seccomp filter allows it: it
         * asks for no namespace. */
        char *stack = map_stack(IB_INIT_STACK_SIZE);
        struct init_args args = {.spec = spec, .command = command};
        if (!stack)
            fail(IB_STEP_INIT_FORK, errno);
        /* SIGCHLD: the init's own child, reaped by its own waitpid(-1) */
        pid_t child = clone(init_command, stack + IB_INIT_STACK_SIZE, CLONE_VM | CLONE_VFORK | SIGCHLD,
                            &args);
        if (child < 0)
            fail(IB_STEP_INIT_FORK, errno);
        munmap(stack, IB_INIT_STACK_SIZE);
        /* Signalling its own child needs no capability: drop them all.  It never execs,
         * so close-on-exec never closes what it inherited from the Python process (other
         * containers' lock files, pipes, sockets): close all. */
        drop_all_capabilities();
        if (syscall(SYS_close_range, 0, ~0U, 0) < 0)
            for (int fd = 0; fd < 65536; fd++)
                close(fd);
        sigfillset(&all);
        init_loop(child, &all);
    }
    unblock_signals();
    execve(command, (char *const *)spec->argv, (char *const *)spec->envp);
    fail(IB_STEP_EXEC, errno);
}

__attribute__((noreturn)) static void child_main(const struct ib_spec *spec, int sync_fd, int err_fd,
                                                 int announce)
{
    child_err_fd = err_fd;
    reset_signals();
    drop_inherited_fds(spec, sync_fd, err_fd, NULL, 0);
    if (announce) {
        /* shared memory: the parent's pid and pipes are ours to use once we say so */
        struct ib_fail ready = {.step = IB_STEP_READY, .err = 0};
        if (write(err_fd, &ready, sizeof ready) != (ssize_t)sizeof ready)
            _exit(126);
    }
    wait_for_go(spec, sync_fd);
    enter_cgroups(spec);
    if (spec->userns_root) {
        /* Our host ids need not be mapped in the namespace P mapped for us (a bundle's
         * 0 -> 1000): files the plan makes would fail with EOVERFLOW.  The raw syscalls, as
         * in finish_and_exec; our capabilities in the namespace stay (setresuid to 0). */
        TRY(IB_STEP_USERNS_ROOT, (int)syscall(SYS_setresgid, 0, 0, 0));
        TRY(IB_STEP_USERNS_ROOT, (int)syscall(SYS_setresuid, 0, 0, 0));
    }

    TRY(IB_STEP_SETSID, setsid());
    if (spec->hostname)
        TRY(IB_STEP_HOSTNAME, sethostname(spec->hostname, strlen(spec->hostname)));
    if (spec->loopback_up)
        TRY(IB_STEP_LOOPBACK, loopback_up());
    if (spec->clone_flags & CLONE_NEWNS)
        /* Private, not slave: nothing of ours may propagate back to the host, and nothing
         * from the host needs to reach a container (BenchExec explains the Debian bug that
         * made MS_SLAVE leak). */
        TRY(IB_STEP_MAKE_PRIVATE, mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL));

    umask(0); /* the plan's modes are meant as written (devices 0666) */
    run_plan(spec);
    finish_and_exec(spec, sync_fd, err_fd);
}

/* C of a join: enter the container's namespaces, then fork G into its pid namespace as
 * a child of P (CLONE_PARENT), report G's pid to P through the error pipe (a record with
 * step IB_STEP_JOINED) and exit.  G finishes like a container's first process. */
__attribute__((noreturn)) static void join_main(const struct ib_spec *spec, const int *ns_fds, int n_fds,
                                                int sync_fd, int err_fd)
{
    child_err_fd = err_fd;
    reset_signals();
    drop_inherited_fds(spec, sync_fd, err_fd, ns_fds, n_fds);
    /* Before entering: the container must not reach our memory or /proc/self/exe (the
     * host's interpreter) through /proc while we are in its pid namespace (CVE-2019-5736;
     * runc clones its binary for the same reason).  execve makes the command dumpable. */
    TRY(IB_STEP_DUMPABLE, prctl(PR_SET_DUMPABLE, 0, 0, 0, 0));
    wait_for_go(spec, sync_fd);
    /* before setns: the process forked below inherits them */
    enter_cgroups(spec);
    /* Namespace fds the parent opened while the container's first process was still
     * dumpable (a non-dumpable init's /proc/1/ns cannot be opened later, nor can a pidfd
     * join it without CAP_SYS_PTRACE).  The user namespace comes first: it grants the
     * capabilities to join the others (setns(2)). */
    for (int i = 0; i < n_fds; i++)
        TRY(IB_STEP_SETNS, (int)syscall(SYS_setns, ns_fds[i], 0));

    if (spec->root_sock >= 0) {
        /* For copies (docker cp): the container's root as seen from inside its mount
         * namespace (setns moved our root there), handed to the parent, which resolves
         * every path below it with RESOLVE_IN_ROOT. */
        int root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (root < 0 || send_fd(spec->root_sock, root) < 0)
            fail(IB_STEP_SEND_ROOT, errno);
        _exit(0);
    }

    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_PARENT;
    long pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid < 0)
        fail(IB_STEP_JOIN_FORK, errno);
    if (pid > 0) {
        struct ib_fail rec = {.step = IB_STEP_JOINED, .err = (int32_t)pid};
        if (write(err_fd, &rec, sizeof rec) != (ssize_t)sizeof rec)
            _exit(1);
        _exit(0);
    }
    /* G: wait for a second go byte, which P sends once it holds a pidfd of us: then our
     * exit status stays P's to read however the application reaps (native.py) */
    wait_for_go(spec, sync_fd);
    TRY(IB_STEP_SETSID, setsid());
    umask(0);
    run_plan(spec);
    finish_and_exec(spec, sync_fd, err_fd);
}

/* ---- the parent side ------------------------------------------------------------------- */

#define IB_STEP_NAME(name, text) [IB_STEP_##name] = text,
static const char *const step_names[] = {
    IB_CHILD_STEPS(IB_STEP_NAME) IB_JOIN_STEPS(IB_STEP_NAME) IB_PARENT_STEPS(IB_STEP_NAME)
    IB_FORWARD_STEPS(IB_STEP_NAME)
};
#undef IB_STEP_NAME

const char *ib_step_name(uint32_t step)
{
    return step < sizeof step_names / sizeof step_names[0] ? step_names[step] : NULL;
}

/* Fds of a start in flight, and fork.  The application may fork (multiprocessing, its own
 * os.fork) while another of its threads starts a container.  The copy must keep nothing
 * of that start: holding the error pipe's write end, it would keep the parent from
 * reading EOF, and so from learning that the child exec'd, until the copy exits.  Every
 * pipe end of a start is registered here from its creation to its close (ib_close); the
 * pthread_atfork child handler closes them in the copy, and makes the locks anew there
 * (the threads holding them do not exist in the copy).  The prepare handler takes the
 * registry's lock, so a registration or a close is never half done at fork. */
#define IB_MAX_INFLIGHT 1024

static pthread_mutex_t inflight_lock = PTHREAD_MUTEX_INITIALIZER;
static int inflight[IB_MAX_INFLIGHT];
static int n_inflight;

static pthread_mutex_t shared_stack_lock = PTHREAD_MUTEX_INITIALIZER;

/* Under inflight_lock: remember fd; -1 (EMFILE) when the registry is full. */
static int inflight_add_locked(int fd)
{
    if (n_inflight >= IB_MAX_INFLIGHT) {
        errno = EMFILE;
        return -1;
    }
    inflight[n_inflight++] = fd;
    return 0;
}

/* Under inflight_lock: forget fd; 0 when it was registered. */
static int inflight_remove_locked(int fd)
{
    for (int i = 0; i < n_inflight; i++)
        if (inflight[i] == fd) {
            inflight[i] = inflight[--n_inflight];
            return 0;
        }
    return -1;
}

/* Two pipes for a start (sync, then err: read end, write end each), registered.
 * 0 or -errno. */
static int inflight_pipes(int sync_pipe[2], int err_pipe[2])
{
    int saved = 0;
    pthread_mutex_lock(&inflight_lock);
    if (pipe2(sync_pipe, O_CLOEXEC) < 0) {
        saved = errno;
        sync_pipe[0] = sync_pipe[1] = -1;
    } else if (pipe2(err_pipe, O_CLOEXEC) < 0) {
        saved = errno;
        close(sync_pipe[0]);
        close(sync_pipe[1]);
        sync_pipe[0] = sync_pipe[1] = err_pipe[0] = err_pipe[1] = -1;
    } else if (n_inflight + 4 > IB_MAX_INFLIGHT) {
        saved = EMFILE;
        for (int i = 0; i < 2; i++) {
            close(sync_pipe[i]);
            close(err_pipe[i]);
            sync_pipe[i] = err_pipe[i] = -1;
        }
    } else {
        for (int i = 0; i < 2; i++) {
            inflight_add_locked(sync_pipe[i]);
            inflight_add_locked(err_pipe[i]);
        }
    }
    pthread_mutex_unlock(&inflight_lock);
    return -saved;
}

/* Closes a registered fd; an fd that is not registered (already closed, or closed in a
 * forked copy by the handler below, its number free for reuse) is left alone: -EBADF. */
int ib_close(int fd)
{
    int rc = 0;
    pthread_mutex_lock(&inflight_lock);
    if (fd < 0 || inflight_remove_locked(fd) < 0)
        rc = -EBADF;
    else if (close(fd) < 0 && errno != EINTR)
        rc = -errno;
    pthread_mutex_unlock(&inflight_lock);
    return rc;
}

int ib_pipes(int fds[4])
{
    return inflight_pipes(fds, fds + 2);
}

/* Stops tracking a registered fd that outlives the start (a pipe's read end handed to
 * the log pump, which has its own at-fork handling); 0, or -EBADF if not registered. */
int ib_forget(int fd)
{
    int rc;
    pthread_mutex_lock(&inflight_lock);
    rc = inflight_remove_locked(fd) < 0 ? -EBADF : 0;
    pthread_mutex_unlock(&inflight_lock);
    return rc;
}

static void atfork_prepare(void)
{
    pthread_mutex_lock(&inflight_lock);
}

static void atfork_parent(void)
{
    pthread_mutex_unlock(&inflight_lock);
}

static void atfork_child(void)
{
    for (int i = 0; i < n_inflight; i++)
        close(inflight[i]);
    n_inflight = 0;
    pthread_mutex_init(&inflight_lock, NULL);
    pthread_mutex_init(&shared_stack_lock, NULL);
}

__attribute__((constructor)) static void register_atfork(void)
{
    pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

/* Clones a child that runs child_main (join_main with ns_fds) once released; fills out
 * and returns 0, or -errno. */
static int start_child(const struct ib_spec *spec, unsigned long long flags, int want_pidfd,
                       const int *ns_fds, int n_fds, struct ib_child *out)
{
    int sync_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1};
    int pidfd = -1, saved = 0;
    sigset_t all, old;
    long pid;

    if ((saved = -inflight_pipes(sync_pipe, err_pipe)))
        goto fail;

    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = flags | (want_pidfd ? CLONE_PIDFD : 0);
    args.pidfd = (uint64_t)(uintptr_t)&pidfd;
    /* No exit signal: a "clone child" (wait(2), __WALL) that an application's own reaping
     * (SIGCHLD ignored, a waitpid(-1) handler, asyncio's child watchers) never collects,
     * so its exit status stays ours to read; Python waits for it with __WALL. */
    args.exit_signal = 0;

    /* No signal handler of Python's may run in the child: block all around clone. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid < 0 && errno == ENOSYS) {
        /* Linux < 5.3: clone(2) with fork semantics (stack NULL). */
        pidfd = -1;
        pid = syscall(SYS_clone, (unsigned long)flags, NULL, NULL, NULL, 0);
    }
    if (pid == 0) {
        close(sync_pipe[1]);
        close(err_pipe[0]);
        if (ns_fds)
            join_main(spec, ns_fds, n_fds, sync_pipe[0], err_pipe[1]);
        child_main(spec, sync_pipe[0], err_pipe[1], 0);
    }
    saved = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0)
        goto fail;

    ib_close(sync_pipe[0]);
    ib_close(err_pipe[1]);
    out->pid = (int)pid;
    out->pidfd = pidfd;
    out->sync_fd = sync_pipe[1];
    out->err_fd = err_pipe[0];
    return 0;

fail:
    for (int i = 0; i < 2; i++) {
        ib_close(sync_pipe[i]);
        ib_close(err_pipe[i]);
    }
    return -saved;
}

/* Starts a container's first process in new namespaces, blocked until the caller writes
 * the go byte to out->sync_fd (after the id maps).  Returns 0, or -errno; never exits. */
int ib_spawn(const struct ib_spec *spec, struct ib_child *out)
{
    return start_child(spec, spec->clone_flags, 1, NULL, 0, out);
}

/* ---- spawning in shared memory (the fast path) ---------------------------------------- */

/* A copy of the Python process costs its page tables twice: copied by clone, torn down
 * again by execve (about 2 ms for a 30 MB interpreter).  Like posix_spawn, this path
 * clones with CLONE_VM | CLONE_VFORK onto a stack of its own: the child runs in our memory
 * and writes only that stack (the child code above uses syscalls only: no malloc, no
 * stdio, no globals but child_err_fd), and the calling thread sleeps in the kernel until
 * the child has exec'd or exited.  Its errno and TLS are the sleeping thread's.
 *
 * The parent's side (id maps, cgroups, the go byte) must then come from another thread,
 * which created the pipes: it reads IB_STEP_READY on err_r, finds the pid in out->pid
 * (CLONE_PARENT_SETTID stores it before the child runs), and goes on as with ib_spawn.
 * This thread owns the child's ends (sync_r, err_w) and closes them on return, so the
 * other thread reads EOF once the child has exec'd or died, whatever happened.  A clone
 * failure is written to err_w as an IB_STEP_CLONE record.
 *
 * Not for init=1: the init never execs, so this thread would sleep forever. */

#define IB_STACK_SIZE (1024 * 1024)

static char *shared_stack; /* map_stack's, kept for the next clone (shared_stack_lock) */

struct shared_args {
    const struct ib_spec *spec;
    int sync_r, err_w, sync_w, err_r;
};

static int shared_child(void *p)
{
    const struct shared_args *a = p; /* in the sleeping parent's frame */
    close(a->sync_w);
    close(a->err_r);
    child_main(a->spec, a->sync_r, a->err_w, 1);
}

int ib_spawn_shared(const struct ib_spec *spec, int sync_r, int err_w, int sync_w, int err_r,
                    struct ib_child *out)
{
    struct shared_args args = {.spec = spec, .sync_r = sync_r, .err_w = err_w,
                               .sync_w = sync_w, .err_r = err_r};
    sigset_t all, old;
    int pid, dumpable, saved = 0;

    out->pid = -1;
    out->pidfd = -1;
    out->sync_fd = sync_w;
    out->err_fd = err_r;
    if (spec->init) {
        saved = EINVAL;
        goto done;
    }
    pthread_mutex_lock(&shared_stack_lock);
    if (!shared_stack && !(shared_stack = map_stack(IB_STACK_SIZE))) {
        saved = errno;
        pthread_mutex_unlock(&shared_stack_lock);
        goto done;
    }
    dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
    /* No signal handler of Python's may run in the child: block all around clone. */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    /* no exit signal: see start_child */
    pid = clone(shared_child, shared_stack + IB_STACK_SIZE,
                (int)spec->clone_flags | CLONE_VM | CLONE_VFORK | CLONE_PARENT_SETTID,
                &args, &out->pid);
    saved = pid < 0 ? errno : 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    /* The child's setresuid made our shared mm non-dumpable (commit_creds), which kept
     * the host's users of its new uid out of our memory until its execve; it is ours
     * alone again: put the flag back, or /proc/<pid>/ns of the next child is closed. */
    if ((dumpable == 0 || dumpable == 1) && prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != dumpable)
        prctl(PR_SET_DUMPABLE, dumpable, 0, 0, 0);
    pthread_mutex_unlock(&shared_stack_lock);

done:
    if (saved) {
        struct ib_fail rec = {.step = IB_STEP_CLONE, .err = saved};
        ssize_t n;
        do
            n = write(err_w, &rec, sizeof rec);
        while (n < 0 && errno == EINTR);
    }
    ib_close(sync_r);
    ib_close(err_w);
    return -saved;
}

/* Starts a process inside the namespaces behind ns_fds, in order (exec).
 * out->pid is the helper C; the first record on out->err_fd carries the pid of the
 * joined process G (a child of the caller), then G's failure record or EOF on execve. */
int ib_join(const struct ib_spec *spec, const int *ns_fds, int n_fds, struct ib_child *out)
{
    return start_child(spec, 0, 0, ns_fds, n_fds, out);
}
