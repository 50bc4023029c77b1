/* isobox native core: a listening unix socket, without Python's socket module.
 *
 * Every owner of a container serves a control socket (server.py), but most are never
 * connected to: `isobox run --rm IMAGE true` ends before anyone could. Importing Python's
 * socket module costs ~2 ms of every such command, so the owner creates the listening
 * socket here and imports the module only when a client connects.
 *
 * The socket file is created with mode 0600 without touching the process's umask (which
 * other threads share): fchmod before bind sets the mode that bind gives the file, less
 * the umask (unix(7): "created with ... permissions ... (mode & ~umask)"), and a chmod
 * after bind makes it exactly 0600 whatever the umask was.
 *
 * Returns the fd, or a negative errno (crun's convention; see fsops.c).
 */
#define _GNU_SOURCE
#include "listen.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

int ib_listen_unix(const char *path, int backlog)
{
    struct sockaddr_un addr;
    size_t len = strlen(path);
    if (len == 0 || len >= sizeof addr.sun_path)
        return -ENAMETOOLONG;
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, path, len);

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    if (fchmod(fd, 0600) < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
        goto fail;
    if (chmod(path, 0600) < 0 || listen(fd, backlog) < 0) {
        int saved = errno;
        unlink(path);
        errno = saved;
        goto fail;
    }
    return fd;
fail:;
    int err = errno;
    close(fd);
    return -err;
}
