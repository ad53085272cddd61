/*
 * wk_cpu_pool: a fixed set of worker threads that run one parallel task at a time.
 *
 * wk_cpu_pool_run(fn, ctx) runs fn(ctx, tid, n) on every thread (tid 0 is the caller) and
 * returns when all have finished: a fork-join barrier per task. Workers spin briefly for the
 * next task (tasks come every few microseconds in a forward pass) and then sleep on a
 * condition variable, so an idle backend costs no CPU.
 *
 * Threads: wk_cpu_pool_run must be called from one thread at a time (the owner); fn must not
 * call wk_cpu_pool_run. Work splitting inside fn is fn's business (e.g. an atomic counter).
 */
#ifndef WK_CPU_POOL_H
#define WK_CPU_POOL_H

#include <stdint.h>

#include "cm_err.h"

typedef struct wk_cpu_pool wk_cpu_pool;

typedef void (*wk_cpu_pool_fn)(void *ctx, int tid, int n_threads);

/* wk_cpu_pool_create starts n_threads - 1 workers (n_threads >= 1). *out owned by the caller
 * (wk_cpu_pool_destroy). */
cm_err wk_cpu_pool_create(int n_threads, wk_cpu_pool **out);

/* wk_cpu_pool_destroy stops and joins the workers; NULL is fine. */
void wk_cpu_pool_destroy(wk_cpu_pool *p);

int wk_cpu_pool_size(const wk_cpu_pool *p);

/* Runs fn on the owner and on up to active - 1 workers (those that join in time) and waits
 * for all of them. fn must claim its work dynamically: any subset of tids may run it. */
void wk_cpu_pool_run(wk_cpu_pool *p, wk_cpu_pool_fn fn, void *ctx);

/* wk_cpu_pool_set_after: every worker runs after(ctx, tid, n) when it has finished its part of
 * a task and the owner no longer waits for it (the owner may already have gone on), before it
 * waits for the next task: for work nobody waits for, such as prefetch hints. Set before the
 * first task. */
void wk_cpu_pool_set_after(wk_cpu_pool *p, wk_cpu_pool_fn after, void *ctx);

/* wk_cpu_pool_set_active limits the threads that work on a task to n_active (clamped to
 * 1 .. size); idle workers sleep. Owner only, between tasks. */
void wk_cpu_pool_set_active(wk_cpu_pool *p, int n_active);
int wk_cpu_pool_active(const wk_cpu_pool *p);

/* wk_cpu_pool_wait_ns: total time the owner spent waiting for joined workers to finish
 * (owner only). */
int64_t wk_cpu_pool_wait_ns(const wk_cpu_pool *p);

#endif /* WK_CPU_POOL_H */
