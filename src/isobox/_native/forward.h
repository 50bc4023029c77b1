/* isobox native core: the forwarder of a container's published ports (forward.c). */
#ifndef ISOBOX_FORWARD_H
#define ISOBOX_FORWARD_H

#include <stdint.h>

/* The protocols a port is published for (their IPPROTO_* numbers). */
#define IB_FWD_TCP 6
#define IB_FWD_UDP 17

/* The forwarder's bounds: open TCP connections and UDP client flows at once.  A
 * connection past the first bound is reset; a flow past the second replaces the one idle
 * longest.  Each connection holds six fds (two sockets, two pipes). */
#define IB_FWD_MAX_CONNS 1024
#define IB_FWD_MAX_FLOWS 256

/* Ports one forwarder serves (one container's). */
#define IB_FWD_MAX_PORTS 256

/* One published port: the host's socket (TCP: listening; UDP: bound; non-blocking), made
 * by the caller, and where it leads inside the container's network namespace. */
struct ib_fwd_port {
    int fd;
    int proto;       /* IB_FWD_TCP or IB_FWD_UDP */
    int port;        /* the container's port, on its loopback (127.0.0.1) */
};

struct ib_fwd_spec {
    const int *ns_fds;   /* namespaces to join, in order: the user namespace (rootless), then net */
    int n_ns_fds;
    int pidfd;           /* the container's pid 1: its exit ends the forwarding */
    const struct ib_fwd_port *ports;
    int n_ports;
    int udp_idle_ms;     /* a UDP client flow idle this long is closed */
    int drain_ms;        /* after the container's exit, open connections get this long */
};

struct ib_fwd_child {
    int pid;
    int pidfd;
    int sync_fd;   /* parent's write end: the go byte releases the forwarder */
    int err_fd;    /* parent's read end: a struct ib_fail, or EOF once it serves */
};

/* Starts the forwarder, a copy of the calling process, blocked until the go byte.
 * Returns 0, or -errno; never exits. */
int ib_forward_start(const struct ib_fwd_spec *spec, struct ib_fwd_child *out);

#endif
