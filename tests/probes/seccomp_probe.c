/* Calls syscalls with raw syscall(2) and prints "name errno" for each (0 on success), so
 * tests/test_seccomp_probe.py can see what a container's seccomp filter lets through.
 * Arguments are chosen so that, without a filter, the kernel answers something other than
 * EPERM or ENOSYS (a success or EBADF, EINVAL ...): then an EPERM or ENOSYS is the filter's.
 * "int80" instead makes a syscall through the i386 ABI, which isobox's filter kills.
 * Static, so it runs in any root filesystem. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* numbers newer than the build machine's headers; the same on x86_64 and aarch64 */
#define NR_cachestat 451
#define NR_removexattrat 466
#define NR_open_tree_attr 467
#define NR_file_getattr 468
#define NR_set_mempolicy_home_node 450
#define NR_quotactl_fd 443
#define NR_process_madvise 440
#define NR_pidfd_getfd 438
#define AF_VSOCK_ 40
#define AF_ALG_ 38
#define FAN_REPORT_FID_ 0x200
#define ADDR_NO_RANDOMIZE_ 0x0040000

static void report(const char *name, long ret)
{
    int err = ret < 0 ? errno : 0;
    printf("%s %d\n", name, err);
    if (ret > 2 && (strncmp(name, "socket", 6) == 0 || strcmp(name, "fanotify_init") == 0))
        close((int)ret);
}

static long clone_and_reap(unsigned long flags)
{
    long pid = syscall(SYS_clone, flags | SIGCHLD, 0, 0, 0, 0);
    if (pid == 0)
        _exit(0);
    if (pid > 0)
        waitpid((pid_t)pid, NULL, 0);
    return pid;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "int80") == 0) {
#if defined(__x86_64__)
        long pid;
        __asm__ volatile("int $0x80" : "=a"(pid) : "a"(20L) /* i386 getpid */ : "memory");
        printf("int80 %ld\n", pid);
        return 0;
#else
        return 2;
#endif
    }
    errno = 0;
    /* ordinary calls */
    report("getpid", syscall(SYS_getpid));
    report("read", syscall(SYS_read, -1, NULL, 0));
    report("write", syscall(SYS_write, 1, "", 0));
    report("socket_inet", syscall(SYS_socket, AF_INET, SOCK_STREAM, 0));
    report("socket_unix", syscall(SYS_socket, AF_UNIX, SOCK_STREAM, 0));
    report("personality_query", syscall(SYS_personality, 0xffffffffUL));
    report("clone_plain", clone_and_reap(0));
    report("cachestat", syscall(NR_cachestat, -1, NULL, NULL, 0));
    report("removexattrat", syscall(NR_removexattrat, -1, "", 0, "user.x"));
    /* what Docker's profile refuses */
    report("personality_addr_no_randomize", syscall(SYS_personality, ADDR_NO_RANDOMIZE_));
    report("fanotify_init", syscall(SYS_fanotify_init, FAN_REPORT_FID_, O_RDONLY));
    report("process_madvise", syscall(NR_process_madvise, -1, NULL, 0, 0, 0));
    report("pidfd_getfd", syscall(NR_pidfd_getfd, -1, 0, 0));
    report("migrate_pages", syscall(SYS_migrate_pages, 0, 0, NULL, NULL));
    report("set_mempolicy_home_node", syscall(NR_set_mempolicy_home_node, 0, 0, 0, 0));
    report("quotactl_fd", syscall(NR_quotactl_fd, -1, 0, 0, NULL));
    report("socket_vsock", syscall(SYS_socket, AF_VSOCK_, SOCK_STREAM, 0));
    report("socket_alg", syscall(SYS_socket, AF_ALG_, SOCK_SEQPACKET, 0));
    report("socket_inet_high_bits", syscall(SYS_socket, AF_INET | (1UL << 32), SOCK_STREAM, 0));
    report("unshare_fs", syscall(SYS_unshare, CLONE_FS));
    report("clone_newuser", clone_and_reap(CLONE_NEWUSER));
    report("clone3", syscall(SYS_clone3, NULL, 0));
    report("open_tree_attr", syscall(NR_open_tree_attr, -1, "", 0, NULL, 0));
    report("file_getattr", syscall(NR_file_getattr, -1, "", NULL, 0, 0));
#if defined(__x86_64__)
    report("x32_getpid", syscall(0x40000000 | SYS_getpid));
#endif
    return 0;
}
