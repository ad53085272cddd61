/*
 * Waiting queue layout, per priority class:
 *   resume:  preempted sequences, oldest first (they already streamed tokens; finish them);
 *   tenants: the tenants with waiting sequences, each a FIFO, in order of first arrival.
 * Fairness across tenants: each tenant queue carries the admission stamp of its last served
 * sequence (0 when it appeared); the tenant with the smallest stamp goes next, ties to the
 * earliest tenant. A flooding tenant's stamp keeps rising, so a tenant that just arrived with
 * one request is served at the next free slot; tenants with steady backlogs alternate.
 * Tenant queues come from a pool of max_waiting + 1 entries, enough since every tenant queue
 * holds at least one new sequence and at most max_waiting of those wait.
 */
#include "scheduler.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prefix_cache.h"

#define N_CLASSES 2

typedef struct wk_tenant_q {
    char name[64];
    wk_seq *head, *tail;
    struct wk_tenant_q *t_next, *t_prev; /* in the class list, or free-pool link */
    uint64_t served;                     /* stamp of the last admission, 0 = none yet */
} wk_tenant_q;

typedef struct sched_class {
    wk_seq *resume_head, *resume_tail;
    wk_tenant_q *t_head, *t_tail; /* tenants with waiting sequences, by first arrival */
} sched_class;

struct wk_sched {
    wk_sched_config cfg;
    wk_kv_cache *kv;
    uint64_t next_order;
    uint64_t serve_stamp;

    sched_class classes[N_CLASSES];
    wk_tenant_q *tenant_pool; /* (max_waiting + 1) */
    wk_tenant_q *tenant_free;
    uint32_t n_waiting_new;
    uint32_t n_waiting_resume;

    wk_seq **running; /* (max_running) */
    uint32_t n_running;

    wk_sched_entry *entries; /* (max_running) */
    wk_sched_drop *dropped;  /* (max_waiting + max_running) */
    uint32_t cap_dropped;
    wk_sched_plan plan;
    int32_t *match_blocks;  /* (max_blocks_per_seq) */
    uint64_t *match_hashes; /* (max_blocks_per_seq) */

    uint64_t prefix_queries;
    uint64_t prefix_hits;
    uint64_t preemptions;
};

static int class_of(const wk_seq *seq) {
    return seq->priority == WK_PRIORITY_INTERACTIVE ? 0 : 1;
}

static uint32_t ceil_div(uint32_t a, uint32_t b) {
    return (a + b - 1) / b;
}

cm_err wk_sched_create(const wk_sched_config *cfg, wk_kv_cache *kv, wk_sched **out) {
    if (cfg == NULL || kv == NULL || out == NULL || cfg->block_tokens == 0 ||
        cfg->block_tokens != wk_kv_cache_block_tokens(kv) || cfg->max_blocks_per_seq == 0 ||
        cfg->max_batch_tokens == 0 || cfg->max_running == 0 || cfg->max_waiting == 0 ||
        cfg->max_waiting > (1u << 24) || cfg->max_running > (1u << 20))
        return CM_ERR_INVALID;
    wk_sched *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return CM_ERR_NOMEM;
    s->cfg = *cfg;
    s->kv = kv;
    s->cap_dropped = cfg->max_waiting + cfg->max_running;
    s->tenant_pool = calloc((size_t)cfg->max_waiting + 1, sizeof(*s->tenant_pool));
    s->running = calloc(cfg->max_running, sizeof(*s->running));
    s->entries = calloc(cfg->max_running, sizeof(*s->entries));
    s->dropped = calloc(s->cap_dropped, sizeof(*s->dropped));
    s->match_blocks = calloc(cfg->max_blocks_per_seq, sizeof(*s->match_blocks));
    s->match_hashes = calloc(cfg->max_blocks_per_seq, sizeof(*s->match_hashes));
    if (s->tenant_pool == NULL || s->running == NULL || s->entries == NULL || s->dropped == NULL ||
        s->match_blocks == NULL || s->match_hashes == NULL) {
        wk_sched_destroy(s);
        return CM_ERR_NOMEM;
    }
    for (uint32_t i = 0; i <= cfg->max_waiting; i++) {
        s->tenant_pool[i].t_next = s->tenant_free;
        s->tenant_free = &s->tenant_pool[i];
    }
    s->plan.entries = s->entries;
    s->plan.dropped = s->dropped;
    *out = s;
    return CM_OK;
}

void wk_sched_destroy(wk_sched *s) {
    if (s == NULL)
        return;
    free(s->tenant_pool);
    free(s->running);
    free(s->entries);
    free(s->dropped);
    free(s->match_blocks);
    free(s->match_hashes);
    free(s);
}

/* ---- waiting queue ---------------------------------------------------------------------- */

static wk_tenant_q *tenant_find(sched_class *c, const char *name) {
    for (wk_tenant_q *t = c->t_head; t != NULL; t = t->t_next)
        if (strcmp(t->name, name) == 0)
            return t;
    return NULL;
}

static void tenant_unlink(wk_sched *s, sched_class *c, wk_tenant_q *t) {
    if (t->t_prev != NULL)
        t->t_prev->t_next = t->t_next;
    else
        c->t_head = t->t_next;
    if (t->t_next != NULL)
        t->t_next->t_prev = t->t_prev;
    else
        c->t_tail = t->t_prev;
    memset(t, 0, sizeof(*t));
    t->t_next = s->tenant_free;
    s->tenant_free = t;
}

/* tenant_next: the tenant whose turn it is (least recently served, then earliest). */
static wk_tenant_q *tenant_next(const sched_class *c) {
    wk_tenant_q *best = NULL;
    for (wk_tenant_q *t = c->t_head; t != NULL; t = t->t_next)
        if (best == NULL || t->served < best->served)
            best = t;
    return best;
}

/* resume_insert keeps a class's resume list ordered oldest first. */
static void resume_insert(sched_class *c, wk_seq *seq) {
    wk_seq *after = c->resume_tail;
    while (after != NULL && after->order > seq->order)
        after = after->q_prev;
    seq->q_prev = after;
    seq->q_next = after != NULL ? after->q_next : c->resume_head;
    if (seq->q_next != NULL)
        seq->q_next->q_prev = seq;
    else
        c->resume_tail = seq;
    if (after != NULL)
        after->q_next = seq;
    else
        c->resume_head = seq;
    seq->q_tenant = NULL;
}

static cm_err waiting_push_new(wk_sched *s, wk_seq *seq) {
    sched_class *c = &s->classes[class_of(seq)];
    wk_tenant_q *t = tenant_find(c, seq->tenant);
    if (t == NULL) {
        t = s->tenant_free;
        CM_ASSERT(t != NULL);
        s->tenant_free = t->t_next;
        memset(t, 0, sizeof(*t));
        snprintf(t->name, sizeof(t->name), "%s", seq->tenant);
        t->t_prev = c->t_tail;
        if (c->t_tail != NULL)
            c->t_tail->t_next = t;
        else
            c->t_head = t;
        c->t_tail = t;
    }
    seq->q_next = NULL;
    seq->q_prev = t->tail;
    if (t->tail != NULL)
        t->tail->q_next = seq;
    else
        t->head = seq;
    t->tail = seq;
    seq->q_tenant = t;
    s->n_waiting_new++;
    return CM_OK;
}

/* waiting_unlink removes seq from whichever waiting list holds it. */
static void waiting_unlink(wk_sched *s, wk_seq *seq, bool served) {
    sched_class *c = &s->classes[class_of(seq)];
    wk_tenant_q *t = seq->q_tenant;
    if (t == NULL) {
        if (seq->q_prev != NULL)
            seq->q_prev->q_next = seq->q_next;
        else
            c->resume_head = seq->q_next;
        if (seq->q_next != NULL)
            seq->q_next->q_prev = seq->q_prev;
        else
            c->resume_tail = seq->q_prev;
        s->n_waiting_resume--;
    } else {
        if (seq->q_prev != NULL)
            seq->q_prev->q_next = seq->q_next;
        else
            t->head = seq->q_next;
        if (seq->q_next != NULL)
            seq->q_next->q_prev = seq->q_prev;
        else
            t->tail = seq->q_prev;
        s->n_waiting_new--;
        if (served)
            t->served = ++s->serve_stamp;
        if (t->head == NULL)
            tenant_unlink(s, c, t);
    }
    seq->q_next = seq->q_prev = NULL;
    seq->q_tenant = NULL;
}

static wk_seq *waiting_peek(const wk_sched *s) {
    for (int i = 0; i < N_CLASSES; i++) {
        const sched_class *c = &s->classes[i];
        if (c->resume_head != NULL)
            return c->resume_head;
        if (c->t_head != NULL)
            return tenant_next(c)->head;
    }
    return NULL;
}

/* ---- running set ------------------------------------------------------------------------ */

static void release_blocks(wk_sched *s, wk_seq *seq) {
    /* Last to first: under pressure the tail of a cached prefix goes before its head. */
    for (uint32_t i = seq->n_blocks; i > 0; i--)
        wk_kv_cache_release(s->kv, seq->block_table[i - 1]);
    seq->n_blocks = 0;
    seq->n_hashed = 0;
    seq->n_computed = 0;
}

static void running_remove(wk_sched *s, wk_seq *seq) {
    for (uint32_t i = 0; i < s->n_running; i++) {
        if (s->running[i] == seq) {
            memmove(&s->running[i], &s->running[i + 1],
                    (s->n_running - i - 1) * sizeof(*s->running));
            s->n_running--;
            return;
        }
    }
    CM_ASSERT(!"running sequence not in the running set");
}

static int running_cmp(const void *a, const void *b) {
    const wk_seq *x = *(wk_seq *const *)a, *y = *(wk_seq *const *)b;
    if (x->priority != y->priority)
        return x->priority < y->priority ? -1 : 1;
    return x->order < y->order ? -1 : (x->order > y->order ? 1 : 0);
}

static void preempt(wk_sched *s, wk_seq *seq) {
    running_remove(s, seq);
    release_blocks(s, seq);
    seq->n_preempted++;
    seq->state = WK_SEQ_WAITING;
    resume_insert(&s->classes[class_of(seq)], seq);
    s->n_waiting_resume++;
    s->preemptions++;
    s->plan.n_preempted++;
}

static void drop(wk_sched *s, wk_seq *seq, cm_err reason) {
    CM_ASSERT(s->plan.n_dropped < s->cap_dropped);
    s->dropped[s->plan.n_dropped].seq = seq;
    s->dropped[s->plan.n_dropped].reason = reason;
    s->plan.n_dropped++;
    seq->state = WK_SEQ_DONE;
}

/* ---- public ----------------------------------------------------------------------------- */

cm_err wk_sched_add(wk_sched *s, wk_seq *seq) {
    if (seq == NULL || seq->state != WK_SEQ_NEW || seq->tokens == NULL ||
        seq->block_table == NULL || seq->block_hash == NULL || seq->n_tokens == 0 ||
        seq->n_tokens > seq->cap_tokens || seq->n_prompt > seq->n_tokens ||
        memchr(seq->tenant, 0, sizeof(seq->tenant)) == NULL ||
        (seq->priority != WK_PRIORITY_INTERACTIVE && seq->priority != WK_PRIORITY_BATCH))
        return CM_ERR_INVALID;
    uint32_t blocks = ceil_div(seq->n_tokens, s->cfg.block_tokens);
    if (blocks > wk_kv_cache_n_blocks(s->kv) || blocks > s->cfg.max_blocks_per_seq)
        return CM_ERR_LIMIT;
    if (s->n_waiting_new >= s->cfg.max_waiting)
        return CM_ERR_OVERLOADED;
    seq->order = s->next_order++;
    seq->n_computed = 0;
    seq->n_blocks = 0;
    seq->n_hashed = 0;
    seq->n_cached_prompt = 0;
    seq->n_preempted = 0;
    seq->started = false;
    seq->state = WK_SEQ_WAITING;
    return waiting_push_new(s, seq);
}

void wk_sched_remove(wk_sched *s, wk_seq *seq) {
    if (seq->state == WK_SEQ_WAITING) {
        waiting_unlink(s, seq, false);
    } else if (seq->state == WK_SEQ_RUNNING) {
        running_remove(s, seq);
        release_blocks(s, seq);
    } else {
        return;
    }
    seq->state = WK_SEQ_DONE;
}

static void expire_waiting(wk_sched *s, int64_t now_ms) {
    /* Collect first, unlink after: unlinking can drop a tenant from the ring being walked.
     * Preempted sequences (resume lists) already started: a deadline is about waiting to
     * start, so they are not expired. */
    uint32_t first = s->plan.n_dropped;
    for (int i = 0; i < N_CLASSES; i++)
        for (wk_tenant_q *t = s->classes[i].t_head; t != NULL; t = t->t_next)
            for (wk_seq *q = t->head; q != NULL; q = q->q_next)
                if (q->deadline_ms != 0 && now_ms > q->deadline_ms)
                    drop(s, q, CM_ERR_TIMEOUT);
    for (uint32_t k = first; k < s->plan.n_dropped; k++)
        waiting_unlink(s, s->dropped[k].seq, false);
}

static bool grow_blocks(wk_sched *s, wk_seq *seq, uint32_t n_blocks) {
    while (seq->n_blocks < n_blocks) {
        int32_t b;
        if (wk_kv_cache_alloc(s->kv, &b) != CM_OK)
            return false;
        seq->block_table[seq->n_blocks++] = b;
    }
    return true;
}

static void plan_entry(wk_sched *s, wk_seq *seq, uint32_t n) {
    wk_sched_entry *e = &s->entries[s->plan.n_entries++];
    e->seq = seq;
    e->n_new = n;
    e->want_logits = seq->n_computed + n == seq->n_tokens;
    s->plan.n_tokens += n;
}

/* schedule_running plans the running sequences in priority/age order: first every decoding
 * sequence (one token each), then the prefill chunks of sequences still reading their prompt
 * with what is left of the budget but `reserve`, so a long prompt never holds decoders back
 * nor, with the reserve, new requests. When a decoder
 * needs a block and none is left, sequences are preempted from the back of the order (lowest
 * priority, youngest), possibly the decoder itself. Returns the budget left. */
static uint32_t schedule_running(wk_sched *s, uint32_t budget, uint32_t reserve) {
    const uint32_t bt = s->cfg.block_tokens;
    qsort(s->running, s->n_running, sizeof(*s->running), running_cmp);
    /* Pass 1: decoders. Everything already planned sits before index i and the victims are
     * taken from the end, so a planned sequence is never preempted. */
    for (uint32_t i = 0; i < s->n_running && budget > 0;) {
        wk_seq *seq = s->running[i];
        CM_ASSERT(seq->n_tokens > seq->n_computed);
        if (seq->n_tokens - seq->n_computed != 1) {
            i++;
            continue;
        }
        bool gone = false;
        while (!grow_blocks(s, seq, ceil_div(seq->n_computed + 1, bt))) {
            wk_seq *victim = s->running[s->n_running - 1];
            if (victim == seq && s->n_running == 1) {
                /* It alone fills the cache: it can never grow. */
                running_remove(s, seq);
                release_blocks(s, seq);
                drop(s, seq, CM_ERR_LIMIT);
                gone = true;
                break;
            }
            preempt(s, victim);
            if (victim == seq) {
                gone = true;
                break;
            }
        }
        if (gone)
            break; /* seq was the last of the running order */
        plan_entry(s, seq, 1);
        budget--;
        i++;
    }
    /* Pass 2: prefill chunks. Their blocks were all taken at admission. They leave `reserve`
     * tokens to admissions, so a long prompt does not hold new requests back either. */
    for (uint32_t i = 0; i < s->n_running && budget > reserve; i++) {
        wk_seq *seq = s->running[i];
        uint32_t n = seq->n_tokens - seq->n_computed;
        if (n == 1)
            continue;
        if (n > budget - reserve)
            n = budget - reserve;
        if (!grow_blocks(s, seq, ceil_div(seq->n_computed + n, bt)))
            continue; /* cannot happen; never preempt here: planned entries could go */
        plan_entry(s, seq, n);
        budget -= n;
    }
    return budget;
}

static void admit_waiting(wk_sched *s, uint32_t budget) {
    const uint32_t bt = s->cfg.block_tokens;
    const uint32_t pool = wk_kv_cache_n_blocks(s->kv);
    while (budget > 0 && s->n_running < s->cfg.max_running) {
        wk_seq *seq = waiting_peek(s);
        if (seq == NULL)
            break;
        uint32_t total = ceil_div(seq->n_tokens, bt);
        if (total > pool || total > s->cfg.max_blocks_per_seq) {
            if (s->plan.n_dropped == s->cap_dropped)
                break; /* the rest waits for the next plan */
            waiting_unlink(s, seq, true);
            drop(s, seq, CM_ERR_LIMIT);
            continue;
        }
        uint32_t matched = 0, max_match = 0;
        if (s->cfg.prefix_cache) {
            /* Keep the last token out of the match: its logits are needed. */
            max_match = (seq->n_tokens - 1) / bt;
            matched = wk_prefix_match(s->kv, seq->tokens, seq->n_tokens, max_match, s->match_blocks,
                                      s->match_hashes);
        }
        uint32_t need = total - matched;
        uint32_t spare = s->n_running > 0 ? s->cfg.watermark_blocks : 0;
        if (wk_kv_cache_n_available(s->kv) < need + spare) {
            for (uint32_t k = matched; k > 0; k--)
                wk_kv_cache_release(s->kv, s->match_blocks[k - 1]);
            break; /* head of line waits for blocks; nobody skips ahead of it */
        }
        waiting_unlink(s, seq, true);
        s->prefix_queries += max_match;
        s->prefix_hits += matched;
        memcpy(seq->block_table, s->match_blocks, matched * sizeof(*seq->block_table));
        memcpy(seq->block_hash, s->match_hashes, matched * sizeof(*seq->block_hash));
        seq->n_blocks = matched;
        seq->n_hashed = matched;
        seq->n_computed = matched * bt;
        bool grown = grow_blocks(s, seq, total); /* cannot fail: availability checked above */
        CM_ASSERT(grown);
        if (!seq->started) {
            seq->started = true;
            seq->n_cached_prompt =
                seq->n_computed < seq->n_prompt ? seq->n_computed : seq->n_prompt;
        }
        seq->state = WK_SEQ_RUNNING;
        s->running[s->n_running++] = seq;
        s->plan.n_admitted++;

        uint32_t n = seq->n_tokens - seq->n_computed;
        if (n > budget)
            n = budget;
        plan_entry(s, seq, n);
        budget -= n;
    }
}

const wk_sched_plan *wk_sched_plan_step(wk_sched *s, int64_t now_ms) {
    memset(&s->plan, 0, sizeof(s->plan));
    s->plan.entries = s->entries;
    s->plan.dropped = s->dropped;
    expire_waiting(s, now_ms);
    /* A quarter of the budget is kept from prefill chunks while someone could be admitted. */
    bool can_admit = waiting_peek(s) != NULL && s->n_running < s->cfg.max_running;
    uint32_t reserve = can_admit ? s->cfg.max_batch_tokens / 4 : 0;
    uint32_t budget = schedule_running(s, s->cfg.max_batch_tokens, reserve);
    admit_waiting(s, budget);
    return &s->plan;
}

void wk_sched_commit(wk_sched *s) {
    const uint32_t bt = s->cfg.block_tokens;
    for (uint32_t i = 0; i < s->plan.n_entries; i++) {
        wk_seq *seq = s->plan.entries[i].seq;
        if (seq->state != WK_SEQ_RUNNING)
            continue; /* removed between plan and commit (cancelled) */
        seq->n_computed += s->plan.entries[i].n_new;
        CM_ASSERT(seq->n_computed <= seq->n_tokens);
        if (!s->cfg.prefix_cache)
            continue;
        while ((seq->n_hashed + 1) * bt <= seq->n_computed) {
            uint32_t k = seq->n_hashed;
            uint64_t parent = k > 0 ? seq->block_hash[k - 1] : WK_PREFIX_ROOT;
            const int32_t *blk = seq->tokens + (size_t)k * bt;
            uint64_t h = wk_prefix_hash(parent, blk, bt);
            /* A duplicate (another sequence published the same prefix first) is fine: this
             * block stays private and is freed, not cached, when released. */
            (void)wk_kv_cache_publish(s->kv, seq->block_table[k], h, parent, blk);
            seq->block_hash[k] = h;
            seq->n_hashed++;
        }
    }
}

uint32_t wk_sched_n_waiting(const wk_sched *s) {
    return s->n_waiting_new + s->n_waiting_resume;
}

uint32_t wk_sched_n_running(const wk_sched *s) {
    return s->n_running;
}

wk_seq *wk_sched_running_at(const wk_sched *s, uint32_t i) {
    return i < s->n_running ? s->running[i] : NULL;
}

void wk_sched_get_stats(const wk_sched *s, wk_sched_stats *out) {
    out->waiting = wk_sched_n_waiting(s);
    out->running = s->n_running;
    out->prefix_queries = s->prefix_queries;
    out->prefix_hits = s->prefix_hits;
    out->preemptions = s->preemptions;
}
