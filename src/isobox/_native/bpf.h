/* isobox native core: the cgroup v2 device program (bpf.c). */
#ifndef ISOBOX_BPF_H
#define ISOBOX_BPF_H

/* Which half of ib_bpf_device_filter failed, for the caller's message. */
#define IB_BPF_LOAD 1
#define IB_BPF_ATTACH 2

/* Load `n_insns` eBPF instructions (packed struct bpf_insn) as a
 * BPF_PROG_TYPE_CGROUP_DEVICE program and attach it to the cgroup v2 directory
 * `cgroup_fd` with BPF_F_ALLOW_MULTI. On a load failure the verifier's log is left in
 * `log` (when log_size > 0). Returns 0, or -errno with *failed set to IB_BPF_LOAD or
 * IB_BPF_ATTACH. The program's fd is closed before returning: the attachment holds it. */
int ib_bpf_device_filter(int cgroup_fd, const void *insns, int n_insns, char *log, int log_size,
                         int *failed);

#endif
