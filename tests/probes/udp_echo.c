/* A UDP echo server for tests/test_ports.py (busybox has no UDP server): answers each
 * datagram on 0.0.0.0:PORT with "echo:" and the datagram, to its sender; "whoami" with
 * "port:" and the sender's port.  Static, so it runs in any root filesystem. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_ANY)};
    char buf[65536 + 5];
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    addr.sin_port = htons((unsigned short)atoi(argc > 1 ? argv[1] : "5353"));
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        perror("udp_echo: bind");
        return 1;
    }
    printf("listening\n");
    fflush(stdout);
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof peer;
        ssize_t n = recvfrom(fd, buf + 5, sizeof buf - 5, 0, (struct sockaddr *)&peer, &len);
        if (n < 0)
            continue;
        if (n == 6 && memcmp(buf + 5, "whoami", 6) == 0) {
            int k = snprintf(buf, sizeof buf, "port:%d", ntohs(((struct sockaddr_in *)&peer)->sin_port));
            sendto(fd, buf, (size_t)k, 0, (struct sockaddr *)&peer, len);
            continue;
        }
        memcpy(buf, "echo:", 5);
        sendto(fd, buf, (size_t)n + 5, 0, (struct sockaddr *)&peer, len);
    }
}
