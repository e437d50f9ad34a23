#!/bin/sh
# The HPC Challenge suite (HPL, DGEMM, STREAM, PTRANS, RandomAccess, FFT, latency and
# bandwidth) on 2 MPI processes, one per node: `oarsub -l nodes=2/core=1 ./run-hpcc.sh`.
# Its summary lands in hpccoutf.txt beside this script (hpccinf.txt sets the sizes).
set -e
cd "$(dirname "$0")"
[ -e hpccinf.txt ] || cp /usr/lib/oar-live/autoconf/mpi/hpccinf.txt .
mpirun -np 2 hpcc
grep -E '^(HPL_Tflops|StarDGEMM_Gflops|StarSTREAM_Triad|MPIRandomAccess_GUPs|MPIFFT_Gflops|RandomlyOrderedRingBandwidth_GBytes|RandomlyOrderedRingLatency_usec)=' hpccoutf.txt
