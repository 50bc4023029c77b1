/* isobox native core: a listening unix socket without Python's socket module (listen.c). */
#ifndef ISOBOX_LISTEN_H
#define ISOBOX_LISTEN_H

/* A SOCK_STREAM unix socket bound at `path` (mode 0600, close-on-exec), listening with
 * `backlog`. Returns its fd, or -errno. */
int ib_listen_unix(const char *path, int backlog);

#endif
