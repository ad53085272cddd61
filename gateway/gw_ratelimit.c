#include "gw_ratelimit.h"
#include "gw_ratelimit_impl.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/adapters/libuv.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "cm_clock.h"
#include "cm_id.h"
#include "cm_log.h"

/*
 * KEYS: 1 requests zset, 2 tokens hash (per-second buckets), 3 leases zset, 4 released zset.
 * ARGV: 1 now_ms, 2 rpm, 3 tpm, 4 max_concurrency, 5 tokens, 6 lease id, 7 lease_ttl_ms.
 * Returns {allowed, which (0 none, 1 requests, 2 tokens, 3 concurrency, 4 released),
 *          retry_after_s, remaining_requests, remaining_tokens, reset_requests_ms,
 *          reset_tokens_ms}.
 * reset_*: ms until the oldest request (token bucket) counted in the window leaves it, i.e.
 * until the remaining figure grows again (60000 when the window held nothing); -1 = no limit.
 * Everything is checked before anything is recorded, so a refusal consumes nothing. Every
 * admitted request holds a lease (whatever its limits): the release script finds by it
 * whether this admission ran. A lease id found in the released set means the gateway gave up
 * on this admission (its reply timed out) and already released it: it runs too late and must
 * record nothing, or its lease would never be released.
 */
const char GW_RL_ADMIT_LUA[] =
    "local now=tonumber(ARGV[1]) local rpm=tonumber(ARGV[2]) local tpm=tonumber(ARGV[3])\n"
    "local conc=tonumber(ARGV[4]) local tok=tonumber(ARGV[5]) local ttl=tonumber(ARGV[7])\n"
    "local rem_r=-1 local rem_t=-1 local rs_r=-1 local rs_t=-1\n"
    "redis.call('ZREMRANGEBYSCORE',KEYS[4],'-inf',now)\n"
    "if redis.call('ZSCORE',KEYS[4],ARGV[6]) then return {0,4,1,-1,-1,-1,-1} end\n"
    "if rpm>0 then\n"
    "  redis.call('ZREMRANGEBYSCORE',KEYS[1],'-inf',now-60000)\n"
    "  local n=redis.call('ZCARD',KEYS[1])\n"
    "  rs_r=60000\n"
    "  if n>0 then\n"
    "    local o=redis.call('ZRANGE',KEYS[1],0,0,'WITHSCORES')\n"
    "    rs_r=tonumber(o[2])+60000-now if rs_r<1 then rs_r=1 end\n"
    "  end\n"
    "  if n>=rpm then\n"
    "    local ra=math.ceil(rs_r/1000)\n"
    "    if ra<1 then ra=1 end\n"
    "    return {0,1,ra,0,-1,rs_r,-1}\n"
    "  end\n"
    "  rem_r=rpm-n-1\n"
    "end\n"
    "local sec=math.floor(now/1000)\n"
    "if tpm>0 then\n"
    "  local h=redis.call('HGETALL',KEYS[2]) local used=0 local oldest=sec\n"
    "  for i=1,#h,2 do local s=tonumber(h[i])\n"
    "    if s<=sec-60 then redis.call('HDEL',KEYS[2],h[i])\n"
    "    else used=used+tonumber(h[i+1]) if s<oldest then oldest=s end end\n"
    "  end\n"
    "  rs_t=(oldest+60)*1000-now if rs_t<1 then rs_t=1 end\n"
    "  if used+tok>tpm and used>0 then\n"
    "    local ra=oldest+61-sec if ra<1 then ra=1 end\n"
    "    return {0,2,ra,rem_r,tpm-used,rs_r,rs_t}\n"
    "  end\n"
    "  rem_t=tpm-used-tok\n"
    "end\n"
    "redis.call('ZREMRANGEBYSCORE',KEYS[3],'-inf',now)\n"
    "if conc>0 and redis.call('ZCARD',KEYS[3])>=conc then return {0,3,1,rem_r,rem_t,rs_r,rs_t} "
    "end\n"
    "redis.call('ZADD',KEYS[3],now+ttl,ARGV[6]) redis.call('PEXPIRE',KEYS[3],ttl)\n"
    "if rpm>0 then redis.call('ZADD',KEYS[1],now,ARGV[6]) redis.call('PEXPIRE',KEYS[1],61000) end\n"
    "if tpm>0 then redis.call('HINCRBY',KEYS[2],sec,tok) redis.call('PEXPIRE',KEYS[2],62000) end\n"
    "return {1,0,0,rem_r,rem_t,rs_r,rs_t}\n";

/*
 * KEYS: 1 tokens hash, 2 leases zset, 3 requests zset, 4 released zset.
 * ARGV: 1 now_ms, 2 token correction, 3 lease id, 4 refund (1: remove the request from the
 * RPM window), 5 tombstone_ms.
 * A lease that is held is removed and its request reconciled; one that is not (its admission
 * has not run yet, was refused, or expired) leaves a tombstone for tombstone_ms, so an
 * admission arriving after its release records nothing. Returns 1 when a lease was held.
 */
const char GW_RL_RELEASE_LUA[] =
    "local now=tonumber(ARGV[1])\n"
    "if redis.call('ZREM',KEYS[2],ARGV[3])==1 then\n"
    "  if ARGV[4]=='1' then redis.call('ZREM',KEYS[3],ARGV[3]) end\n"
    "  local c=tonumber(ARGV[2])\n"
    "  if c~=0 and redis.call('EXISTS',KEYS[1])==1 then\n"
    "    redis.call('HINCRBY',KEYS[1],math.floor(now/1000),c)\n"
    "  end\n"
    "  return 1\n"
    "end\n"
    "local tomb=tonumber(ARGV[5])\n"
    "redis.call('ZADD',KEYS[4],now+tomb,ARGV[3]) redis.call('PEXPIRE',KEYS[4],tomb)\n"
    "return 0\n";

/* A released lease id stays in the released set this long: an admission script still queued
 * in a stalled Redis (or on a dropped connection) that runs within it records nothing. */
#define TOMBSTONE_MS 60000
#define LEASE_ID_MAX (CM_ID_EXTERNAL_MAX + 32)

/* What the gateway knows of an admission's effect in Redis. */
typedef enum lease_state {
    LEASE_UNKNOWN, /* sent, no reply yet (possibly timed out): it may still run */
    LEASE_HELD,    /* admitted: a lease is recorded */
    LEASE_NONE,    /* refused by the script, or never sent: nothing recorded */
} lease_state;

struct gw_ratelimit {
    uv_loop_t *loop;
    const gw_config *cfg;
    gw_metrics *metrics;
    _Atomic int *redis_ok;
    char host[256];
    int port;
    redisAsyncContext *ac;
    int connected;
    uv_timer_t connect_timer; /* connect timeout, then reconnect backoff */
    uv_timer_t renew_timer;   /* lease heartbeat */
    uint32_t backoff_ms;
    char admit_sha[41];
    int64_t last_error_log_ms;
    int destroyed;
    char nonce[17];      /* random hex per instance: lease ids are unique across gateways */
    int n_closed;        /* timers closed after destroy */
    uint32_t n_leases;   /* admissions made, for lease ids */
    gw_rl_lease *active; /* leases not released yet that may be held (renewed) */
};

/* One admission: lives until the caller released it, Redis replied (or never will) and the
 * timer is closed. */
struct gw_rl_lease {
    gw_ratelimit *rl;
    gw_rl_cb cb;
    void *arg;
    uv_timer_t timer;
    int answered; /* cb called */
    int replied;  /* hiredis callback ran (or never will) */
    int closed;   /* timer closed */
    int released; /* gw_ratelimit_release called */
    lease_state state;
    gw_rl_lease *prev, *next; /* in rl->active while not released and not LEASE_NONE */
    int in_active;
    gw_tenant tenant;
    char id[LEASE_ID_MAX];
    uint32_t tokens;
    int retried_eval;
};

static void schedule_reconnect(gw_ratelimit *rl);
static void on_renew_timer(uv_timer_t *t);

static void note_error(gw_ratelimit *rl, const char *what) {
    int64_t now = cm_clock_mono_ms();
    cm_series_inc(rl->metrics->redis_errors);
    /* One line per 5 s per thread at most: a dead Redis must not flood the log. */
    if (now - rl->last_error_log_ms >= 5000) {
        rl->last_error_log_ms = now;
        cm_log(CM_LOG_WARN, NULL, "redis problem", "what", what, "host", rl->host, "fail_open",
               rl->cfg->ratelimit_fail_open ? "true" : "false", NULL);
    }
}

static void set_up(gw_ratelimit *rl, int up) {
    rl->connected = up;
    atomic_store(rl->redis_ok, up);
}

static void on_script_loaded(redisAsyncContext *ac, void *r, void *priv) {
    gw_ratelimit *rl = priv;
    redisReply *reply = r;
    (void)ac;
    if (reply != NULL && reply->type == REDIS_REPLY_STRING && reply->len == 40)
        memcpy(rl->admit_sha, reply->str, 41);
}

static void on_connect(const redisAsyncContext *ac, int status) {
    gw_ratelimit *rl = ac->data;
    if (rl->ac != ac)
        return;
    uv_timer_stop(&rl->connect_timer);
    if (status != REDIS_OK) {
        note_error(rl, "connect failed");
        rl->ac = NULL; /* hiredis frees it after this callback */
        set_up(rl, 0);
        schedule_reconnect(rl);
        return;
    }
    if (!rl->connected)
        cm_log(CM_LOG_INFO, NULL, "redis connected", "host", rl->host, NULL);
    set_up(rl, 1);
    rl->backoff_ms = 100;
    redisAsyncCommand(rl->ac, on_script_loaded, rl, "SCRIPT LOAD %s", GW_RL_ADMIT_LUA);
}

static void on_disconnect(const redisAsyncContext *ac, int status) {
    gw_ratelimit *rl = ac->data;
    (void)status;
    if (rl->ac != ac)
        return;
    rl->ac = NULL;
    set_up(rl, 0);
    if (!rl->destroyed) {
        note_error(rl, "disconnected");
        schedule_reconnect(rl);
    }
}

static void do_connect(gw_ratelimit *rl);

static void on_connect_timer(uv_timer_t *t) {
    gw_ratelimit *rl = t->data;
    if (rl->destroyed)
        return;
    if (rl->ac != NULL && !rl->connected) {
        /* hiredis 0.14's libuv adapter never reports a refused or hung connect: give up on
         * this attempt ourselves. Freeing an unconnected context calls no disconnect hook. */
        redisAsyncContext *ac = rl->ac;
        rl->ac = NULL;
        redisAsyncFree(ac);
        note_error(rl, "connect timeout");
        schedule_reconnect(rl);
        return;
    }
    if (rl->ac == NULL)
        do_connect(rl);
}

static void schedule_reconnect(gw_ratelimit *rl) {
    if (rl->destroyed)
        return;
    uv_timer_start(&rl->connect_timer, on_connect_timer, rl->backoff_ms, 0);
    rl->backoff_ms = rl->backoff_ms * 2 > 5000 ? 5000 : rl->backoff_ms * 2;
}

static void do_connect(gw_ratelimit *rl) {
    redisAsyncContext *ac = redisAsyncConnect(rl->host, rl->port);
    if (ac == NULL || ac->err) {
        if (ac != NULL)
            redisAsyncFree(ac);
        note_error(rl, "connect failed");
        schedule_reconnect(rl);
        return;
    }
    ac->data = rl;
    rl->ac = ac;
    redisLibuvAttach(ac, rl->loop);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    uv_timer_start(&rl->connect_timer, on_connect_timer, rl->cfg->redis_timeout_ms * 5, 0);
}

static int parse_url(const char *url, char *host, size_t cap, int *port) {
    const char *p = url, *colon;
    size_t hl;
    if (strncmp(p, "redis://", 8) == 0)
        p += 8;
    colon = strrchr(p, ':');
    *port = 6379;
    hl = colon ? (size_t)(colon - p) : strlen(p);
    if (hl == 0 || hl >= cap)
        return -1;
    memcpy(host, p, hl);
    host[hl] = '\0';
    if (colon != NULL) {
        char *end;
        long v = strtol(colon + 1, &end, 10);
        if ((*end != '\0' && *end != '/') || v <= 0 || v > 65535)
            return -1;
        *port = (int)v;
    }
    return 0;
}

cm_err gw_ratelimit_create(uv_loop_t *loop, const gw_config *cfg, gw_metrics *metrics,
                           _Atomic int *redis_ok, gw_ratelimit **out) {
    gw_ratelimit *rl = calloc(1, sizeof *rl);
    if (rl == NULL)
        return CM_ERR_NOMEM;
    if (parse_url(cfg->redis_url, rl->host, sizeof rl->host, &rl->port) != 0) {
        free(rl);
        return CM_ERR_CONFIG;
    }
    rl->loop = loop;
    rl->cfg = cfg;
    rl->metrics = metrics;
    rl->redis_ok = redis_ok;
    rl->backoff_ms = 100;
    if (cm_id_random_hex(8, rl->nonce, sizeof rl->nonce) != CM_OK) {
        free(rl);
        return CM_ERR_IO;
    }
    uv_timer_init(loop, &rl->connect_timer);
    rl->connect_timer.data = rl;
    uv_timer_init(loop, &rl->renew_timer);
    rl->renew_timer.data = rl;
    /* Three renewals per TTL: a lease survives two lost heartbeats (a Redis stall). */
    uv_timer_start(&rl->renew_timer, on_renew_timer, cfg->lease_ttl_ms / 3, cfg->lease_ttl_ms / 3);
    do_connect(rl);
    *out = rl;
    return CM_OK;
}

static void on_rl_timer_closed(uv_handle_t *h) {
    gw_ratelimit *rl = h->data;
    if (++rl->n_closed == 2)
        free(rl);
}

void gw_ratelimit_destroy(gw_ratelimit *rl) {
    rl->destroyed = 1;
    if (rl->ac != NULL) {
        redisAsyncContext *ac = rl->ac;
        rl->ac = NULL;
        redisAsyncFree(ac); /* pending callbacks run with NULL replies */
    }
    /* rl is freed once both timers are closed, i.e. only when the loop runs again; at
     * process exit it is simply left. */
    uv_close((uv_handle_t *)&rl->connect_timer, on_rl_timer_closed);
    uv_close((uv_handle_t *)&rl->renew_timer, on_rl_timer_closed);
}

int gw_ratelimit_connected(const gw_ratelimit *rl) {
    return rl->connected;
}

static void fail_verdict(gw_ratelimit *rl, gw_rl_verdict *v) {
    memset(v, 0, sizeof *v);
    v->allowed = rl->cfg->ratelimit_fail_open;
    v->redis_failed = 1;
    v->limit = "redis";
    v->retry_after_s = 1;
    v->limit_requests = v->remaining_requests = v->limit_tokens = v->remaining_tokens = -1;
    v->reset_requests_ms = v->reset_tokens_ms = -1;
}

static void active_unlink(gw_rl_lease *p) {
    gw_ratelimit *rl = p->rl;
    if (!p->in_active)
        return;
    if (p->prev != NULL)
        p->prev->next = p->next;
    else
        rl->active = p->next;
    if (p->next != NULL)
        p->next->prev = p->prev;
    p->prev = p->next = NULL;
    p->in_active = 0;
}

static void pend_maybe_free(gw_rl_lease *p) {
    if (p->closed && p->replied && p->released)
        free(p);
}

static void on_pend_closed(uv_handle_t *h) {
    gw_rl_lease *p = h->data;
    p->closed = 1;
    pend_maybe_free(p);
}

static void pend_answer(gw_rl_lease *p, const gw_rl_verdict *v) {
    if (p->answered)
        return;
    p->answered = 1;
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, on_pend_closed);
    p->cb(p->arg, v);
}

static void on_pend_timeout(uv_timer_t *t) {
    gw_rl_lease *p = t->data;
    gw_rl_verdict v;
    note_error(p->rl, "command timeout");
    fail_verdict(p->rl, &v);
    pend_answer(p, &v);
}

static void send_admit(gw_rl_lease *p, int use_eval);

#define N_KEYS 4
static void tenant_keys(const gw_tenant *t, char k[N_KEYS][128]) {
    /* {tenant} hash tag: all keys on one cluster slot for the scripts. */
    snprintf(k[0], 128, "sluice:rl:{%s}:requests", t->name);
    snprintf(k[1], 128, "sluice:rl:{%s}:tokens", t->name);
    snprintf(k[2], 128, "sluice:rl:{%s}:leases", t->name);
    snprintf(k[3], 128, "sluice:rl:{%s}:released", t->name);
}

static void on_admit_reply(redisAsyncContext *ac, void *r, void *priv) {
    gw_rl_lease *p = priv;
    redisReply *reply = r;
    gw_rl_verdict v;
    (void)ac;
    if (reply != NULL && reply->type == REDIS_REPLY_ERROR &&
        strncmp(reply->str, "NOSCRIPT", 8) == 0 && !p->retried_eval && p->rl->ac != NULL &&
        !p->rl->destroyed) {
        /* The script cache was flushed (or Redis restarted): send the body once, which
         * loads it again, and refresh the SHA for the next requests. Sent even when the
         * caller already gave up on the reply: its release is queued behind it. */
        p->retried_eval = 1;
        p->rl->admit_sha[0] = '\0';
        redisAsyncCommand(p->rl->ac, on_script_loaded, p->rl, "SCRIPT LOAD %s", GW_RL_ADMIT_LUA);
        send_admit(p, 1);
        return;
    }
    if (reply != NULL && reply->type == REDIS_REPLY_ARRAY && reply->elements == 7) {
        static const char *const names[] = {"none", "requests", "tokens", "concurrency",
                                            "released"};
        long long which = reply->element[1]->integer;
        memset(&v, 0, sizeof v);
        v.allowed = reply->element[0]->integer == 1;
        v.limit = names[which >= 0 && which <= 4 ? which : 0];
        v.retry_after_s = (int)reply->element[2]->integer;
        v.limit_requests = p->tenant.rpm ? (int64_t)p->tenant.rpm : -1;
        v.remaining_requests = reply->element[3]->integer;
        v.limit_tokens = p->tenant.tpm ? (int64_t)p->tenant.tpm : -1;
        v.remaining_tokens = reply->element[4]->integer;
        v.reset_requests_ms = v.limit_requests >= 0 ? reply->element[5]->integer : -1;
        v.reset_tokens_ms = v.limit_tokens >= 0 ? reply->element[6]->integer : -1;
        p->state = v.allowed ? LEASE_HELD : LEASE_NONE;
        if (!v.allowed)
            active_unlink(p);
        pend_answer(p, &v);
    } else {
        /* No verdict (connection lost, error reply): whether the script ran is unknown;
         * the state stays LEASE_UNKNOWN, so the release removes a lease it may have made. */
        if (!p->answered) {
            note_error(p->rl, reply == NULL ? "connection lost" : "bad reply");
            if (reply != NULL && reply->type == REDIS_REPLY_ERROR)
                cm_log(CM_LOG_WARN, NULL, "redis error reply", "error", reply->str, NULL);
        }
        fail_verdict(p->rl, &v);
        pend_answer(p, &v);
    }
    p->replied = 1;
    pend_maybe_free(p);
}

static void send_admit(gw_rl_lease *p, int use_eval) {
    gw_ratelimit *rl = p->rl;
    char keys[N_KEYS][128];
    char now[24], rpm[16], tpm[16], conc[16], tok[16], ttl[16];
    const char *argv[16];
    size_t n = 0;
    tenant_keys(&p->tenant, keys);
    snprintf(now, sizeof now, "%lld", (long long)cm_clock_unix_ms());
    snprintf(rpm, sizeof rpm, "%u", p->tenant.rpm);
    snprintf(tpm, sizeof tpm, "%u", p->tenant.tpm);
    snprintf(conc, sizeof conc, "%u", p->tenant.max_concurrency);
    snprintf(tok, sizeof tok, "%u", p->tokens);
    snprintf(ttl, sizeof ttl, "%u", rl->cfg->lease_ttl_ms);
    argv[n++] = use_eval ? "EVAL" : "EVALSHA";
    argv[n++] = use_eval ? GW_RL_ADMIT_LUA : rl->admit_sha;
    argv[n++] = "4";
    for (int k = 0; k < N_KEYS; k++)
        argv[n++] = keys[k];
    argv[n++] = now;
    argv[n++] = rpm;
    argv[n++] = tpm;
    argv[n++] = conc;
    argv[n++] = tok;
    argv[n++] = p->id;
    argv[n++] = ttl;
    if (redisAsyncCommandArgv(rl->ac, on_admit_reply, p, (int)n, argv, NULL) != REDIS_OK) {
        gw_rl_verdict v;
        note_error(rl, "command failed");
        fail_verdict(rl, &v);
        p->replied = 1;
        p->state = LEASE_NONE; /* never sent: nothing to release */
        active_unlink(p);
        pend_answer(p, &v);
    }
}

void gw_ratelimit_admit(gw_ratelimit *rl, const gw_tenant *t, uint32_t tokens,
                        const char *request_id, gw_rl_cb cb, void *arg, gw_rl_lease **lease) {
    gw_rl_lease *p;
    gw_rl_verdict v;
    *lease = NULL;
    if (rl->ac == NULL || !rl->connected || (p = calloc(1, sizeof *p)) == NULL) {
        fail_verdict(rl, &v);
        cb(arg, &v);
        return;
    }
    p->rl = rl;
    p->cb = cb;
    p->arg = arg;
    p->tenant = *t;
    p->tokens = tokens;
    p->state = LEASE_UNKNOWN;
    /* The request id may come from the client (x-request-id) and repeat: the lease id adds
     * this instance's nonce and a counter, so two requests never share a lease. */
    snprintf(p->id, sizeof p->id, "%.*s/%s%08x", CM_ID_EXTERNAL_MAX, request_id, rl->nonce,
             ++rl->n_leases);
    p->next = rl->active;
    if (rl->active != NULL)
        rl->active->prev = p;
    rl->active = p;
    p->in_active = 1;
    uv_timer_init(rl->loop, &p->timer);
    p->timer.data = p;
    uv_timer_start(&p->timer, on_pend_timeout, rl->cfg->redis_timeout_ms, 0);
    *lease = p; /* before the send: the callback may run within it */
    send_admit(p, rl->admit_sha[0] == '\0');
}

static void on_release_reply(redisAsyncContext *ac, void *r, void *priv) {
    redisReply *reply = r;
    gw_ratelimit *rl = priv;
    (void)ac;
    if (reply == NULL || reply->type == REDIS_REPLY_ERROR)
        cm_series_inc(rl->metrics->redis_errors);
}

void gw_ratelimit_release(gw_ratelimit *rl, gw_rl_lease *p, int64_t token_correction, int refund) {
    char keys[N_KEYS][128];
    char now[24], corr[24], tomb[16];
    const char *argv[11];
    if (p->released) /* a caller bug; never free twice */
        return;
    p->released = 1;
    active_unlink(p);
    /* Sent also when the admission's reply never came: on this connection the release runs
     * after the admission (if it runs at all), and the tombstone covers any other order. */
    if (p->state != LEASE_NONE && rl->ac != NULL && rl->connected && !rl->destroyed) {
        tenant_keys(&p->tenant, keys);
        snprintf(now, sizeof now, "%lld", (long long)cm_clock_unix_ms());
        snprintf(corr, sizeof corr, "%lld", (long long)(p->tenant.tpm ? token_correction : 0));
        snprintf(tomb, sizeof tomb, "%d", TOMBSTONE_MS);
        argv[0] = "EVAL";
        argv[1] = GW_RL_RELEASE_LUA;
        argv[2] = "4";
        argv[3] = keys[1];
        argv[4] = keys[2];
        argv[5] = keys[0];
        argv[6] = keys[3];
        argv[7] = now;
        argv[8] = corr;
        argv[9] = p->id;
        argv[10] = refund ? "1" : "0";
        if (redisAsyncCommandArgv(rl->ac, on_release_reply, rl, 11, argv, NULL) != REDIS_OK)
            cm_series_inc(rl->metrics->redis_errors);
    }
    /* Otherwise the lease (if any) expires by itself within lease_ttl_ms: it is not renewed
     * any more. */
    pend_maybe_free(p);
}

/* Heartbeat: pushes the expiry of every lease this thread may hold lease_ttl_ms ahead, so a
 * short TTL only ever frees the slots of a gateway that stopped (crash, partition). XX: a
 * lease that is not there (admission not run yet, or swept) is not created. */
static void on_renew_timer(uv_timer_t *t) {
    gw_ratelimit *rl = t->data;
    char keys[N_KEYS][128], score[24], ttl[16];
    int64_t now = cm_clock_unix_ms();
    if (rl->destroyed || rl->ac == NULL || !rl->connected)
        return;
    snprintf(score, sizeof score, "%lld", (long long)(now + rl->cfg->lease_ttl_ms));
    snprintf(ttl, sizeof ttl, "%u", rl->cfg->lease_ttl_ms);
    for (gw_rl_lease *p = rl->active; p != NULL; p = p->next) {
        const char *zadd[] = {"ZADD", keys[2], "XX", score, p->id};
        const char *pexpire[] = {"PEXPIRE", keys[2], ttl};
        tenant_keys(&p->tenant, keys);
        if (redisAsyncCommandArgv(rl->ac, on_release_reply, rl, 5, zadd, NULL) != REDIS_OK ||
            redisAsyncCommandArgv(rl->ac, on_release_reply, rl, 3, pexpire, NULL) != REDIS_OK) {
            cm_series_inc(rl->metrics->redis_errors);
            return;
        }
    }
}

typedef struct keyq {
    gw_ratelimit *rl;
    gw_rl_key_cb cb;
    void *arg;
    uv_timer_t timer;
    uint8_t digest[CM_SHA256_LEN];
    int answered, replied, closed;
} keyq;

static void on_keyq_closed(uv_handle_t *h) {
    keyq *q = h->data;
    q->closed = 1;
    if (q->replied)
        free(q);
}

static void keyq_answer(keyq *q, int found, const gw_tenant *t) {
    if (q->answered)
        return;
    q->answered = 1;
    uv_timer_stop(&q->timer);
    uv_close((uv_handle_t *)&q->timer, on_keyq_closed);
    q->cb(q->arg, found, t);
}

static void on_keyq_timeout(uv_timer_t *t) {
    keyq *q = t->data;
    note_error(q->rl, "api key lookup timeout");
    keyq_answer(q, -1, NULL);
}

static uint32_t field_u32(const redisReply *v) {
    char buf[16];
    unsigned long x;
    if (v->type != REDIS_REPLY_STRING || v->len <= 0 || (size_t)v->len >= sizeof buf)
        return 0;
    memcpy(buf, v->str, (size_t)v->len);
    buf[v->len] = '\0';
    x = strtoul(buf, NULL, 10);
    return x > UINT32_MAX ? UINT32_MAX : (uint32_t)x;
}

static void on_key_reply(redisAsyncContext *ac, void *r, void *priv) {
    keyq *q = priv;
    redisReply *reply = r;
    (void)ac;
    if (!q->answered) {
        if (reply == NULL || reply->type != REDIS_REPLY_ARRAY) {
            note_error(q->rl, "api key lookup failed");
            keyq_answer(q, -1, NULL);
        } else if (reply->elements == 0) {
            keyq_answer(q, 0, NULL);
        } else {
            gw_tenant t;
            memset(&t, 0, sizeof t);
            memcpy(t.digest, q->digest, sizeof t.digest);
            for (size_t i = 0; i + 1 < reply->elements; i += 2) {
                const redisReply *k = reply->element[i], *v = reply->element[i + 1];
                if (k->type != REDIS_REPLY_STRING)
                    continue;
                if (strcmp(k->str, "tenant") == 0 && v->type == REDIS_REPLY_STRING && v->len > 0 &&
                    (size_t)v->len < sizeof t.name)
                    memcpy(t.name, v->str, (size_t)v->len);
                else if (strcmp(k->str, "rpm") == 0)
                    t.rpm = field_u32(v);
                else if (strcmp(k->str, "tpm") == 0)
                    t.tpm = field_u32(v);
                else if (strcmp(k->str, "max_concurrency") == 0)
                    t.max_concurrency = field_u32(v);
            }
            /* A key without a tenant name is not usable: treat it as unknown. */
            keyq_answer(q, t.name[0] != '\0', t.name[0] != '\0' ? &t : NULL);
        }
    }
    q->replied = 1;
    if (q->closed)
        free(q);
}

void gw_ratelimit_lookup_key(gw_ratelimit *rl, const uint8_t digest[CM_SHA256_LEN], gw_rl_key_cb cb,
                             void *arg) {
    char hex[CM_SHA256_HEX_LEN + 1], key[96];
    keyq *q;
    if (rl->ac == NULL || !rl->connected || (q = calloc(1, sizeof *q)) == NULL) {
        cb(arg, -1, NULL);
        return;
    }
    q->rl = rl;
    q->cb = cb;
    q->arg = arg;
    memcpy(q->digest, digest, CM_SHA256_LEN);
    cm_sha256_hex(digest, hex);
    snprintf(key, sizeof key, "sluice:apikey:%s", hex);
    uv_timer_init(rl->loop, &q->timer);
    q->timer.data = q;
    uv_timer_start(&q->timer, on_keyq_timeout, rl->cfg->redis_timeout_ms, 0);
    if (redisAsyncCommand(rl->ac, on_key_reply, q, "HGETALL %s", key) != REDIS_OK) {
        q->replied = 1;
        keyq_answer(q, -1, NULL);
    }
}

void gw_ratelimit_refusal(const gw_rl_verdict *v, const char *tenant, gw_error *e) {
    if (v->redis_failed) {
        gw_error_set(e, 503, GW_ERRT_UNAVAILABLE, "ratelimit_unavailable", NULL,
                     "rate limiting is unavailable; retry later");
        e->retry_after_s = 1;
        return;
    }
    if (strcmp(v->limit, "concurrency") == 0)
        gw_error_set(e, 429, GW_ERRT_RATE, "rate_limit_exceeded", NULL,
                     "Too many concurrent requests for tenant '%s'; retry after %d s", tenant,
                     v->retry_after_s);
    else
        gw_error_set(e, 429, GW_ERRT_RATE, "rate_limit_exceeded", NULL,
                     "Rate limit reached for %s per minute on tenant '%s'; retry after %d s",
                     v->limit, tenant, v->retry_after_s);
    e->retry_after_s = v->retry_after_s > 0 ? v->retry_after_s : 1;
}
