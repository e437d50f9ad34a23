/* ring.c's two-rank ring over a plain TCP connection, the baseline MPI is compared with.
 *
 *   tcp_ring serve PORT                       rank 1: accept one connection, echo every lap
 *   tcp_ring connect HOST PORT [LAT [BW]]     rank 0: the laps; prints ring.c's lines
 * Same messages (8 bytes, 1 MiB), same default laps, TCP_NODELAY as Open MPI's TCP transport. */
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#define SMALL 8
#define LARGE (1 << 20)
#define HOST_MAX 256

static void die(const char *what)
{
    perror(what);
    exit(1);
}

static void full(int fd, char *buf, size_t n, int sending)
{
    while (n > 0) {
        ssize_t done = sending ? write(fd, buf, n) : read(fd, buf, n);
        if (done <= 0)
            die(sending ? "tcp_ring: write" : "tcp_ring: read");
        buf += done;
        n -= (size_t)done;
    }
}

static double now(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return tv.tv_sec + tv.tv_usec / 1e6;
}

static void nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static int serve(const char *port, char *buf)
{
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE}, *ai;
    int one = 1, lsock, fd, bytes;
    char host[HOST_MAX] = {0};

    if (getaddrinfo(NULL, port, &hints, &ai) != 0)
        die("tcp_ring: port");
    lsock = socket(ai->ai_family, ai->ai_socktype, 0);
    setsockopt(lsock, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (lsock < 0 || bind(lsock, ai->ai_addr, ai->ai_addrlen) || listen(lsock, 1))
        die("tcp_ring: listen");
    fd = accept(lsock, NULL, NULL);
    if (fd < 0)
        die("tcp_ring: accept");
    nodelay(fd);
    gethostname(host, HOST_MAX - 1);
    full(fd, host, HOST_MAX, 1);
    for (;;) {  /* each lap: a 4-byte size, then that many bytes, echoed back */
        int got = 0;
        char *p = (char *)&bytes;
        while (got < 4) {
            ssize_t n = read(fd, p + got, 4 - got);
            if (n <= 0)
                return 0;  /* the client is done */
            got += n;
        }
        if (bytes < 0 || bytes > LARGE)
            return 1;
        full(fd, buf, (size_t)bytes, 0);
        full(fd, buf, (size_t)bytes, 1);
    }
}

static double laps_of(int fd, int bytes, int laps, char *buf, int *ok)
{
    int lap, i;
    double start = now();

    for (lap = 0; lap < laps; lap++) {
        for (i = 0; i < bytes; i++)
            buf[i] = (char)(i + lap);
        full(fd, (char *)&bytes, 4, 1);
        full(fd, buf, (size_t)bytes, 1);
        full(fd, buf, (size_t)bytes, 0);
        for (i = 0; i < bytes; i++)
            *ok &= buf[i] == (char)(i + lap);
    }
    return (now() - start) / (2.0 * laps);
}

int main(int argc, char **argv)
{
    char *buf = malloc(LARGE), host[HOST_MAX] = {0}, peer[HOST_MAX] = {0};
    struct addrinfo hints = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM}, *ai;
    int fd, ok = 1, small_laps, large_laps, tries;
    double hop_small, hop_large;

    if (!buf)
        die("tcp_ring: malloc");
    if (argc == 3 && strcmp(argv[1], "serve") == 0)
        return serve(argv[2], buf);
    if (argc < 4 || strcmp(argv[1], "connect") != 0) {
        fprintf(stderr, "usage: tcp_ring serve PORT | tcp_ring connect HOST PORT [LAT [BW]]\n");
        return 2;
    }
    small_laps = argc > 4 ? atoi(argv[4]) : 200;
    large_laps = argc > 5 ? atoi(argv[5]) : 20;
    if (small_laps < 1 || large_laps < 1 || getaddrinfo(argv[2], argv[3], &hints, &ai) != 0) {
        fprintf(stderr, "tcp_ring: bad host, port or laps\n");
        return 2;
    }
    for (tries = 0;; tries++) {  /* the server may still be starting */
        fd = socket(ai->ai_family, ai->ai_socktype, 0);
        if (fd >= 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        if (fd >= 0)
            close(fd);
        if (tries >= 100)
            die("tcp_ring: connect");
        usleep(100000);
    }
    nodelay(fd);
    full(fd, peer, HOST_MAX, 0);
    peer[HOST_MAX - 1] = 0;
    gethostname(host, HOST_MAX - 1);
    hop_small = laps_of(fd, SMALL, small_laps, buf, &ok);
    hop_large = laps_of(fd, LARGE, large_laps, buf, &ok);
    close(fd);
    printf("ranks 2\nrank 0 %s\nrank 1 %s\n", host, peer);
    if (!ok) {
        printf("ring altered\n");
        return 1;
    }
    printf("latency_us %.1f\n", hop_small * 1e6);
    printf("bandwidth_MBps %.1f\n", LARGE / hop_large / 1e6);
    printf("ring ok\n");
    return 0;
}
