/*
 * gw_alias: public model names that stand for one or more served names, with weights (a
 * canary: "chat-default" -> smollm2-135m 90, smollm2-135m-canary 10).
 *
 * Configuration (gw_alias_cfg, from YAML `aliases:` or `--alias NAME=T1:W1,T2:W2`) is checked
 * once with gw_alias_check; the runtime table (gw_alias_table) is built from it before the
 * loop threads start and never changes afterwards, except each alias's picker state.
 *
 * Targets are routing names of the pool (the registry's model name of a discovered worker, or
 * the MODEL of a static --worker MODEL=ADDR); they are never resolved through another alias,
 * so an alias may carry the name of one of its own targets (a canary behind an unchanged
 * public name) and there are no cycles.
 *
 * Picking is smooth weighted round robin (as nginx's upstreams): deterministic, and over any
 * run of W consecutive picks (W = the sum of weights) each target is picked exactly its weight
 * times, interleaved (90/10 gives one canary request in every ten). A target with weight 0
 * takes no share but is still a fallback (a standby). gw_alias_order returns the picked target
 * first, then the others by weight (largest first, then configuration order): routing tries
 * them in that order until one has a usable worker.
 */
#ifndef GW_ALIAS_H
#define GW_ALIAS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "cm_err.h"

#define GW_ALIAS_MAX 64              /* aliases in one gateway */
#define GW_ALIAS_MAX_TARGETS 8       /* served names behind one alias */
#define GW_ALIAS_MAX_WEIGHT 1000     /* weights are 0..1000 */
#define GW_ALIAS_NAME_MAX 128        /* bytes with the NUL (== GW_NAME_MAX) */
#define GW_ALIAS_SPEC_MAX_BYTES 4096 /* one --alias value */

/* One target of an alias in the configuration (strings malloc'ed, freed with the config). */
typedef struct gw_alias_target_cfg {
    char *model;
    uint32_t weight;
} gw_alias_target_cfg;

typedef struct gw_alias_cfg {
    char *name;
    gw_alias_target_cfg *targets; /* (targets_count) */
    unsigned targets_count;
} gw_alias_cfg;

/*
 * gw_alias_parse_flag parses one `--alias NAME=T1:W1,T2:W2,...` value into *out (name and
 * targets malloc'ed in the shapes gw_config frees; on failure nothing is left allocated).
 * A target without ":W" has weight 1. CM_ERR_CONFIG with one line in err naming the bad part
 * (bounds are checked later by gw_alias_check), CM_ERR_NOMEM.
 */
cm_err gw_alias_parse_flag(const char *spec, gw_alias_cfg *out, char *err, size_t errlen);

/* gw_alias_cfg_fini frees what gw_alias_parse_flag allocated; *a is zeroed. */
void gw_alias_cfg_fini(gw_alias_cfg *a);

/*
 * gw_alias_check validates n aliases: at most GW_ALIAS_MAX, names 1..127 bytes and distinct,
 * 1..GW_ALIAS_MAX_TARGETS distinct targets each, weights 0..GW_ALIAS_MAX_WEIGHT with a
 * positive sum. On failure returns CM_ERR_CONFIG, key receives the dotted path of the bad
 * entry ("aliases.1.targets.0.weight", for cm_config_reject) and msg a sentence naming the
 * alias and target.
 */
cm_err gw_alias_check(const gw_alias_cfg *aliases, unsigned n, char *key, size_t keycap, char *msg,
                      size_t msgcap);

typedef struct gw_alias_target {
    char model[GW_ALIAS_NAME_MAX];
    uint32_t weight;
} gw_alias_target;

typedef struct gw_alias {
    char name[GW_ALIAS_NAME_MAX];
    gw_alias_target targets[GW_ALIAS_MAX_TARGETS];
    unsigned n_targets;
    int64_t total_weight;
    int64_t current[GW_ALIAS_MAX_TARGETS];   /* smooth WRR state; guarded by the table's mu */
    unsigned fallback[GW_ALIAS_MAX_TARGETS]; /* target indexes by weight, largest first */
} gw_alias;

/* A zeroed table is a valid empty one (find returns NULL; fini does nothing). */
typedef struct gw_alias_table {
    pthread_mutex_t mu; /* guards every alias's `current`, held for one pick */
    gw_alias *aliases;  /* (n) */
    unsigned n;
    int ready; /* mu initialized */
} gw_alias_table;

/* gw_alias_table_init builds t from n aliases that passed gw_alias_check (n may be 0).
 * CM_ERR_INVALID when they did not, CM_ERR_NOMEM; t is then an empty table. Free with
 * gw_alias_table_fini. */
cm_err gw_alias_table_init(gw_alias_table *t, const gw_alias_cfg *aliases, unsigned n);
void gw_alias_table_fini(gw_alias_table *t);

/* gw_alias_find returns the alias called name, or NULL. The result is borrowed (valid until
 * gw_alias_table_fini). Any thread. */
gw_alias *gw_alias_find(gw_alias_table *t, const char *name);

/*
 * gw_alias_order picks the next target of a (smooth weighted round robin, one step) and
 * writes into order (GW_ALIAS_MAX_TARGETS entries) the target indexes to try: the pick, then
 * every other target by weight. Returns how many (a->n_targets). Thread-safe.
 */
unsigned gw_alias_order(gw_alias_table *t, gw_alias *a, unsigned *order);

#endif /* GW_ALIAS_H */
