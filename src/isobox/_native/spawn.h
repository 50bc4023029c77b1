/* isobox native core: starting a container.  See spawn.c for the protocol. */
#ifndef ISOBOX_SPAWN_H
#define ISOBOX_SPAWN_H

#include <stdint.h>
#include <sys/types.h>

/* The failure record a child writes to the error pipe before _exit. */
struct ib_fail {
    uint32_t step;  /* an IB_STEP_* value, or IB_STEP_PLAN + index of the failed op */
    int32_t err;    /* errno */
};

/* The fixed steps a failure record names, with the names errors give them (Python reads
 * them with ib_step_name; nobody else keeps a list).  X(NAME, "name") makes IB_STEP_NAME.
 * Each part lists its steps in the order its process first performs them, as the code
 * reads (tests/test_native_core.py checks it against spawn.c).  The numbers are this
 * build's own: a record never leaves the process that started the child. */

/* A container's first process: child_main, then finish_and_exec; under init=1 the
 * command's process G (init_command) re-arms its parent-death signal, unblocks signals
 * and execs the command the init resolved before its seccomp filter.  A joined process (G of ib_join) performs them from "setsid" on.  The mount
 * plan runs between "make / private" and "set rlimits": a failed op is IB_STEP_PLAN +
 * its index.  READY is no failure: ib_spawn_shared's child says it is running; nor is
 * CREATED: with an exec fifo the child says it is about to wait for `start`. */
#define IB_CHILD_STEPS(X)                                                  \
    X(CLOSE_FDS, "close inherited file descriptors")                       \
    X(READY, "report ready to the parent")                                 \
    X(PDEATHSIG, "set parent-death signal")                                \
    X(CGROUP, "enter the container's cgroups")                             \
    X(USERNS_ROOT, "become root of the user namespace")                    \
    X(SETSID, "setsid")                                                    \
    X(HOSTNAME, "set hostname")                                            \
    X(LOOPBACK, "bring up the loopback interface")                         \
    X(MAKE_PRIVATE, "make / private")                                      \
    X(RLIMITS, "set rlimits")                                              \
    X(CONSOLE, "allocate the terminal")                                    \
    X(CAPBSET, "reduce the capability bounding set")                       \
    X(SETGROUPS, "setgroups")                                              \
    X(SETGID, "setgid")                                                    \
    X(SETUID, "setuid")                                                    \
    X(CAPS, "set capabilities")                              \
    X(NO_NEW_PRIVS, "set no_new_privs")                                    \
    X(STDIO, "set up stdin/stdout/stderr")                                 \
    X(CHDIR, "chdir to the working directory")                             \
    X(REARM_PDEATHSIG, "re-arm parent-death signal")                       \
    X(CREATED, "report created to the parent")                             \
    X(WAIT_START, "wait for start (open the exec fifo)")                   \
    X(EXEC_CHECK, "resolve the command inside the container")              \
    X(EXEC, "exec")                                                        \
    X(SECCOMP, "install the seccomp filter")                               \
    X(INIT_FORK, "fork under init")                                        \
    X(UNBLOCK_SIGNALS, "unblock signals")

/* What only exec's join helper does (join_main), before its G goes on as above.
 * JOINED is no failure: the record carries G's pid. */
#define IB_JOIN_STEPS(X)                                                   \
    X(DUMPABLE, "make the process non-dumpable")                           \
    X(SETNS, "join the container's namespaces")                            \
    X(SEND_ROOT, "send the container's root directory")                    \
    X(JOIN_FORK, "fork into the container")                                \
    X(JOINED, "report the joined process")

/* The parent's own record: ib_spawn_shared's clone failed (it writes the record, as the
 * cloning thread is not the one that reads it). */
#define IB_PARENT_STEPS(X) \
    X(CLONE, "clone")

/* A published ports' forwarder (forward.c: forward_main), a copy of the owner that never
 * execs.  FWD_READY is no failure: the forwarder says it serves. */
#define IB_FORWARD_STEPS(X)                                                \
    X(FWD_CLOSE_FDS, "forwarder: close inherited file descriptors")        \
    X(FWD_PDEATHSIG, "forwarder: set parent-death signal")                 \
    X(FWD_DUMPABLE, "forwarder: make the process non-dumpable")            \
    X(FWD_SETNS, "forwarder: join the container's network namespace")     \
    X(FWD_CAPS, "forwarder: drop capabilities")                            \
    X(FWD_MEMORY, "forwarder: map its tables")                             \
    X(FWD_EPOLL, "forwarder: watch the ports")                             \
    X(FWD_READY, "forwarder: report ready")

#define IB_STEP_ENUM(name, text) IB_STEP_##name,
enum {
    IB_STEP_NONE = 0,
    IB_CHILD_STEPS(IB_STEP_ENUM)
    IB_JOIN_STEPS(IB_STEP_ENUM)
    IB_PARENT_STEPS(IB_STEP_ENUM)
    IB_FORWARD_STEPS(IB_STEP_ENUM)
    IB_STEP_PLAN = 1000,
};
#undef IB_STEP_ENUM

/* One operation of the mount plan: Python prepares them, the child walks them in order. */
enum {
    IB_OP_MOUNT = 1,   /* mount(source, target, fstype, flags, data) */
    IB_OP_BIND,        /* bind source on target (recursive); then remount with flags if any */
    IB_OP_REMOUNT,     /* bind target on itself, then remount with flags (keeps locked flags) */
    IB_OP_OVERLAY,     /* overlayfs on target: strv = lower dirs (top first), data = legacy options */
    IB_OP_MKDIR,       /* mkdir(target, mode); an existing directory is fine */
    IB_OP_MKNOD,       /* mknod(target, mode, dev); after pivot_root: inside the root, an
                          existing node is fine (OCI devices over a rootfs's own /dev) */
    IB_OP_TOUCH,       /* create an empty file to bind onto */
    IB_OP_SYMLINK,     /* symlink(source, target) */
    IB_OP_MASK,        /* hide target: /dev/null over a file, empty read-only tmpfs over a dir */
    IB_OP_RMTREE,      /* remove target recursively (used alone, to clean up inside a userns) */
    IB_OP_PIVOT,       /* pivot_root into target, detach the old root */
    IB_OP_OPEN_TREE,   /* clone the mount tree at source (before pivot_root), keep its fd */
    IB_OP_ATTACH,      /* attach op[ref]'s tree at target (after pivot_root); remount flags */
    IB_OP_MKDIR_P,     /* mkdir -p target (after pivot_root symlinks resolve in the container) */
    IB_OP_CHOWN_IN,    /* chown source-relative target to dev = uid << 32 | gid, resolved
                          inside source (RESOLVE_IN_ROOT); then chmod to mode with IB_OPT_CHMOD */
    IB_OP_WRITE,       /* write data to the existing file target (a sysctl under /proc/sys);
                          after pivot_root: resolved inside the root */
};

/* op flags beyond mount(2)'s */
#define IB_OPT_OPTIONAL 0x1   /* ENOENT on the target is not an error */
#define IB_OPT_USERXATTR 0x2  /* overlay: mount with userxattr (inside a user namespace) */
#define IB_OPT_CHMOD 0x4      /* IB_OP_CHOWN_IN: chmod after chown (chown clears set-id bits) */
#define IB_OPT_IN_PLACE 0x8   /* IB_OP_REMOUNT: target is a mount point: no self-bind first */
#define IB_OPT_VOLATILE 0x10  /* overlay: volatile, no sync of the upper layer (Linux 5.10) */

struct ib_op {
    int kind;
    int opt;
    const char *source;
    const char *target;
    const char *fstype;
    unsigned long flags;
    const char *data;
    const char *const *strv;
    const char *upper;        /* overlay only */
    const char *work;         /* overlay only */
    int ref;                  /* IB_OP_ATTACH: index of the IB_OP_OPEN_TREE op */
    unsigned int mode;
    unsigned long long dev;
};

struct ib_rlimit {
    int resource;
    unsigned long long soft;
    unsigned long long hard;
};

struct ib_spec {
    unsigned long long clone_flags;  /* CLONE_NEW* */
    const struct ib_op *ops;
    int n_ops;
    const char *hostname;            /* NULL: leave it */
    int loopback_up;
    const struct ib_rlimit *rlimits;
    int n_rlimits;
    int set_ids;                     /* 0: keep ids (cleanup helpers) */
    int set_groups;                  /* 0: setgroups is denied (single-id user namespace) */
    uint32_t uid, gid;
    const uint32_t *groups;
    int n_groups;
    const int *caps;                 /* capabilities to keep in the bounding set */
    int n_caps;
    int no_new_privs;
    int stdio[3];                    /* fds for 0, 1, 2; -1 keeps the inherited one */
    const char *workdir;             /* NULL: stay at / */
    const char *file;                /* the command; NULL: do no exec, exit 0 after setup */
    const char *const *argv;
    const char *const *envp;
    const char *path;                /* PATH used to look file up when it has no '/' */
    int init;                        /* run a minimal init as pid 1 */
    int console_sock;                /* >= 0: make a pty, send its master over this socket */
    unsigned short tty_rows, tty_cols; /* its window size, set before anything runs */
    const int *cgroup_procs;         /* open files that move their writer into a cgroup */
    int n_cgroup_procs;
    int root_sock;                   /* ib_join: >= 0: send an O_PATH fd of the container's
                                        root over this socket instead of starting a process */
    const void *seccomp_filter;      /* struct sock_filter[], prepared by seccomp.py; NULL: none */
    int seccomp_len;                 /* number of instructions */
    unsigned long long argv_start;   /* our argv memory, overwritten in the init process */
    unsigned long long argv_end;
    int pdeathsig;                   /* 1: SIGKILL when P's thread dies (the library's
                                        containers); 0: outlive P (isobox-runtime create) */
    int umask;                       /* the command's umask */
    int exec_fifo_dir;               /* >= 0: an O_PATH fd of the directory holding ... */
    const char *exec_fifo;           /* ... this FIFO, opened for writing before execve:
                                        the open blocks until `start` opens it to read */
    int cap_sets;                    /* 1: set the four sets below (isobox-runtime);
                                        0: inheritable and ambient emptied, the rest as
                                        execve makes them (the library, as Docker) */
    unsigned long long cap_effective, cap_permitted, cap_inheritable, cap_ambient;
    int userns_root;                 /* setresuid/gid(0) in the new user namespace before the
                                        plan: its files are made by its root (isobox-runtime,
                                        whose maps need not map the caller) */
};

struct ib_child {
    int pid;
    int pidfd;     /* -1 when the kernel has no CLONE_PIDFD */
    int sync_fd;   /* parent's write end: one byte releases the child */
    int err_fd;    /* parent's read end: EOF on execve, or a struct ib_fail */
};

int ib_spawn(const struct ib_spec *spec, struct ib_child *out);
int ib_spawn_shared(const struct ib_spec *spec, int sync_r, int err_w, int sync_w, int err_r,
                    struct ib_child *out);
int ib_join(const struct ib_spec *spec, const int *ns_fds, int n_fds, struct ib_child *out);
int ib_pipes(int fds[4]);
int ib_close(int fd);
int ib_forget(int fd);
/* The name of a fixed step ("set hostname"), or NULL for none (a plan op: Python names it). */
const char *ib_step_name(uint32_t step);

#endif
