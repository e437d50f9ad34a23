/* An MPI ring: every rank passes a message to the next one, the last back to rank 0.
 *
 * `ring [LATENCY_LAPS [BANDWIDTH_LAPS]]` prints, from rank 0, one `key value` line each:
 *   ranks N                 the ring's size
 *   rank R HOST             where each rank runs (N lines)
 *   latency_us X            one hop of an 8-byte message, averaged over LATENCY_LAPS laps
 *   bandwidth_MBps X        one hop of a 1 MiB message, averaged over BANDWIDTH_LAPS laps
 *   ring ok                 every lap came back with the bytes it left with
 * `oar-live check` and the benchmarks read these lines; tcp_ring.c prints the same ones over
 * plain TCP, for comparison. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SMALL 8
#define LARGE (1 << 20)

/* seconds per hop for `laps` laps of a `bytes` message; 0 when a lap came back altered */
static double laps_of(int bytes, int laps, int rank, int size, char *buf)
{
    int next = (rank + 1) % size, prev = (rank + size - 1) % size, lap, i, ok = 1;
    double start;

    MPI_Barrier(MPI_COMM_WORLD);
    start = MPI_Wtime();
    for (lap = 0; lap < laps; lap++) {
        if (rank == 0) {
            for (i = 0; i < bytes; i++)
                buf[i] = (char)(i + lap);
            MPI_Send(buf, bytes, MPI_CHAR, next, lap, MPI_COMM_WORLD);
            MPI_Recv(buf, bytes, MPI_CHAR, prev, lap, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            for (i = 0; i < bytes; i++)
                ok &= buf[i] == (char)(i + lap);
        } else {
            MPI_Recv(buf, bytes, MPI_CHAR, prev, lap, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            MPI_Send(buf, bytes, MPI_CHAR, next, lap, MPI_COMM_WORLD);
        }
    }
    return ok ? (MPI_Wtime() - start) / ((double)laps * size) : 0.0;
}

int main(int argc, char **argv)
{
    int rank, size, len, r, small_laps, large_laps;
    char host[MPI_MAX_PROCESSOR_NAME], *hosts, *buf;
    double hop_small, hop_large;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    small_laps = argc > 1 ? atoi(argv[1]) : 200;
    large_laps = argc > 2 ? atoi(argv[2]) : 20;
    if (size < 2 || small_laps < 1 || large_laps < 1) {
        if (rank == 0)
            fprintf(stderr, "ring: needs 2 ranks or more and laps >= 1\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    memset(host, 0, sizeof(host));
    MPI_Get_processor_name(host, &len);
    hosts = malloc((size_t)size * MPI_MAX_PROCESSOR_NAME);
    buf = malloc(LARGE);
    if (!hosts || !buf)
        MPI_Abort(MPI_COMM_WORLD, 1);
    MPI_Gather(host, MPI_MAX_PROCESSOR_NAME, MPI_CHAR, hosts, MPI_MAX_PROCESSOR_NAME, MPI_CHAR,
               0, MPI_COMM_WORLD);
    hop_small = laps_of(SMALL, small_laps, rank, size, buf);
    hop_large = laps_of(LARGE, large_laps, rank, size, buf);
    if (rank == 0) {
        printf("ranks %d\n", size);
        for (r = 0; r < size; r++)
            printf("rank %d %s\n", r, hosts + (size_t)r * MPI_MAX_PROCESSOR_NAME);
        if (hop_small > 0 && hop_large > 0) {
            printf("latency_us %.1f\n", hop_small * 1e6);
            printf("bandwidth_MBps %.1f\n", LARGE / hop_large / 1e6);
            printf("ring ok\n");
        } else {
            printf("ring altered\n");
        }
    }
    free(buf);
    free(hosts);
    MPI_Finalize();
    return 0;
}
