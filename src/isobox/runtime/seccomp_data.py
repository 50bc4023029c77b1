"""The facts the seccomp filter is built from, in one place to review: Docker's default
profile (as isobox owns it) and the syscall numbers of the architectures isobox filters.

The profile follows moby/profiles ``seccomp/default_linux.go`` (and the ``default.json``
generated from it) at commit 02e898b137ae, the newest stored version: it is written here in
Docker's own JSON shape (``names``, ``action``, ``errnoRet``, ``args`` with ``index``/
``value``/``valueTwo``/``op``, ``includes``/``excludes`` with ``caps``, ``arches`` and
``minKernel``) so that a reviewer can hold it against upstream rule by rule; `seccomp`
parses it with ``Rule.from_docker``. The architecture map is not carried over: isobox
filters the native ABI only (see `seccomp`).

The numbers are the kernel's: ``arch/x86/entry/syscalls/syscall_64.tbl`` ("common" and
"64" entries; the x32-only 512-547 are left out, isobox refuses that ABI) and, for
aarch64, ``include/uapi/asm-generic/unistd.h`` / ``scripts/syscall.tbl`` with arm64's
ABIs (common, 64, renameat, newstat, rlimit, memfd_secret) and their 64-bit names
(``fstat``, ``newfstatat``, ``fcntl``, ``lseek``, ``mmap`` ...). Up to 450 they agree with
Debian 12's linux-libc-dev 6.1 headers (tests/test_seccomp.py checks every entry both
know); 451-471 come from the kernel tree: cachestat (6.5) ... mseal (6.10), the *xattrat
calls (6.13), open_tree_attr (6.15), file_getattr/file_setattr (6.17), listns (6.19),
rseq_slice_yield (7.0). A syscall newer than the newest one Docker's profile names answers
ENOSYS whether or not it is listed here; listing it only gives it a name in tests.
"""

from __future__ import annotations

import errno
from typing import Any, Dict, List

# -- Docker's default profile ---------------------------------------------------------

PROFILE_SOURCE = "moby/profiles seccomp/default_linux.go @ 02e898b137aed1024e232d59bcb05e6179b72177"

# defaultAction SCMP_ACT_ERRNO, defaultErrnoRet 1: what a syscall no rule allows gets.
DEFAULT_ERRNO = errno.EPERM

# socket(2): the address families Docker allows, as an allowlist since moby/profiles moved
# off "arg0 != AF_VSOCK" (which a high bit set in the 64-bit argument slipped past: the
# kernel truncates the family to an int).  The first run AF_UNSPEC..AF_ROSE is one "< 12"
# rule (AF_UNSPEC is not creatable: the kernel refuses it itself); the rest one "==" each.
# Left out, as upstream: AF_DECnet 12 (gone in 6.1), AF_ECONET 19 (gone in 3.5), AF_ATMSVC
# 20 (gone in 7.2), AF_IRDA 23 (gone in 4.17), AF_WANPIPE 25 (never implemented), AF_ISDN
# 34 and AF_CAIF 37 (gone in 7.1), AF_ALG 38 (the kernel crypto API: exploit surface a
# general container does not need, see copy.fail), AF_VSOCK 40 (host/guest sockets,
# global across network namespaces by default even on 7.0), and everything from 46 on.
SOCKET_FAMILIES_BELOW = 12
SOCKET_FAMILIES = (
    13,  # AF_NETBEUI
    14,  # AF_SECURITY
    15,  # AF_KEY
    16,  # AF_NETLINK
    17,  # AF_PACKET
    18,  # AF_ASH
    21,  # AF_RDS
    22,  # AF_SNA
    24,  # AF_PPPOX
    26,  # AF_LLC
    27,  # AF_IB
    28,  # AF_MPLS
    29,  # AF_CAN
    30,  # AF_TIPC
    31,  # AF_BLUETOOTH
    32,  # AF_IUCV
    33,  # AF_RXRPC
    35,  # AF_PHONET
    36,  # AF_IEEE802154
    39,  # AF_NFC
    41,  # AF_KCM
    42,  # AF_QIPCRTR
    43,  # AF_SMC
    44,  # AF_XDP
    45,  # AF_MCTP
)

# CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET |
# CLONE_NEWCGROUP: clone(2) may not ask for a namespace without CAP_SYS_ADMIN.
CLONE_NAMESPACE_FLAGS = 0x7E020000

ALLOWED = """
accept accept4 access adjtimex alarm bind brk cachestat capget capset chdir chmod chown
chown32 clock_adjtime clock_adjtime64 clock_getres clock_getres_time64 clock_gettime
clock_gettime64 clock_nanosleep clock_nanosleep_time64 close close_range connect
copy_file_range creat dup dup2 dup3 epoll_create epoll_create1 epoll_ctl epoll_ctl_old
epoll_pwait epoll_pwait2 epoll_wait epoll_wait_old eventfd eventfd2 execve execveat exit
exit_group faccessat faccessat2 fadvise64 fadvise64_64 fallocate fanotify_mark fchdir
fchmod fchmodat fchmodat2 fchown fchown32 fchownat fcntl fcntl64 fdatasync fgetxattr
flistxattr flock fork fremovexattr fsetxattr fstat fstat64 fstatat64 fstatfs fstatfs64
fsync ftruncate ftruncate64 futex futex_requeue futex_time64 futex_wait futex_waitv
futex_wake futimesat getcpu getcwd getdents getdents64 getegid getegid32 geteuid
geteuid32 getgid getgid32 getgroups getgroups32 getitimer getpeername getpgid getpgrp
getpid getppid getpriority getrandom getresgid getresgid32 getresuid getresuid32
getrlimit get_robust_list getrusage getsid getsockname getsockopt get_thread_area gettid
gettimeofday getuid getuid32 getxattr getxattrat inotify_add_watch inotify_init
inotify_init1 inotify_rm_watch io_cancel ioctl io_destroy io_getevents io_pgetevents
io_pgetevents_time64 ioprio_get ioprio_set io_setup io_submit ipc kill landlock_add_rule
landlock_create_ruleset landlock_restrict_self lchown lchown32 lgetxattr link linkat
listen listmount listxattr listxattrat llistxattr _llseek lremovexattr lseek lsetxattr
lstat lstat64 madvise map_shadow_stack membarrier memfd_create memfd_secret mincore mkdir
mkdirat mknod mknodat mlock mlock2 mlockall mmap mmap2 mprotect mq_getsetattr mq_notify
mq_open mq_timedreceive mq_timedreceive_time64 mq_timedsend mq_timedsend_time64
mq_unlink mremap mseal msgctl msgget msgrcv msgsnd msync munlock munlockall munmap
name_to_handle_at nanosleep newfstatat _newselect open openat openat2 pause pidfd_open
pidfd_send_signal pipe pipe2 pkey_alloc pkey_free pkey_mprotect poll ppoll ppoll_time64
prctl pread64 preadv preadv2 prlimit64 process_mrelease pselect6 pselect6_time64
pwrite64 pwritev pwritev2 read readahead readlink readlinkat readv recv recvfrom
recvmmsg recvmmsg_time64 recvmsg remap_file_pages removexattr removexattrat rename
renameat renameat2 restart_syscall riscv_hwprobe rmdir rseq rt_sigaction rt_sigpending
rt_sigprocmask rt_sigqueueinfo rt_sigreturn rt_sigsuspend rt_sigtimedwait
rt_sigtimedwait_time64 rt_tgsigqueueinfo sched_getaffinity sched_getattr sched_getparam
sched_get_priority_max sched_get_priority_min sched_getscheduler sched_rr_get_interval
sched_rr_get_interval_time64 sched_setaffinity sched_setattr sched_setparam
sched_setscheduler sched_yield seccomp select semctl semget semop semtimedop
semtimedop_time64 send sendfile sendfile64 sendmmsg sendmsg sendto setfsgid setfsgid32
setfsuid setfsuid32 setgid setgid32 setgroups setgroups32 setitimer setpgid setpriority
setregid setregid32 setresgid setresgid32 setresuid setresuid32 setreuid setreuid32
setrlimit set_robust_list setsid setsockopt set_thread_area set_tid_address setuid
setuid32 setxattr setxattrat shmat shmctl shmdt shmget shutdown sigaltstack signalfd
signalfd4 sigprocmask sigreturn socketcall socketpair splice stat stat64 statfs statfs64
statmount statx symlink symlinkat sync sync_file_range syncfs sysinfo tee tgkill time
timer_create timer_delete timer_getoverrun timer_gettime timer_gettime64 timer_settime
timer_settime64 timerfd_create timerfd_gettime timerfd_gettime64 timerfd_settime
timerfd_settime64 times tkill truncate truncate64 ugetrlimit umask uname unlink unlinkat
uretprobe utime utimensat utimensat_time64 utimes vfork vmsplice wait4 waitid waitpid
write writev
""".split()


def _allow(names: str, **extra: Any) -> Dict[str, Any]:
    return {"names": names.split(), "action": "SCMP_ACT_ALLOW", **extra}


def _arg(index: int, value: int, op: str, value_two: int = 0) -> Dict[str, Any]:
    return {"index": index, "value": value, "valueTwo": value_two, "op": op}


# The rules in upstream's order.  A rule applies when its "includes" all hold (every cap
# listed is in the container's set, the architecture is listed, the kernel is at least
# minKernel) and none of its "excludes" does (any cap listed in the set, ...).
SYSCALLS: List[Dict[str, Any]] = [
    _allow(" ".join(ALLOWED)),
    _allow("process_vm_readv process_vm_writev ptrace", includes={"minKernel": "4.8"}),
    _allow("socket", args=[_arg(0, SOCKET_FAMILIES_BELOW, "SCMP_CMP_LT")]),
    *(_allow("socket", args=[_arg(0, family, "SCMP_CMP_EQ")]) for family in SOCKET_FAMILIES),
    # PER_LINUX, PER_LINUX32, UNAME26, PER_LINUX32|UNAME26, and 0xffffffff (query)
    *(_allow("personality", args=[_arg(0, persona, "SCMP_CMP_EQ")])
      for persona in (0x0, 0x0008, 0x20000, 0x20008, 0xFFFFFFFF)),
    _allow("sync_file_range2 swapcontext", includes={"arches": ["ppc64le"]}),
    _allow("arm_fadvise64_64 arm_sync_file_range sync_file_range2 breakpoint cacheflush set_tls",
           includes={"arches": ["arm", "arm64"]}),
    _allow("arch_prctl", includes={"arches": ["amd64", "x32"]}),
    _allow("modify_ldt", includes={"arches": ["amd64", "x32", "x86"]}),
    _allow("s390_pci_mmio_read s390_pci_mmio_write s390_runtime_instr",
           includes={"arches": ["s390", "s390x"]}),
    _allow("riscv_flush_icache", includes={"arches": ["riscv64"]}),
    _allow("open_by_handle_at", includes={"caps": ["CAP_DAC_READ_SEARCH"]}),
    _allow("bpf clone clone3 fanotify_init fsconfig fsmount fsopen fspick lookup_dcookie "
           "lsm_get_self_attr lsm_list_modules lsm_set_self_attr mount mount_setattr "
           "move_mount open_tree perf_event_open quotactl quotactl_fd setdomainname "
           "sethostname setns syslog umount umount2 unshare",
           includes={"caps": ["CAP_SYS_ADMIN"]}),
    _allow("clone", args=[_arg(0, CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ", 0)],
           excludes={"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]}),
    _allow("clone", args=[_arg(1, CLONE_NAMESPACE_FLAGS, "SCMP_CMP_MASKED_EQ", 0)],
           comment="s390 parameter ordering for clone is different",
           includes={"arches": ["s390", "s390x"]}, excludes={"caps": ["CAP_SYS_ADMIN"]}),
    # clone3's flags sit in a struct seccomp cannot read: ENOSYS makes libc fall back to
    # clone, whose flags it can.
    {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS,
     "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
    _allow("reboot", includes={"caps": ["CAP_SYS_BOOT"]}),
    _allow("chroot", includes={"caps": ["CAP_SYS_CHROOT"]}),
    _allow("delete_module init_module finit_module", includes={"caps": ["CAP_SYS_MODULE"]}),
    _allow("acct", includes={"caps": ["CAP_SYS_PACCT"]}),
    _allow("kcmp pidfd_getfd process_madvise process_vm_readv process_vm_writev ptrace",
           includes={"caps": ["CAP_SYS_PTRACE"]}),
    _allow("iopl ioperm", includes={"caps": ["CAP_SYS_RAWIO"]}),
    _allow("settimeofday stime clock_settime clock_settime64", includes={"caps": ["CAP_SYS_TIME"]}),
    _allow("vhangup", includes={"caps": ["CAP_SYS_TTY_CONFIG"]}),
    _allow("get_mempolicy mbind set_mempolicy set_mempolicy_home_node",
           includes={"caps": ["CAP_SYS_NICE"]}),
    _allow("syslog", includes={"caps": ["CAP_SYSLOG"]}),
    _allow("bpf", includes={"caps": ["CAP_BPF"]}),
    _allow("perf_event_open", includes={"caps": ["CAP_PERFMON"]}),
]

# Docker's default capability set (moby's oci/caps/defaults.go), which the conditional
# rules are evaluated against when no set is given.
DEFAULT_CAPABILITIES = frozenset({
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
})

# Every capability Linux defines (include/uapi/linux/capability.h, 6.x), for checking names.
CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)

# -- syscall numbers: "number name", one a line, as the kernel's tables list them ---------

X86_64 = """
0 read
1 write
2 open
3 close
4 stat
5 fstat
6 lstat
7 poll
8 lseek
9 mmap
10 mprotect
11 munmap
12 brk
13 rt_sigaction
14 rt_sigprocmask
15 rt_sigreturn
16 ioctl
17 pread64
18 pwrite64
19 readv
20 writev
21 access
22 pipe
23 select
24 sched_yield
25 mremap
26 msync
27 mincore
28 madvise
29 shmget
30 shmat
31 shmctl
32 dup
33 dup2
34 pause
35 nanosleep
36 getitimer
37 alarm
38 setitimer
39 getpid
40 sendfile
41 socket
42 connect
43 accept
44 sendto
45 recvfrom
46 sendmsg
47 recvmsg
48 shutdown
49 bind
50 listen
51 getsockname
52 getpeername
53 socketpair
54 setsockopt
55 getsockopt
56 clone
57 fork
58 vfork
59 execve
60 exit
61 wait4
62 kill
63 uname
64 semget
65 semop
66 semctl
67 shmdt
68 msgget
69 msgsnd
70 msgrcv
71 msgctl
72 fcntl
73 flock
74 fsync
75 fdatasync
76 truncate
77 ftruncate
78 getdents
79 getcwd
80 chdir
81 fchdir
82 rename
83 mkdir
84 rmdir
85 creat
86 link
87 unlink
88 symlink
89 readlink
90 chmod
91 fchmod
92 chown
93 fchown
94 lchown
95 umask
96 gettimeofday
97 getrlimit
98 getrusage
99 sysinfo
100 times
101 ptrace
102 getuid
103 syslog
104 getgid
105 setuid
106 setgid
107 geteuid
108 getegid
109 setpgid
110 getppid
111 getpgrp
112 setsid
113 setreuid
114 setregid
115 getgroups
116 setgroups
117 setresuid
118 getresuid
119 setresgid
120 getresgid
121 getpgid
122 setfsuid
123 setfsgid
124 getsid
125 capget
126 capset
127 rt_sigpending
128 rt_sigtimedwait
129 rt_sigqueueinfo
130 rt_sigsuspend
131 sigaltstack
132 utime
133 mknod
134 uselib
135 personality
136 ustat
137 statfs
138 fstatfs
139 sysfs
140 getpriority
141 setpriority
142 sched_setparam
143 sched_getparam
144 sched_setscheduler
145 sched_getscheduler
146 sched_get_priority_max
147 sched_get_priority_min
148 sched_rr_get_interval
149 mlock
150 munlock
151 mlockall
152 munlockall
153 vhangup
154 modify_ldt
155 pivot_root
156 _sysctl
157 prctl
158 arch_prctl
159 adjtimex
160 setrlimit
161 chroot
162 sync
163 acct
164 settimeofday
165 mount
166 umount2
167 swapon
168 swapoff
169 reboot
170 sethostname
171 setdomainname
172 iopl
173 ioperm
174 create_module
175 init_module
176 delete_module
177 get_kernel_syms
178 query_module
179 quotactl
180 nfsservctl
181 getpmsg
182 putpmsg
183 afs_syscall
184 tuxcall
185 security
186 gettid
187 readahead
188 setxattr
189 lsetxattr
190 fsetxattr
191 getxattr
192 lgetxattr
193 fgetxattr
194 listxattr
195 llistxattr
196 flistxattr
197 removexattr
198 lremovexattr
199 fremovexattr
200 tkill
201 time
202 futex
203 sched_setaffinity
204 sched_getaffinity
205 set_thread_area
206 io_setup
207 io_destroy
208 io_getevents
209 io_submit
210 io_cancel
211 get_thread_area
212 lookup_dcookie
213 epoll_create
214 epoll_ctl_old
215 epoll_wait_old
216 remap_file_pages
217 getdents64
218 set_tid_address
219 restart_syscall
220 semtimedop
221 fadvise64
222 timer_create
223 timer_settime
224 timer_gettime
225 timer_getoverrun
226 timer_delete
227 clock_settime
228 clock_gettime
229 clock_getres
230 clock_nanosleep
231 exit_group
232 epoll_wait
233 epoll_ctl
234 tgkill
235 utimes
236 vserver
237 mbind
238 set_mempolicy
239 get_mempolicy
240 mq_open
241 mq_unlink
242 mq_timedsend
243 mq_timedreceive
244 mq_notify
245 mq_getsetattr
246 kexec_load
247 waitid
248 add_key
249 request_key
250 keyctl
251 ioprio_set
252 ioprio_get
253 inotify_init
254 inotify_add_watch
255 inotify_rm_watch
256 migrate_pages
257 openat
258 mkdirat
259 mknodat
260 fchownat
261 futimesat
262 newfstatat
263 unlinkat
264 renameat
265 linkat
266 symlinkat
267 readlinkat
268 fchmodat
269 faccessat
270 pselect6
271 ppoll
272 unshare
273 set_robust_list
274 get_robust_list
275 splice
276 tee
277 sync_file_range
278 vmsplice
279 move_pages
280 utimensat
281 epoll_pwait
282 signalfd
283 timerfd_create
284 eventfd
285 fallocate
286 timerfd_settime
287 timerfd_gettime
288 accept4
289 signalfd4
290 eventfd2
291 epoll_create1
292 dup3
293 pipe2
294 inotify_init1
295 preadv
296 pwritev
297 rt_tgsigqueueinfo
298 perf_event_open
299 recvmmsg
300 fanotify_init
301 fanotify_mark
302 prlimit64
303 name_to_handle_at
304 open_by_handle_at
305 clock_adjtime
306 syncfs
307 sendmmsg
308 setns
309 getcpu
310 process_vm_readv
311 process_vm_writev
312 kcmp
313 finit_module
314 sched_setattr
315 sched_getattr
316 renameat2
317 seccomp
318 getrandom
319 memfd_create
320 kexec_file_load
321 bpf
322 execveat
323 userfaultfd
324 membarrier
325 mlock2
326 copy_file_range
327 preadv2
328 pwritev2
329 pkey_mprotect
330 pkey_alloc
331 pkey_free
332 statx
333 io_pgetevents
334 rseq
335 uretprobe
424 pidfd_send_signal
425 io_uring_setup
426 io_uring_enter
427 io_uring_register
428 open_tree
429 move_mount
430 fsopen
431 fsconfig
432 fsmount
433 fspick
434 pidfd_open
435 clone3
436 close_range
437 openat2
438 pidfd_getfd
439 faccessat2
440 process_madvise
441 epoll_pwait2
442 mount_setattr
443 quotactl_fd
444 landlock_create_ruleset
445 landlock_add_rule
446 landlock_restrict_self
447 memfd_secret
448 process_mrelease
449 futex_waitv
450 set_mempolicy_home_node
451 cachestat
452 fchmodat2
453 map_shadow_stack
454 futex_wake
455 futex_wait
456 futex_requeue
457 statmount
458 listmount
459 lsm_get_self_attr
460 lsm_set_self_attr
461 lsm_list_modules
462 mseal
463 setxattrat
464 getxattrat
465 listxattrat
466 removexattrat
467 open_tree_attr
468 file_getattr
469 file_setattr
470 listns
471 rseq_slice_yield
"""

AARCH64 = """
0 io_setup
1 io_destroy
2 io_submit
3 io_cancel
4 io_getevents
5 setxattr
6 lsetxattr
7 fsetxattr
8 getxattr
9 lgetxattr
10 fgetxattr
11 listxattr
12 llistxattr
13 flistxattr
14 removexattr
15 lremovexattr
16 fremovexattr
17 getcwd
18 lookup_dcookie
19 eventfd2
20 epoll_create1
21 epoll_ctl
22 epoll_pwait
23 dup
24 dup3
25 fcntl
26 inotify_init1
27 inotify_add_watch
28 inotify_rm_watch
29 ioctl
30 ioprio_set
31 ioprio_get
32 flock
33 mknodat
34 mkdirat
35 unlinkat
36 symlinkat
37 linkat
38 renameat
39 umount2
40 mount
41 pivot_root
42 nfsservctl
43 statfs
44 fstatfs
45 truncate
46 ftruncate
47 fallocate
48 faccessat
49 chdir
50 fchdir
51 chroot
52 fchmod
53 fchmodat
54 fchownat
55 fchown
56 openat
57 close
58 vhangup
59 pipe2
60 quotactl
61 getdents64
62 lseek
63 read
64 write
65 readv
66 writev
67 pread64
68 pwrite64
69 preadv
70 pwritev
71 sendfile
72 pselect6
73 ppoll
74 signalfd4
75 vmsplice
76 splice
77 tee
78 readlinkat
79 newfstatat
80 fstat
81 sync
82 fsync
83 fdatasync
84 sync_file_range
85 timerfd_create
86 timerfd_settime
87 timerfd_gettime
88 utimensat
89 acct
90 capget
91 capset
92 personality
93 exit
94 exit_group
95 waitid
96 set_tid_address
97 unshare
98 futex
99 set_robust_list
100 get_robust_list
101 nanosleep
102 getitimer
103 setitimer
104 kexec_load
105 init_module
106 delete_module
107 timer_create
108 timer_gettime
109 timer_getoverrun
110 timer_settime
111 timer_delete
112 clock_settime
113 clock_gettime
114 clock_getres
115 clock_nanosleep
116 syslog
117 ptrace
118 sched_setparam
119 sched_setscheduler
120 sched_getscheduler
121 sched_getparam
122 sched_setaffinity
123 sched_getaffinity
124 sched_yield
125 sched_get_priority_max
126 sched_get_priority_min
127 sched_rr_get_interval
128 restart_syscall
129 kill
130 tkill
131 tgkill
132 sigaltstack
133 rt_sigsuspend
134 rt_sigaction
135 rt_sigprocmask
136 rt_sigpending
137 rt_sigtimedwait
138 rt_sigqueueinfo
139 rt_sigreturn
140 setpriority
141 getpriority
142 reboot
143 setregid
144 setgid
145 setreuid
146 setuid
147 setresuid
148 getresuid
149 setresgid
150 getresgid
151 setfsuid
152 setfsgid
153 times
154 setpgid
155 getpgid
156 getsid
157 setsid
158 getgroups
159 setgroups
160 uname
161 sethostname
162 setdomainname
163 getrlimit
164 setrlimit
165 getrusage
166 umask
167 prctl
168 getcpu
169 gettimeofday
170 settimeofday
171 adjtimex
172 getpid
173 getppid
174 getuid
175 geteuid
176 getgid
177 getegid
178 gettid
179 sysinfo
180 mq_open
181 mq_unlink
182 mq_timedsend
183 mq_timedreceive
184 mq_notify
185 mq_getsetattr
186 msgget
187 msgctl
188 msgrcv
189 msgsnd
190 semget
191 semctl
192 semtimedop
193 semop
194 shmget
195 shmctl
196 shmat
197 shmdt
198 socket
199 socketpair
200 bind
201 listen
202 accept
203 connect
204 getsockname
205 getpeername
206 sendto
207 recvfrom
208 setsockopt
209 getsockopt
210 shutdown
211 sendmsg
212 recvmsg
213 readahead
214 brk
215 munmap
216 mremap
217 add_key
218 request_key
219 keyctl
220 clone
221 execve
222 mmap
223 fadvise64
224 swapon
225 swapoff
226 mprotect
227 msync
228 mlock
229 munlock
230 mlockall
231 munlockall
232 mincore
233 madvise
234 remap_file_pages
235 mbind
236 get_mempolicy
237 set_mempolicy
238 migrate_pages
239 move_pages
240 rt_tgsigqueueinfo
241 perf_event_open
242 accept4
243 recvmmsg
260 wait4
261 prlimit64
262 fanotify_init
263 fanotify_mark
264 name_to_handle_at
265 open_by_handle_at
266 clock_adjtime
267 syncfs
268 setns
269 sendmmsg
270 process_vm_readv
271 process_vm_writev
272 kcmp
273 finit_module
274 sched_setattr
275 sched_getattr
276 renameat2
277 seccomp
278 getrandom
279 memfd_create
280 bpf
281 execveat
282 userfaultfd
283 membarrier
284 mlock2
285 copy_file_range
286 preadv2
287 pwritev2
288 pkey_mprotect
289 pkey_alloc
290 pkey_free
291 statx
292 io_pgetevents
293 rseq
294 kexec_file_load
424 pidfd_send_signal
425 io_uring_setup
426 io_uring_enter
427 io_uring_register
428 open_tree
429 move_mount
430 fsopen
431 fsconfig
432 fsmount
433 fspick
434 pidfd_open
435 clone3
436 close_range
437 openat2
438 pidfd_getfd
439 faccessat2
440 process_madvise
441 epoll_pwait2
442 mount_setattr
443 quotactl_fd
444 landlock_create_ruleset
445 landlock_add_rule
446 landlock_restrict_self
447 memfd_secret
448 process_mrelease
449 futex_waitv
450 set_mempolicy_home_node
451 cachestat
452 fchmodat2
453 map_shadow_stack
454 futex_wake
455 futex_wait
456 futex_requeue
457 statmount
458 listmount
459 lsm_get_self_attr
460 lsm_set_self_attr
461 lsm_list_modules
462 mseal
463 setxattrat
464 getxattrat
465 listxattrat
466 removexattrat
467 open_tree_attr
468 file_getattr
469 file_setattr
470 listns
471 rseq_slice_yield
"""
