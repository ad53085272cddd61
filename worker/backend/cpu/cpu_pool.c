/*
 * wk_cpu_pool: fork-join thread pool (see wk_cpu_pool.h).
 */
#include "cpu_pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

/* Spin iterations (~ tens of microseconds) before sleeping: long enough to bridge the gap
 * between the matmuls of one forward pass, short enough not to burn a shared core. */
#define SPIN_ITERS 20000

typedef struct worker_arg {
    wk_cpu_pool *pool;
    int tid;
} worker_arg;

struct wk_cpu_pool {
    int n_threads;
    pthread_t *threads;
    worker_arg *args;
    int started;
    wk_cpu_pool_fn fn;
    void *ctx;
    wk_cpu_pool_fn after; /* run by a worker after it finished its part (set before tasks) */
    void *after_ctx;
    atomic_uint gen; /* incremented (under mu) for every task */
    /* Joining a task: (gen << 32) | CLOSED? | count of workers that joined. A worker joins
     * only while the task of the generation it saw is still open, so the owner never waits
     * for a worker that was descheduled before it started (all work is claimed dynamically
     * by whoever runs; a late worker simply skips the task). */
    _Atomic uint64_t join;
    atomic_int done;          /* joined workers that finished */
    atomic_bool owner_asleep; /* the owner waits on done_cv (workers must signal) */
    atomic_bool stop;
    /* Workers allowed to join a task (0 .. n_threads - 1): lowered when workers keep the
     * owner waiting (cores shared with other processes). Written by the owner only. */
    atomic_int max_join;
    int64_t wait_ns; /* owner's time spent waiting for joined workers (owner only) */
    pthread_mutex_t mu;
    pthread_cond_t task_cv;
    pthread_cond_t done_cv;
};

#define JOIN_CLOSED (1ull << 31)

static void *worker_main(void *arg) {
    worker_arg *wa = arg;
    wk_cpu_pool *p = wa->pool;
    unsigned seen = 0;
    for (;;) {
        /* spin for the next task only while helpers are wanted; otherwise sleep at once */
        int spins = atomic_load_explicit(&p->max_join, memory_order_relaxed) > 0 ? 0 : SPIN_ITERS;
        while (atomic_load_explicit(&p->gen, memory_order_acquire) == seen && spins < SPIN_ITERS) {
            CPU_RELAX();
            spins++;
        }
        if (atomic_load_explicit(&p->gen, memory_order_acquire) == seen) {
            pthread_mutex_lock(&p->mu);
            while (atomic_load(&p->gen) == seen && !atomic_load(&p->stop)) {
                pthread_cond_wait(&p->task_cv, &p->mu);
            }
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) {
            return NULL;
        }
        seen = atomic_load(&p->gen);
        uint64_t v = atomic_load(&p->join);
        bool joined = false;
        while ((uint32_t)(v >> 32) == seen && (v & JOIN_CLOSED) == 0 &&
               (int)(v & 0xffff) < atomic_load_explicit(&p->max_join, memory_order_relaxed)) {
            if (atomic_compare_exchange_weak(&p->join, &v, v + 1)) {
                joined = true;
                break;
            }
        }
        if (!joined) {
            continue; /* the owner already finished this task without us */
        }
        p->fn(p->ctx, wa->tid, p->n_threads);
        atomic_fetch_add(&p->done, 1);
        /* seq_cst pairs with the owner's store of owner_asleep before it re-checks done */
        if (atomic_load(&p->owner_asleep)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
        if (p->after != NULL) {
            p->after(p->after_ctx, wa->tid, p->n_threads);
        }
    }
}

cm_err wk_cpu_pool_create(int n_threads, wk_cpu_pool **out) {
    if (n_threads < 1 || out == NULL) {
        return CM_ERR_INVALID;
    }
    *out = NULL;
    wk_cpu_pool *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return CM_ERR_NOMEM;
    }
    p->n_threads = n_threads;
    atomic_init(&p->gen, 0);
    atomic_init(&p->join, 0);
    atomic_init(&p->done, 0);
    atomic_init(&p->owner_asleep, false);
    atomic_init(&p->stop, false);
    atomic_init(&p->max_join, n_threads - 1);
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->task_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    p->threads = calloc((size_t)n_threads, sizeof(pthread_t));
    p->args = calloc((size_t)n_threads, sizeof(worker_arg));
    if (p->threads == NULL || p->args == NULL) {
        wk_cpu_pool_destroy(p);
        return CM_ERR_NOMEM;
    }
    for (int i = 1; i < n_threads; i++) {
        p->args[i].pool = p;
        p->args[i].tid = i;
        if (pthread_create(&p->threads[i], NULL, worker_main, &p->args[i]) != 0) {
            p->n_threads = i; /* run with what we have */
            break;
        }
        p->started = i;
    }
    *out = p;
    return CM_OK;
}

void wk_cpu_pool_destroy(wk_cpu_pool *p) {
    if (p == NULL) {
        return;
    }
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->task_cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i <= p->started; i++) {
        pthread_join(p->threads[i], NULL);
    }
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->task_cv);
    pthread_cond_destroy(&p->done_cv);
    free(p->threads);
    free(p->args);
    free(p);
}

int wk_cpu_pool_size(const wk_cpu_pool *p) {
    return p->n_threads;
}

void wk_cpu_pool_run(wk_cpu_pool *p, wk_cpu_pool_fn fn, void *ctx) {
    if (p->n_threads == 1 || atomic_load_explicit(&p->max_join, memory_order_relaxed) == 0) {
        fn(ctx, 0, p->n_threads); /* no helpers: nothing to wake, nothing to wait for */
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    atomic_store(&p->done, 0);
    pthread_mutex_lock(&p->mu);
    unsigned g = atomic_load(&p->gen) + 1;
    atomic_store(&p->join, (uint64_t)g << 32);
    atomic_store_explicit(&p->gen, g, memory_order_release);
    pthread_cond_broadcast(&p->task_cv);
    pthread_mutex_unlock(&p->mu);
    fn(ctx, 0, p->n_threads);
    /* close the task: from now on no worker joins; wait only for those that did */
    uint64_t v = atomic_fetch_or(&p->join, JOIN_CLOSED);
    int joined = (int)(v & 0xffff);
    if (atomic_load_explicit(&p->done, memory_order_acquire) >= joined) {
        return;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int spins = 0;
    while (atomic_load_explicit(&p->done, memory_order_acquire) < joined && spins < SPIN_ITERS) {
        CPU_RELAX();
        spins++;
    }
    if (atomic_load_explicit(&p->done, memory_order_acquire) < joined) {
        pthread_mutex_lock(&p->mu);
        atomic_store(&p->owner_asleep, true);
        while (atomic_load(&p->done) < joined) {
            pthread_cond_wait(&p->done_cv, &p->mu);
        }
        atomic_store(&p->owner_asleep, false);
        pthread_mutex_unlock(&p->mu);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    p->wait_ns += (int64_t)(t1.tv_sec - t0.tv_sec) * 1000000000 + (t1.tv_nsec - t0.tv_nsec);
}

void wk_cpu_pool_set_after(wk_cpu_pool *p, wk_cpu_pool_fn after, void *ctx) {
    p->after = after;
    p->after_ctx = ctx;
}

void wk_cpu_pool_set_active(wk_cpu_pool *p, int n_active) {
    int j = n_active - 1;
    j = j < 0 ? 0 : (j > p->n_threads - 1 ? p->n_threads - 1 : j);
    atomic_store(&p->max_join, j);
}

int wk_cpu_pool_active(const wk_cpu_pool *p) {
    return atomic_load(&p->max_join) + 1;
}

int64_t wk_cpu_pool_wait_ns(const wk_cpu_pool *p) {
    return p->wait_ns;
}
