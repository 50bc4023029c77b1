/* isobox native core: the device policy's program on cgroup v2.
 *
 * cgroup v2 has no devices controller: the kernel runs, on every open(2) and mknod(2) of a
 * device node, the BPF_PROG_TYPE_CGROUP_DEVICE programs attached to the process's cgroup
 * and its ancestors (Documentation/admin-guide/cgroup-v2.rst, "Device controller"; Linux
 * 4.15). devices.py builds the program from the rules, as runc's devicefilter.go and
 * crun's ebpf.c do; this file only loads it and attaches it to the container's cgroup.
 *
 * Loading needs CAP_BPF and CAP_NET_ADMIN, or CAP_SYS_ADMIN, in the initial user
 * namespace (kernel/bpf/syscall.c bpf_prog_load: bpf_capable(), and CGROUP_DEVICE is one
 * of the is_net_admin_prog_type() types), so a rootless owner does not call this: in its
 * user namespace every mount is nodev anyway (SB_I_NODEV), cgroups.py says more.
 *
 * The program's fd is closed once attached: the attachment holds a reference of its own
 * (cgroup_bpf_attach takes it), and rmdir of the cgroup, by the owner at reap or by the
 * sweep after an owner died, drops it and frees the program. Keeping the fd would pin one
 * fd per running container in the owner for nothing.
 *
 * Parent-side: returns 0 or a negative errno (crun's convention, see fsops.c), never exits.
 */
#define _GNU_SOURCE
#include "bpf.h"

#include <errno.h>
#include <linux/bpf.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define cleanup_close __attribute__((cleanup(close_fdp)))

static void close_fdp(int *fd)
{
    if (*fd >= 0) {
        int saved = errno;
        close(*fd);
        errno = saved;
    }
}

/* glibc has no bpf() wrapper (bpf(2) NOTES). */
static int sys_bpf(int cmd, union bpf_attr *attr)
{
    return (int)syscall(SYS_bpf, cmd, attr, sizeof *attr);
}

/* The license only matters to programs calling GPL-only helpers (bpf_prog_load checks
 * license_is_gpl_compatible for them); ours calls none. It is isobox's license. */
static const char license[] = "Apache-2.0";

static int load(const void *insns, int n_insns, char *log, int log_size)
{
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.prog_type = BPF_PROG_TYPE_CGROUP_DEVICE; /* bpf(2); Linux 4.15 */
    attr.insns = (uint64_t)(uintptr_t)insns;
    attr.insn_cnt = (uint32_t)n_insns;
    attr.license = (uint64_t)(uintptr_t)license;
    /* First without a log: the verifier is faster when it writes none (crun does the same). */
    int fd = sys_bpf(BPF_PROG_LOAD, &attr);
    if (fd >= 0 || log == NULL || log_size <= 0)
        return fd >= 0 ? fd : -errno;
    int saved = errno;
    log[0] = '\0';
    attr.log_level = 1; /* the verifier's trace of the failing path (bpf(2) log_level) */
    attr.log_buf = (uint64_t)(uintptr_t)log;
    attr.log_size = (uint32_t)log_size;
    fd = sys_bpf(BPF_PROG_LOAD, &attr);
    if (fd >= 0)
        return fd; /* a transient failure: the second try succeeded */
    /* ENOSPC: the log was too small; the first errno is the one that matters */
    return -(errno == ENOSPC ? saved : errno);
}

int ib_bpf_device_filter(int cgroup_fd, const void *insns, int n_insns, char *log, int log_size,
                         int *failed)
{
    cleanup_close int prog = load(insns, n_insns, log, log_size);
    if (prog < 0) {
        *failed = IB_BPF_LOAD;
        return prog;
    }
    union bpf_attr attr;
    memset(&attr, 0, sizeof attr);
    attr.target_fd = (uint32_t)cgroup_fd;
    attr.attach_bpf_fd = (uint32_t)prog;
    attr.attach_type = BPF_CGROUP_DEVICE;
    /* ALLOW_MULTI: run with, never instead of, the programs of our ancestors (a systemd
     * unit's DevicePolicy): the kernel allows an access only when every program of the
     * cgroup's effective list does (include/uapi/linux/bpf.h, BPF_F_ALLOW_MULTI; Linux
     * 4.15). It also leaves room below: the container cannot attach anything itself. */
    attr.attach_flags = BPF_F_ALLOW_MULTI;
    if (sys_bpf(BPF_PROG_ATTACH, &attr) < 0) {
        *failed = IB_BPF_ATTACH;
        return -errno;
    }
    return 0;
}
