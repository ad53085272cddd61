/*
 * wk_sched: the engine's scheduling decisions, free of any model or backend so they can be
 * tested alone.
 *
 * One step = one backend forward. wk_sched_plan picks, under a per-step token budget:
 *   1. every running sequence's next tokens, oldest interactive first: first one token for
 *      each decoding sequence, then with what is left of the budget a chunk of the remaining
 *      prompt of each one still prefilling (chunked prefill: a long prompt never holds the
 *      decoders back);
 *   2. then new sequences from the waiting queue while the budget, the running limit and the
 *      KV blocks allow (while anyone could be admitted, prefill chunks of running sequences
 *      leave a quarter of the budget to admissions). Waiting order: priority class first
 * (interactive before batch), inside a class preempted sequences first (oldest first), then the
 * least recently served tenant (one tenant's flood cannot starve another tenant's single request),
 * FIFO per tenant. Admission reuses prefix-cached blocks and allocates the blocks for every known
 * token; it never skips ahead of a head-of-line sequence that does not fit yet. When a running
 * sequence needs a block and none is left, the lowest-priority, youngest running sequence is
 * preempted: its blocks are released, its tokens (prompt and generated) kept, and it goes back to
 * the front of its class to be recomputed later.
 *
 * A waiting sequence that never started and whose deadline passed is dropped with
 * CM_ERR_TIMEOUT; one that can never fit in the whole cache is dropped with CM_ERR_LIMIT.
 * Dropped sequences are handed back in the plan, already out of every queue.
 *
 * wk_sched_commit records the step's results (computed tokens, newly full blocks published to
 * the prefix cache). The caller then appends sampled tokens to seq->tokens and removes
 * finished sequences with wk_sched_remove.
 *
 * Memory: everything is sized at create; nothing is allocated per step. Not thread-safe.
 */
#ifndef WK_SCHEDULER_H
#define WK_SCHEDULER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm_err.h"
#include "kv_cache.h"
#include "priority.h"

typedef enum wk_seq_state {
    WK_SEQ_NEW = 0,     /* not handed to the scheduler yet */
    WK_SEQ_WAITING = 1, /* in the waiting queue */
    WK_SEQ_RUNNING = 2, /* holds KV blocks, scheduled every step */
    WK_SEQ_DONE = 3,    /* removed or dropped; holds nothing */
} wk_seq_state;

struct wk_tenant_q;

/*
 * A sequence as the scheduler sees it. The caller owns the struct and its arrays (embed it
 * first in a larger struct as `super`) and fills the fields marked (in) before wk_sched_add;
 * the scheduler owns the rest while the sequence is WAITING or RUNNING.
 */
typedef struct wk_seq {
    uint64_t id;          /* (in) */
    char tenant[64];      /* (in) NUL-terminated fairness key */
    wk_priority priority; /* (in) */
    int64_t deadline_ms;  /* (in) monotonic ms; 0 = none */
    int32_t *tokens;      /* (in) (cap_tokens) prompt then generated ids */
    uint32_t cap_tokens;  /* (in) */
    uint32_t n_prompt;    /* (in) */
    uint32_t n_tokens;    /* (in) known tokens; the caller appends sampled ones */
    int32_t *block_table; /* (in) (max_blocks_per_seq) */
    uint64_t *block_hash; /* (in) (max_blocks_per_seq) chain hash of each full block */

    uint64_t order;           /* arrival order given by wk_sched_add: smaller is older */
    uint32_t n_computed;      /* leading tokens whose KV is in the cache */
    uint32_t n_blocks;        /* entries of block_table in use */
    uint32_t n_hashed;        /* leading full blocks whose chain hash is in block_hash */
    uint32_t n_cached_prompt; /* prompt tokens found in the prefix cache at first admission */
    uint32_t n_preempted;     /* times preempted */
    bool started;             /* admitted at least once */
    wk_seq_state state;

    /* queue links, private to the scheduler */
    struct wk_seq *q_next, *q_prev;
    struct wk_tenant_q *q_tenant; /* NULL when on a resume list */
} wk_seq;

typedef struct wk_sched_config {
    uint32_t block_tokens;       /* must equal the pool's */
    uint32_t max_blocks_per_seq; /* block_table capacity of every sequence */
    uint32_t max_batch_tokens;   /* per-step token budget, >= 1 */
    uint32_t max_running;        /* sequences in one step, >= 1 */
    uint32_t max_waiting;        /* new sequences waiting, >= 1 (resumes are not counted) */
    bool prefix_cache;           /* reuse and publish full blocks */
    uint32_t watermark_blocks;   /* admission keeps this many blocks spare for decode */
} wk_sched_config;

typedef struct wk_sched_entry {
    wk_seq *seq;
    uint32_t n_new;   /* tokens seq->tokens[n_computed .. n_computed + n_new) this step */
    bool want_logits; /* the chunk ends at the last known token: sample after it */
} wk_sched_entry;

typedef struct wk_sched_drop {
    wk_seq *seq;
    cm_err reason; /* CM_ERR_TIMEOUT or CM_ERR_LIMIT */
} wk_sched_drop;

/* A step's plan; arrays owned by the scheduler, valid until the next plan. */
typedef struct wk_sched_plan {
    wk_sched_entry *entries; /* (n_entries) decoders, prefill chunks, then admissions */
    uint32_t n_entries;
    uint32_t n_tokens;      /* sum of n_new */
    wk_sched_drop *dropped; /* (n_dropped) */
    uint32_t n_dropped;
    uint32_t n_preempted; /* preemptions decided in this plan */
    uint32_t n_admitted;  /* sequences admitted in this plan */
} wk_sched_plan;

typedef struct wk_sched_stats {
    uint32_t waiting;
    uint32_t running;
    uint64_t prefix_queries; /* prompt blocks looked up at admission */
    uint64_t prefix_hits;    /* of which found */
    uint64_t preemptions;
} wk_sched_stats;

typedef struct wk_sched wk_sched;

/* wk_sched_create makes a scheduler over kv (borrowed, must outlive it). CM_ERR_INVALID for
 * a zero bound or a block size that differs from the pool's; CM_ERR_NOMEM. */
cm_err wk_sched_create(const wk_sched_config *cfg, wk_kv_cache *kv, wk_sched **out);

/* wk_sched_destroy frees the scheduler; sequences still queued are forgotten, not released:
 * remove them first if the pool lives on. NULL is fine. */
void wk_sched_destroy(wk_sched *s);

/* wk_sched_add queues a NEW sequence as WAITING. CM_ERR_OVERLOADED when max_waiting new
 * sequences already wait; CM_ERR_LIMIT when its known tokens need more blocks than the whole
 * pool or its block table holds; CM_ERR_INVALID for a malformed sequence. On error the
 * sequence is untouched and not queued. */
cm_err wk_sched_add(wk_sched *s, wk_seq *seq);

/* wk_sched_remove takes a WAITING or RUNNING sequence out (finish, cancel), releasing its
 * blocks now; it becomes DONE. No-op for NEW or DONE sequences. */
void wk_sched_remove(wk_sched *s, wk_seq *seq);

/* wk_sched_plan_step decides the next step (see the overview). now_ms is the monotonic time used
 * for deadlines. The plan may be empty (nothing to do, or everything waits for blocks). */
const wk_sched_plan *wk_sched_plan_step(wk_sched *s, int64_t now_ms);

/* wk_sched_commit records that the last plan's forward ran: n_computed advances for every
 * entry and newly full blocks are published to the prefix cache. Call once per plan, before
 * appending sampled tokens. */
void wk_sched_commit(wk_sched *s);

uint32_t wk_sched_n_waiting(const wk_sched *s); /* new + preempted sequences waiting */
uint32_t wk_sched_n_running(const wk_sched *s);
void wk_sched_get_stats(const wk_sched *s, wk_sched_stats *out);

/* wk_sched_running_at returns running sequence i (< n_running), in no particular order. */
wk_seq *wk_sched_running_at(const wk_sched *s, uint32_t i);

#endif /* WK_SCHEDULER_H */
