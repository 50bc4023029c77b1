/* isobox native core: the forwarder of a container's published ports.
 *
 * The way rootlesskit's "builtin" port driver works, the same rootful and rootless: the
 * host's sockets are made and bound by the owner (net/forward.py) before the container
 * starts, so a port 0 is the kernel's free port and the mapping is known at once; a
 * process that has joined the container's network namespace makes the sockets that reach
 * the service, and moves the bytes between the two with splice(2) through pipes, in one
 * epoll loop.  A socket belongs to the namespace it was made in, whatever namespace its
 * holder joins later (socket(7), network_namespaces(7)): the listeners stay the host's,
 * every socket made after setns is the container's.  So no veth, no address, no firewall
 * rule: the service needs nothing but its loopback, also under network="none".
 *
 * Two processes take part:
 *   P  the owner of the container (Python), which made the host's sockets;
 *   F  the forwarder: a copy of P made by clone3 (CLONE_PIDFD, no exit signal: P reaps it
 *      with __WALL by pidfd, as it does the container, spawn.c: start_child), which never
 *      execs, so it runs this file's code only: no malloc (its tables are mmap'd), no
 *      stdio, no Python (a copy of a multithreaded process may find the GIL or malloc's
 *      locks held by threads that do not exist in it: BenchExec's issue #435).
 *
 * The protocol is spawn.c's: a sync pipe P -> F (the go byte; EOF: P gave up) and an
 * error pipe F -> P, on which F writes one struct ib_fail {step, errno} and exits, or
 * which it closes once it serves (as a successful execve closes a container's).
 *
 * F's steps, in order (spawn.h: IB_FORWARD_STEPS): close every inherited fd but its own
 * (a copy of P holds other containers' pipes and locks); arm the parent-death signal (P's
 * cloning thread is the long-lived spawner, spawn.py) and wait for the go byte; become
 * non-dumpable (it is about to enter the container's user namespace, whose root could
 * otherwise read a copy of P's memory through /proc); setns into the user namespace
 * (rootless: it grants the right to join the others, setns(2)) and the network namespace;
 * drop every capability (nothing below needs one); map its tables; add the host's sockets
 * and the container's pidfd to an epoll set; report ready.
 *
 * Then, for each TCP connection accepted on the host: a socket connected (non-blocking)
 * to 127.0.0.1:port in the container (then ::1:port, if 127.0.0.1 refuses: a service on
 * IPv6's loopback only); a refused connect (nothing listens yet) resets the client
 * (SO_LINGER 0: it reads ECONNRESET at once, not a hang); else two pipes, one per
 * direction, and splice socket -> pipe -> socket until EAGAIN (or a fair share, then the
 * other connections' turn).  An EOF is passed on as
 * shutdown(SHUT_WR) once the pipe is empty (TCP half-close); a reset read from one side
 * resets the other.  For UDP: one socket in the container per client address (its
 * "flow"), connected to the port, closed after udp_idle_ms without traffic; datagrams go
 * through one buffer (splice does not keep datagram boundaries).
 *
 * The end: the container's pid 1 exits (its pidfd turns readable): F closes the host's
 * sockets at once (the ports are free again), gives open connections drain_ms to finish
 * and exits.  P's death kills it (PR_SET_PDEATHSIG).
 */
#define _GNU_SOURCE
#include "forward.h"
#include "spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/sched.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define IB_SYNC_GO 'G'
/* Bytes one splice may move: a default pipe's capacity (16 pages).  Pipes stay at their
 * default size: larger ones measured no faster here, and every pipe page counts against
 * the user's pipe-user-pages-soft (pipe(7)), shared with all their other processes. */
#define IB_FWD_CHUNK (1 << 16)
#define IB_FWD_ROUNDS 32         /* splices for one connection before the others' turn */

/* ---- failure ------------------------------------------------------------------------------ */

static int fwd_err_fd = -1;

__attribute__((noreturn)) static void fwd_fail(uint32_t step, int err)
{
    struct ib_fail rec = {.step = step, .err = err};
    ssize_t n;
    do
        n = write(fwd_err_fd, &rec, sizeof rec);
    while (n < 0 && errno == EINTR);
    _exit(127);
}

#define FTRY(step, expr)                 \
    do {                                 \
        if ((expr) < 0)                  \
            fwd_fail((step), errno);     \
    } while (0)

/* ---- state ------------------------------------------------------------------------------ */

/* What an epoll event names: a kind, a slot and the slot's generation (a slot closed and
 * reused within one batch of events must not take its predecessor's). */
enum { K_LISTEN = 1, K_CLIENT, K_INNER, K_FLOW, K_PIDFD };

static uint64_t tag(unsigned kind, unsigned gen, unsigned idx)
{
    return (uint64_t)kind << 48 | (uint64_t)(gen & 0xffff) << 32 | idx;
}

struct half {              /* one direction of a connection */
    int pipe[2];
    size_t pending;        /* bytes in the pipe */
    int eof;               /* its source said EOF */
    int shut;              /* the EOF was passed on (shutdown SHUT_WR) */
};

struct conn {
    int used, gen, connecting;
    int again;             /* its turn ended with more to move: pumped again next round */
    int idx, port, v6;     /* its slot; the container's port; reached on ::1 */
    int client, inner;     /* the host's accepted socket; the container's */
    struct half up, down;  /* client -> inner, inner -> client */
};

struct flow {
    int used, gen, port;   /* port: index in spec->ports */
    int inner;
    struct sockaddr_storage peer;
    socklen_t peer_len;
    int64_t last;          /* ms, CLOCK_MONOTONIC */
};

struct fwd {
    const struct ib_fwd_spec *spec;
    int ep;
    int live_conns, live_flows, paused, draining;
    int n_again;           /* connections with again set */
    int64_t deadline;
    struct conn conns[IB_FWD_MAX_CONNS];
    struct flow flows[IB_FWD_MAX_FLOWS];
    char buf[65536];
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void close_fd(int *fd)
{
    if (*fd >= 0)
        close(*fd);
    *fd = -1;
}

/* Close with a reset (RST) instead of an orderly FIN: SO_LINGER with a zero timeout
 * (socket(7)). */
static void reset_fd(int *fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    if (*fd >= 0)
        setsockopt(*fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close_fd(fd);
}

/* ---- TCP ---------------------------------------------------------------------------------- */

static void listeners_on(struct fwd *f, int on)
{
    for (int i = 0; i < f->spec->n_ports; i++) {
        if (f->spec->ports[i].proto != IB_FWD_TCP)
            continue;
        struct epoll_event ev = {.events = on ? EPOLLIN : 0, .data.u64 = tag(K_LISTEN, 0, i)};
        epoll_ctl(f->ep, EPOLL_CTL_MOD, f->spec->ports[i].fd, &ev);
    }
    f->paused = !on;
}

static void conn_close(struct fwd *f, struct conn *c, int reset)
{
    if (reset) {
        reset_fd(&c->client);
        reset_fd(&c->inner);
    } else {
        close_fd(&c->client);
        close_fd(&c->inner);
    }
    for (int i = 0; i < 2; i++) {
        close_fd(&c->up.pipe[i]);
        close_fd(&c->down.pipe[i]);
    }
    if (c->again)
        f->n_again--;
    c->again = 0;
    c->used = 0;
    c->gen++;
    f->live_conns--;
    if (f->paused && !f->draining)
        listeners_on(f, 1); /* fds were short: there is one connection's worth again */
}

/* Move what src has to dst through h's pipe, until one of them would block (edge-
 * triggered epoll tells when that changes) or IB_FWD_ROUNDS splices were made.  0, 1 when
 * it stopped with more to move, -1 when reading src failed (a reset), -2 when writing dst
 * failed (dst is gone). */
static int move(struct half *h, int src, int dst)
{
    for (int round = 0;; round++) {
        if (round == IB_FWD_ROUNDS)
            return 1; /* no edge will come for what is left: the caller comes back */
        ssize_t n;
        if (h->pending == 0) {
            if (h->eof) {
                if (!h->shut) {
                    shutdown(dst, SHUT_WR); /* the half-close, passed on */
                    h->shut = 1;
                }
                return 0;
            }
            n = splice(src, NULL, h->pipe[1], NULL, IB_FWD_CHUNK, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n > 0)
                h->pending = (size_t)n;
            else if (n == 0)
                h->eof = 1;
            else if (errno == EAGAIN)
                return 0; /* an EPOLLIN edge comes with more */
            else if (errno != EINTR)
                return -1;
            continue;
        }
        n = splice(h->pipe[0], NULL, dst, NULL, h->pending, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0)
            h->pending -= (size_t)n;
        else if (n < 0 && errno == EAGAIN)
            return 0; /* an EPOLLOUT edge comes when dst has room */
        else if (n < 0 && errno != EINTR)
            return -2;
    }
}

static void pump(struct fwd *f, struct conn *c)
{
    int more = 0;
    int up = c->up.shut ? 0 : move(&c->up, c->client, c->inner);
    if (up == -1) {
        conn_close(f, c, 1); /* the client reset: so does the service's side */
        return;
    }
    if (up == -2) {
        /* the service takes no more (it closed): what the client still sends is dropped,
         * what the service said is still delivered */
        c->up.eof = c->up.shut = 1;
    }
    int down = c->down.shut ? 0 : move(&c->down, c->inner, c->client);
    if (down < 0) {
        conn_close(f, c, 1);
        return;
    }
    if (c->up.shut && c->down.shut) {
        conn_close(f, c, 0);
        return;
    }
    more = up == 1 || down == 1;
    if (more != c->again) {
        f->n_again += more ? 1 : -1;
        c->again = more;
    }
}

static int add_fd(struct fwd *f, int fd, uint32_t events, uint64_t data)
{
    struct epoll_event ev = {.events = events, .data.u64 = data};
    return epoll_ctl(f->ep, EPOLL_CTL_ADD, fd, &ev);
}

#define CONN_EVENTS (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET)

/* Connect c to the service inside: on 127.0.0.1, or with v6 on ::1 (for a service that
 * listens on IPv6's loopback only, tried when 127.0.0.1 refuses).  0 when connected, 1
 * when in progress (EPOLLOUT tells), -1 with errno. */
static int connect_inner(struct fwd *f, struct conn *c, int v6)
{
    struct sockaddr_in in4 = {.sin_family = AF_INET, .sin_port = htons((uint16_t)c->port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct sockaddr_in6 in6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)c->port),
                               .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    int one = 1;
    close_fd(&c->inner);
    c->v6 = v6;
    c->inner = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->inner < 0)
        return -1;
    setsockopt(c->inner, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    int rc = v6 ? connect(c->inner, (struct sockaddr *)&in6, sizeof in6)
                : connect(c->inner, (struct sockaddr *)&in4, sizeof in4);
    if (rc < 0 && errno != EINPROGRESS)
        return -1;
    if (add_fd(f, c->inner, CONN_EVENTS, tag(K_INNER, c->gen, (unsigned)c->idx)) < 0)
        return -1;
    c->connecting = rc < 0;
    return c->connecting;
}

/* A connection accepted on port i: reach the service inside, or reset the client. */
static void conn_open(struct fwd *f, int i, int client)
{
    struct conn *c = NULL;
    int idx = 0;
    for (; idx < IB_FWD_MAX_CONNS; idx++)
        if (!f->conns[idx].used) {
            c = &f->conns[idx];
            break;
        }
    if (!c) {
        reset_fd(&client);
        return;
    }
    c->used = 1;
    c->client = client;
    c->inner = -1;
    memset(&c->up, 0, sizeof c->up);
    memset(&c->down, 0, sizeof c->down);
    c->up.pipe[0] = c->up.pipe[1] = c->down.pipe[0] = c->down.pipe[1] = -1;
    f->live_conns++;

    c->idx = idx;
    c->port = f->spec->ports[i].port;
    int one = 1, rc;
    if (pipe2(c->up.pipe, O_NONBLOCK | O_CLOEXEC) < 0 || pipe2(c->down.pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
        if (errno == EMFILE || errno == ENFILE)
            listeners_on(f, 0); /* until a connection closes */
        conn_close(f, c, 1);
        return;
    }
    /* a relay adds no delay of its own: the sender's Nagle already applied */
    setsockopt(c->client, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (add_fd(f, c->client, CONN_EVENTS, tag(K_CLIENT, c->gen, idx)) < 0) {
        conn_close(f, c, 1);
        return;
    }
    rc = connect_inner(f, c, 0);
    if (rc < 0 && errno == ECONNREFUSED)
        rc = connect_inner(f, c, 1);
    if (rc < 0) {
        if (errno == EMFILE || errno == ENFILE)
            listeners_on(f, 0);
        conn_close(f, c, 1); /* ECONNREFUSED: nothing listens there yet */
        return;
    }
    if (rc == 0)
        pump(f, c);
}

static void tcp_accept(struct fwd *f, int i)
{
    for (;;) {
        int client = accept4(f->spec->ports[i].fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (client >= 0) {
            conn_open(f, i, client);
            if (f->paused)
                return;
            continue;
        }
        if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
            continue;
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
            listeners_on(f, 0);
        return; /* EAGAIN: all taken */
    }
}

static void conn_event(struct fwd *f, struct conn *c, int inner, uint32_t events)
{
    if (c->connecting) {
        if (!inner)
            return; /* the client's bytes wait in its socket until the service answers */
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->inner, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err == ECONNREFUSED && !c->v6) {
            int rc = connect_inner(f, c, 1);
            if (rc == 1)
                return;
            err = rc < 0 ? errno : 0;
        }
        if (err) {
            conn_close(f, c, 1); /* refused: the client reads a reset, not a hang */
            return;
        }
        if (!(events & EPOLLOUT))
            return;
        c->connecting = 0;
    }
    pump(f, c);
}

/* ---- UDP ---------------------------------------------------------------------------------- */

static void flow_close(struct fwd *f, struct flow *fl)
{
    close_fd(&fl->inner);
    fl->used = 0;
    fl->gen++;
    f->live_flows--;
    if (f->paused && !f->draining)
        listeners_on(f, 1); /* fds were short: one is free again */
}

static struct flow *flow_for(struct fwd *f, int i, const struct sockaddr_storage *peer, socklen_t len)
{
    struct flow *free_slot = NULL, *oldest = NULL;
    int idx;
    for (idx = 0; idx < IB_FWD_MAX_FLOWS; idx++) {
        struct flow *fl = &f->flows[idx];
        if (!fl->used) {
            if (!free_slot)
                free_slot = fl;
            continue;
        }
        if (fl->port == i && fl->peer_len == len && memcmp(&fl->peer, peer, len) == 0)
            return fl;
        if (!oldest || fl->last < oldest->last)
            oldest = fl;
    }
    if (!free_slot) {
        flow_close(f, oldest); /* the table is full: the flow idle longest goes */
        free_slot = oldest;
    }
    struct flow *fl = free_slot;
    idx = (int)(fl - f->flows);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)f->spec->ports[i].port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    fl->inner = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fl->inner < 0)
        return NULL;
    if (connect(fl->inner, (struct sockaddr *)&to, sizeof to) < 0 ||
        add_fd(f, fl->inner, EPOLLIN, tag(K_FLOW, fl->gen, idx)) < 0) {
        close_fd(&fl->inner);
        return NULL;
    }
    fl->used = 1;
    fl->port = i;
    memcpy(&fl->peer, peer, len);
    fl->peer_len = len;
    f->live_flows++;
    return fl;
}

/* Datagrams from clients on port i, each to its client's flow. */
static void udp_in(struct fwd *f, int i)
{
    for (int k = 0; k < 64; k++) { /* then the others get their turn (level-triggered) */
        struct sockaddr_storage peer;
        socklen_t len = sizeof peer;
        ssize_t n = recvfrom(f->spec->ports[i].fd, f->buf, sizeof f->buf, MSG_DONTWAIT,
                             (struct sockaddr *)&peer, &len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;
        }
        struct flow *fl = flow_for(f, i, &peer, len);
        if (!fl)
            continue;
        fl->last = now_ms();
        send(fl->inner, f->buf, (size_t)n, MSG_DONTWAIT); /* UDP: a loss is the sender's to handle */
    }
}

/* The service's answers on a flow, to its client. */
static void udp_out(struct fwd *f, struct flow *fl)
{
    for (int k = 0; k < 64; k++) {
        ssize_t n = recv(fl->inner, f->buf, sizeof f->buf, MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR || errno == ECONNREFUSED) /* an ICMP error of an earlier send */
                continue;
            return;
        }
        fl->last = now_ms();
        sendto(f->spec->ports[fl->port].fd, f->buf, (size_t)n, MSG_DONTWAIT,
               (struct sockaddr *)&fl->peer, fl->peer_len);
    }
}

static void sweep_flows(struct fwd *f, int64_t now)
{
    for (int idx = 0; idx < IB_FWD_MAX_FLOWS; idx++) {
        struct flow *fl = &f->flows[idx];
        if (fl->used && now - fl->last >= f->spec->udp_idle_ms)
            flow_close(f, fl);
    }
}

/* ---- the end ------------------------------------------------------------------------------ */

/* The container exited: free the host's ports now, let open connections finish. */
static void start_draining(struct fwd *f)
{
    for (int i = 0; i < f->spec->n_ports; i++)
        close(f->spec->ports[i].fd);
    for (int idx = 0; idx < IB_FWD_MAX_FLOWS; idx++)
        if (f->flows[idx].used)
            flow_close(f, &f->flows[idx]);
    f->draining = 1;
    f->deadline = now_ms() + f->spec->drain_ms;
}

__attribute__((noreturn)) static void serve(struct fwd *f)
{
    struct epoll_event evs[64];
    for (;;) {
        int timeout = -1;
        if (f->draining) {
            int64_t left = f->deadline - now_ms();
            if (f->live_conns == 0 || left <= 0)
                _exit(0);
            timeout = (int)left;
        } else if (f->live_flows) {
            timeout = 1000;
        }
        if (f->n_again)
            timeout = 0; /* connections with more to move: only a look at the others */
        int n = epoll_wait(f->ep, evs, 64, timeout);
        if (n < 0 && errno != EINTR)
            _exit(1);
        for (int e = 0; e < n; e++) {
            uint64_t d = evs[e].data.u64;
            unsigned kind = (unsigned)(d >> 48), gen = (unsigned)(d >> 32) & 0xffff, idx = (unsigned)d;
            if (kind == K_PIDFD) {
                if (!f->draining)
                    start_draining(f);
            } else if (kind == K_LISTEN) {
                if (f->draining)
                    continue;
                if (f->spec->ports[idx].proto == IB_FWD_TCP)
                    tcp_accept(f, (int)idx);
                else
                    udp_in(f, (int)idx);
            } else if (kind == K_CLIENT || kind == K_INNER) {
                struct conn *c = &f->conns[idx];
                if (c->used && (unsigned)(c->gen & 0xffff) == gen)
                    conn_event(f, c, kind == K_INNER, evs[e].events);
            } else if (kind == K_FLOW) {
                struct flow *fl = &f->flows[idx];
                if (fl->used && (unsigned)(fl->gen & 0xffff) == gen)
                    udp_out(f, fl);
            }
        }
        for (int idx = 0; f->n_again && idx < IB_FWD_MAX_CONNS; idx++)
            if (f->conns[idx].used && f->conns[idx].again)
                pump(f, &f->conns[idx]);
        if (f->live_flows)
            sweep_flows(f, now_ms());
    }
}

/* ---- the forwarder's setup ---------------------------------------------------------------- */

/* Close every fd but keep[] (n of them; negative ones are no fds). */
static int close_all_but(int *keep, int n)
{
    for (int i = 1; i < n; i++) /* insertion sort: a handful of fds */
        for (int j = i; j > 0 && keep[j - 1] > keep[j]; j--) {
            int t = keep[j];
            keep[j] = keep[j - 1];
            keep[j - 1] = t;
        }
    unsigned lo = 0;
    for (int i = 0; i < n; i++) {
        if (keep[i] < 0 || (unsigned)keep[i] < lo)
            continue; /* no fd, or kept already */
        if ((unsigned)keep[i] > lo && syscall(SYS_close_range, lo, (unsigned)keep[i] - 1, 0) < 0)
            return -1;
        lo = (unsigned)keep[i] + 1;
    }
    return (int)syscall(SYS_close_range, lo, ~0U, 0);
}

static int drop_capabilities(void)
{
    struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
    struct __user_cap_data_struct data[2];
    memset(data, 0, sizeof data);
    return (int)syscall(SYS_capset, &hdr, data);
}

__attribute__((noreturn)) static void forward_main(const struct ib_fwd_spec *spec, int sync_fd, int err_fd)
{
    int keep[IB_FWD_MAX_PORTS + 16];
    int n_keep = 0;
    char go = 0;
    fwd_err_fd = err_fd;

    keep[n_keep++] = sync_fd;
    keep[n_keep++] = err_fd;
    keep[n_keep++] = spec->pidfd;
    for (int i = 0; i < spec->n_ns_fds; i++)
        keep[n_keep++] = spec->ns_fds[i];
    for (int i = 0; i < spec->n_ports; i++)
        keep[n_keep++] = spec->ports[i].fd;
    FTRY(IB_STEP_FWD_CLOSE_FDS, close_all_but(keep, n_keep));
    prctl(PR_SET_NAME, (unsigned long)"isobox-forward", 0, 0, 0);
    if (chdir("/") < 0) /* hold no directory of the host busy */
        _exit(126);

    FTRY(IB_STEP_FWD_PDEATHSIG, prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0));
    ssize_t got;
    do
        got = read(sync_fd, &go, 1);
    while (got < 0 && errno == EINTR);
    if (got != 1 || go != IB_SYNC_GO)
        _exit(126); /* P died or gave up before release */

    FTRY(IB_STEP_FWD_DUMPABLE, prctl(PR_SET_DUMPABLE, 0, 0, 0, 0));
    for (int i = 0; i < spec->n_ns_fds; i++) {
        FTRY(IB_STEP_FWD_SETNS, (int)syscall(SYS_setns, spec->ns_fds[i], 0));
        close(spec->ns_fds[i]);
    }
    {
        /* as many fds as the hard limit allows (no capability needed) */
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
        }
    }
    FTRY(IB_STEP_FWD_CAPS, drop_capabilities());

    struct fwd *f = mmap(NULL, sizeof *f, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (f == MAP_FAILED)
        fwd_fail(IB_STEP_FWD_MEMORY, errno);
    f->spec = spec; /* in our copy of P's memory, as P prepared it */
    for (int idx = 0; idx < IB_FWD_MAX_CONNS; idx++)
        f->conns[idx].client = f->conns[idx].inner = -1;
    for (int idx = 0; idx < IB_FWD_MAX_FLOWS; idx++)
        f->flows[idx].inner = -1;

    FTRY(IB_STEP_FWD_EPOLL, f->ep = epoll_create1(EPOLL_CLOEXEC));
    FTRY(IB_STEP_FWD_EPOLL, add_fd(f, spec->pidfd, EPOLLIN, tag(K_PIDFD, 0, 0)));
    for (int i = 0; i < spec->n_ports; i++)
        FTRY(IB_STEP_FWD_EPOLL, add_fd(f, spec->ports[i].fd, EPOLLIN, tag(K_LISTEN, 0, (unsigned)i)));

    /* P holds the sync pipe until it read our report: a hang-up means it died after the
     * go byte, before the parent-death signal could matter */
    {
        struct pollfd pfd = {.fd = sync_fd, .events = POLLIN};
        if (poll(&pfd, 1, 0) > 0 && (pfd.revents & (POLLHUP | POLLERR)))
            _exit(126);
    }
    close(sync_fd);
    /* ready: P reads EOF (IB_STEP_FWD_READY names a failure to close, which cannot be told) */
    if (close(err_fd) < 0 && errno != EINTR)
        fwd_fail(IB_STEP_FWD_READY, errno);
    fwd_err_fd = -1;
    serve(f);
}

/* ---- the parent side ------------------------------------------------------------------- */

int ib_forward_start(const struct ib_fwd_spec *spec, struct ib_fwd_child *out)
{
    int fds[4] = {-1, -1, -1, -1}; /* sync read, write; err read, write (registered, spawn.c) */
    int pidfd = -1, saved;
    sigset_t all, old;

    if (spec->n_ports < 1 || spec->n_ports > IB_FWD_MAX_PORTS || spec->n_ns_fds > 8)
        return -EINVAL;
    if ((saved = -ib_pipes(fds)))
        return -saved;

    struct clone_args args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_PIDFD;
    args.pidfd = (uint64_t)(uintptr_t)&pidfd;
    args.exit_signal = 0; /* a "clone child": P's by pidfd and __WALL only (spawn.c: start_child) */
    /* No signal handler of Python's may run in the copy: block all around clone; the
     * forwarder keeps them blocked (SIGPIPE too: a write to a closed peer is EPIPE). */
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    long pid = syscall(SYS_clone3, &args, sizeof args);
    if (pid == 0)
        forward_main(spec, fds[0], fds[3]);
    saved = pid < 0 ? errno : 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    ib_close(fds[0]);
    ib_close(fds[3]);
    if (pid < 0) {
        ib_close(fds[1]);
        ib_close(fds[2]);
        return -saved;
    }
    out->pid = (int)pid;
    out->pidfd = pidfd;
    out->sync_fd = fds[1];
    out->err_fd = fds[2];
    return 0;
}
