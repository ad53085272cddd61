/*
 * cpu_pool: a fixed set of worker threads that run one parallel task at a time.
 *
 * cpu_pool_run(fn, ctx) runs fn(ctx, tid, n) on every thread (tid 0 is the caller) and
 * returns when all have finished: a fork-join barrier per task. Workers spin briefly for the
 * next task (tasks come every few microseconds in a forward pass) and then sleep on a
 * condition variable, so an idle backend costs no CPU.
 *
 * Threads: cpu_pool_run must be called from one thread at a time (the owner); fn must not
 * call cpu_pool_run. Work splitting inside fn is fn's business (e.g. an atomic counter).
 */
#ifndef WK_CPU_POOL_H
#define WK_CPU_POOL_H

#include "../../../common/cm_err.h"

typedef struct cpu_pool cpu_pool;

typedef void (*cpu_pool_fn)(void *ctx, int tid, int n_threads);

/* cpu_pool_create starts n_threads - 1 workers (n_threads >= 1). *out owned by the caller
 * (cpu_pool_destroy). */
cm_err cpu_pool_create(int n_threads, cpu_pool **out);

/* cpu_pool_destroy stops and joins the workers; NULL is fine. */
void cpu_pool_destroy(cpu_pool *p);

int cpu_pool_size(const cpu_pool *p);

/* Runs fn on all threads and waits for all of them. */
void cpu_pool_run(cpu_pool *p, cpu_pool_fn fn, void *ctx);

#endif /* WK_CPU_POOL_H */
