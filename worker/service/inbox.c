/*
 * wk_inbox: a linked list under a mutex with a condition variable (see inbox.h).
 */
#include "inbox.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

struct wk_inbox {
    pthread_mutex_t mtx;
    pthread_cond_t cond;
    wk_cmd *head;
    wk_cmd *tail;
    uint32_t submits;
    uint32_t controls;
    uint32_t submit_cap;
    uint32_t control_cap;
    bool woken;
};

cm_err wk_inbox_create(uint32_t submit_cap, wk_inbox **out) {
    *out = NULL;
    if (submit_cap == 0)
        return CM_ERR_INVALID;
    wk_inbox *in = calloc(1, sizeof *in);
    if (in == NULL)
        return CM_ERR_NOMEM;
    pthread_mutex_init(&in->mtx, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&in->cond, &ca);
    pthread_condattr_destroy(&ca);
    in->submit_cap = submit_cap;
    in->control_cap = 4 * submit_cap + 1024;
    *out = in;
    return CM_OK;
}

void wk_cmd_free(wk_cmd *c) {
    if (c == NULL)
        return;
    if (c->env != NULL)
        sluice__envelope__free_unpacked(c->env, NULL);
    free(c);
}

void wk_inbox_destroy(wk_inbox *in) {
    if (in == NULL)
        return;
    wk_cmd *c = in->head;
    while (c != NULL) {
        wk_cmd *n = c->next;
        wk_cmd_free(c);
        c = n;
    }
    pthread_cond_destroy(&in->cond);
    pthread_mutex_destroy(&in->mtx);
    free(in);
}

cm_err wk_inbox_push(wk_inbox *in, const wk_cmd *cmd) {
    bool is_submit = cmd->kind == WK_CMD_SUBMIT;
    pthread_mutex_lock(&in->mtx);
    bool full = is_submit ? in->submits >= in->submit_cap : in->controls >= in->control_cap;
    pthread_mutex_unlock(&in->mtx);
    if (full)
        return CM_ERR_OVERLOADED;
    wk_cmd *c = malloc(sizeof *c);
    if (c == NULL)
        return CM_ERR_NOMEM;
    *c = *cmd;
    c->next = NULL;
    pthread_mutex_lock(&in->mtx);
    /* Checked again under the same lock as the insert: another thread may have filled it. */
    full = is_submit ? in->submits >= in->submit_cap : in->controls >= in->control_cap;
    if (!full) {
        if (in->tail != NULL)
            in->tail->next = c;
        else
            in->head = c;
        in->tail = c;
        if (is_submit)
            in->submits++;
        else
            in->controls++;
        pthread_cond_signal(&in->cond);
    }
    pthread_mutex_unlock(&in->mtx);
    if (full) {
        free(c);
        return CM_ERR_OVERLOADED;
    }
    return CM_OK;
}

wk_cmd *wk_inbox_pop_all(wk_inbox *in) {
    pthread_mutex_lock(&in->mtx);
    wk_cmd *list = in->head;
    in->head = in->tail = NULL;
    in->submits = 0;
    in->controls = 0;
    pthread_mutex_unlock(&in->mtx);
    return list;
}

void wk_inbox_wait(wk_inbox *in, int timeout_ms) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    ts.tv_sec += timeout_ms / 1000;
    ts.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&in->mtx);
    while (in->head == NULL && !in->woken) {
        if (pthread_cond_timedwait(&in->cond, &in->mtx, &ts) != 0)
            break;
    }
    in->woken = false;
    pthread_mutex_unlock(&in->mtx);
}

void wk_inbox_wake(wk_inbox *in) {
    pthread_mutex_lock(&in->mtx);
    in->woken = true;
    pthread_cond_signal(&in->cond);
    pthread_mutex_unlock(&in->mtx);
}

uint32_t wk_inbox_submits(wk_inbox *in) {
    pthread_mutex_lock(&in->mtx);
    uint32_t n = in->submits;
    pthread_mutex_unlock(&in->mtx);
    return n;
}
