/* Work splitting shared by the compiled CPU kernels: up to 64 jobs, one per thread. */
#ifndef ZOO_JOBS_H
#define ZOO_JOBS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* Threads for `items` work items: at least 1, at most 64 (the job arrays' size) and items. */
static inline int zoo_threads(int threads, int64_t items) {
    if (threads > items) threads = (int)items;
    if (threads < 1) threads = 1;
    return threads > 64 ? 64 : threads;
}

/* fn over jobs[0 .. threads), each `size` bytes.

   Built with -fopenmp (cbuild.py's first choice) the jobs run in an OpenMP parallel region.
   The library then links libgomp.so.1, and in a process where PyTorch has loaded its own
   libgomp.so.1 the loader reuses that one: the jobs run on PyTorch's OpenMP threads. Those
   threads spin for a while after each of PyTorch's parallel ops; a kernel on threads of its
   own would compete with them for the cores (a ~1 ms stall per call on 2 cores measured,
   see benchmarks/results/). Without OpenMP: job 0 here, the others on new threads; a job
   whose thread cannot start runs here after the rest. */
#ifdef _OPENMP
#include <omp.h>
static inline void zoo_run_jobs(void *(*fn)(void *), void *jobs, size_t size, int threads) {
    if (threads <= 1) {
        fn(jobs);
        return;
    }
#pragma omp parallel for num_threads(threads) schedule(static, 1)
    for (int k = 0; k < threads; k++) fn((char *)jobs + k * size);
}
#else
static inline void zoo_run_jobs(void *(*fn)(void *), void *jobs, size_t size, int threads) {
    pthread_t tid[64];
    int started = 0;
    for (int k = 1; k < threads; k++) {
        if (pthread_create(&tid[k], 0, fn, (char *)jobs + k * size) != 0) break;
        started = k;
    }
    fn(jobs);
    for (int k = 1; k <= started; k++) pthread_join(tid[k], 0);
    for (int k = started + 1; k < threads; k++) fn((char *)jobs + k * size);
}
#endif

#endif
