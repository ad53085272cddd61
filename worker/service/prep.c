/*
 * wk_prep: a FIFO of items under one mutex, n threads taking from it, and a done list the
 * engine thread empties (see prep.h).
 */
#include "prep.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "cm_clock.h"
#include "constraint.h"
#include "tokenize.h"
#include "wire.h"

#define PREP_MAX_THREADS 64
/* Pool threads run at this nice level (Linux: per thread), so a burst of hostile prompts
 * that are slow to tokenize yet fit the context (500,000 spaces take ~0.5 s) takes CPU from
 * the engine's compute threads only when they leave it idle. */
#define PREP_NICE 10

struct wk_prep {
    const wk_prep_ctx *ctx;
    wk_prep_ready_fn on_ready;
    void *arg;
    pthread_mutex_t mtx;
    pthread_cond_t cond; /* signalled when an item is queued or stopping begins */
    wk_prepared *head, *tail;
    wk_prepared *done_head, *done_tail;
    uint32_t pending; /* queued + running + done, against queue_cap */
    uint32_t queue_cap;
    bool stopping;
    pthread_t threads[PREP_MAX_THREADS];
    uint32_t n_threads;
};

wk_prepared *wk_prepared_new(void) {
    wk_prepared *p = calloc(1, sizeof *p);
    if (p != NULL)
        atomic_init(&p->cancelled, false);
    return p;
}

void wk_prepared_free(wk_prepared *p) {
    if (p == NULL)
        return;
    if (p->env != NULL)
        sluice__envelope__free_unpacked(p->env, NULL);
    free(p->ids);
    wk_grammar_unref(p->grammar);
    wk_wire_buf_free(&p->reply);
    free(p);
}

void wk_prepared_cancel(wk_prepared *p) {
    atomic_store(&p->cancelled, true);
}

cm_err wk_prep_run(const wk_prep_ctx *ctx, wk_prepared *p) {
    int64_t t0 = cm_clock_mono_ns();
    const Sluice__Submit *sub = p->env->submit;
    p->err[0] = '\0';
    if (atomic_load(&p->cancelled)) {
        p->rv = CM_ERR_CANCELLED;
        snprintf(p->err, sizeof p->err, "cancelled before it was prepared");
        goto done;
    }
    /* 0. /tokenize, /detokenize: the answer is the whole job (nothing reaches the engine). */
    if (p->env->msg_case == SLUICE__ENVELOPE__MSG_TOKENIZE) {
        p->rv = wk_tokenize_run(&ctx->prompt, p->env->tokenize, &p->reply, p->err, sizeof p->err);
        goto done;
    }
    /* 1. The prompt: template, tokenization, context length (refused from the bytes when
     *    that proves it cannot fit, before any tokenizing). */
    p->rv = wk_prompt_build(&ctx->prompt, sub, &p->ids, &p->n_ids, p->err, sizeof p->err);
    if (p->rv != CM_OK)
        goto done;
    /* 2. Structured outputs: compile the request's constraint here (p->grammar), after the
     *    prompt (a prompt that cannot fit is refused without paying for a compile) and before
     *    anything else, so its errors reach the gateway like the prompt's. A repeated schema
     *    is a cache lookup (wk_constraint_build goes through ctx->grammars). */
    if (sub->response_format != NULL || sub->n_tools > 0) {
        wk_constraint con;
        if (ctx->grammars == NULL) {
            p->rv = CM_ERR_UNSUPPORTED;
            snprintf(p->err, sizeof p->err, "structured outputs are not enabled on this worker");
            goto done;
        }
        p->rv = wk_constraint_build(ctx->grammars, sub, &con, p->err, sizeof p->err);
        if (p->rv != CM_OK)
            goto done;
        p->grammar = con.grammar; /* the reference moves to p (NULL when none) */
    }
    /* 3. Sampling parameters (counts here; ranges are checked by the engine at submit). */
    p->rv = wk_wire_sampling(sub->sampling, p->random_seed, &p->sampling, p->err, sizeof p->err);
done:
    if (p->rv != CM_OK) {
        free(p->ids);
        p->ids = NULL;
        p->n_ids = 0;
        wk_grammar_unref(p->grammar);
        p->grammar = NULL;
        if (p->err[0] == '\0')
            snprintf(p->err, sizeof p->err, "%s", cm_strerror(p->rv));
    }
    p->prep_ns = cm_clock_mono_ns() - t0;
    return p->rv;
}

static void *pool_main(void *arg) {
    wk_prep *pp = arg;
    /* Best effort: without the permission or on another kernel, it runs at normal priority. */
    (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), PREP_NICE);
    for (;;) {
        pthread_mutex_lock(&pp->mtx);
        while (pp->head == NULL && !pp->stopping)
            pthread_cond_wait(&pp->cond, &pp->mtx);
        if (pp->stopping) {
            pthread_mutex_unlock(&pp->mtx);
            return NULL;
        }
        wk_prepared *item = pp->head;
        pp->head = item->next;
        if (pp->head == NULL)
            pp->tail = NULL;
        item->next = NULL;
        pthread_mutex_unlock(&pp->mtx);

        wk_prep_run(pp->ctx, item);

        pthread_mutex_lock(&pp->mtx);
        if (pp->done_tail != NULL)
            pp->done_tail->next = item;
        else
            pp->done_head = item;
        pp->done_tail = item;
        pthread_mutex_unlock(&pp->mtx);
        pp->on_ready(pp->arg);
    }
}

cm_err wk_prep_create(const wk_prep_ctx *ctx, uint32_t n_threads, uint32_t queue_cap,
                      wk_prep_ready_fn on_ready, void *arg, wk_prep **out) {
    *out = NULL;
    if (n_threads == 0 || n_threads > PREP_MAX_THREADS || queue_cap == 0 || on_ready == NULL)
        return CM_ERR_INVALID;
    wk_prep *pp = calloc(1, sizeof *pp);
    if (pp == NULL)
        return CM_ERR_NOMEM;
    pp->ctx = ctx;
    pp->on_ready = on_ready;
    pp->arg = arg;
    pp->queue_cap = queue_cap;
    pthread_mutex_init(&pp->mtx, NULL);
    pthread_cond_init(&pp->cond, NULL);
    for (uint32_t i = 0; i < n_threads; i++) {
        if (pthread_create(&pp->threads[i], NULL, pool_main, pp) != 0) {
            wk_prep_destroy(pp);
            return CM_ERR_NOMEM;
        }
        pp->n_threads++;
    }
    *out = pp;
    return CM_OK;
}

static void free_list(wk_prepared *p) {
    while (p != NULL) {
        wk_prepared *n = p->next;
        wk_prepared_free(p);
        p = n;
    }
}

void wk_prep_destroy(wk_prep *pp) {
    if (pp == NULL)
        return;
    pthread_mutex_lock(&pp->mtx);
    pp->stopping = true;
    pthread_cond_broadcast(&pp->cond);
    pthread_mutex_unlock(&pp->mtx);
    for (uint32_t i = 0; i < pp->n_threads; i++)
        pthread_join(pp->threads[i], NULL);
    free_list(pp->head);
    free_list(pp->done_head);
    pthread_cond_destroy(&pp->cond);
    pthread_mutex_destroy(&pp->mtx);
    free(pp);
}

cm_err wk_prep_push(wk_prep *pp, wk_prepared *item) {
    cm_err rv = CM_OK;
    pthread_mutex_lock(&pp->mtx);
    if (pp->stopping) {
        rv = CM_ERR_CLOSED;
    } else if (pp->pending >= pp->queue_cap) {
        rv = CM_ERR_OVERLOADED;
    } else {
        item->next = NULL;
        if (pp->tail != NULL)
            pp->tail->next = item;
        else
            pp->head = item;
        pp->tail = item;
        pp->pending++;
        pthread_cond_signal(&pp->cond);
    }
    pthread_mutex_unlock(&pp->mtx);
    return rv;
}

wk_prepared *wk_prep_pop_done(wk_prep *pp) {
    pthread_mutex_lock(&pp->mtx);
    wk_prepared *list = pp->done_head;
    pp->done_head = pp->done_tail = NULL;
    for (wk_prepared *p = list; p != NULL; p = p->next)
        pp->pending--;
    pthread_mutex_unlock(&pp->mtx);
    return list;
}

uint32_t wk_prep_pending(wk_prep *pp) {
    pthread_mutex_lock(&pp->mtx);
    uint32_t n = pp->pending;
    pthread_mutex_unlock(&pp->mtx);
    return n;
}
