#include "gw_alias.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void gw_alias_cfg_fini(gw_alias_cfg *a) {
    for (unsigned i = 0; a->targets != NULL && i < a->targets_count; i++)
        free(a->targets[i].model);
    free(a->targets);
    free(a->name);
    memset(a, 0, sizeof *a);
}

/* parse_weight reads the decimal weight in [s, end); -1 when it is not one (or too large to
 * be worth reading: the range is checked by gw_alias_check). */
static long parse_weight(const char *s, const char *end) {
    long v = 0;
    if (s == end || end - s > 7)
        return -1;
    for (; s < end; s++) {
        if (*s < '0' || *s > '9')
            return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

cm_err gw_alias_parse_flag(const char *spec, gw_alias_cfg *out, char *err, size_t errlen) {
    const char *eq, *p, *end;
    size_t len = strnlen(spec, GW_ALIAS_SPEC_MAX_BYTES + 1);
    cm_err rv;
    memset(out, 0, sizeof *out);
    if (len > GW_ALIAS_SPEC_MAX_BYTES)
        return cm_errf(CM_ERR_CONFIG, err, errlen, "--alias: longer than %d bytes",
                       GW_ALIAS_SPEC_MAX_BYTES);
    eq = strchr(spec, '=');
    if (eq == NULL || eq == spec || eq[1] == '\0')
        return cm_errf(CM_ERR_CONFIG, err, errlen,
                       "--alias '%.64s' must be NAME=MODEL:WEIGHT[,MODEL:WEIGHT...]", spec);
    if ((out->name = strndup(spec, (size_t)(eq - spec))) == NULL)
        return CM_ERR_NOMEM;
    end = spec + len;
    /* Each comma-separated part is one target; counted past the bound so that the check
     * reports "too many targets" with the real count. */
    for (p = eq + 1; p <= end;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *stop = comma != NULL ? comma : end;
        const char *colon = memchr(p, ':', (size_t)(stop - p));
        const char *name_end = colon != NULL ? colon : stop;
        long w = colon != NULL ? parse_weight(colon + 1, stop) : 1;
        gw_alias_target_cfg *nt;
        if (name_end == p || w < 0) {
            rv = cm_errf(CM_ERR_CONFIG, err, errlen,
                         "--alias '%.64s': target '%.*s' must be MODEL or MODEL:WEIGHT (weight "
                         "0..%d)",
                         out->name, (int)(stop - p > 64 ? 64 : stop - p), p, GW_ALIAS_MAX_WEIGHT);
            goto fail;
        }
        if (out->targets_count > GW_ALIAS_MAX_TARGETS) {
            rv = cm_errf(CM_ERR_CONFIG, err, errlen, "--alias '%.64s': more than %d targets",
                         out->name, GW_ALIAS_MAX_TARGETS);
            goto fail;
        }
        nt = realloc(out->targets, (out->targets_count + 1) * sizeof *nt);
        if (nt == NULL) {
            rv = CM_ERR_NOMEM;
            goto fail;
        }
        out->targets = nt;
        nt[out->targets_count].weight = (uint32_t)w;
        if ((nt[out->targets_count].model = strndup(p, (size_t)(name_end - p))) == NULL) {
            rv = CM_ERR_NOMEM;
            goto fail;
        }
        out->targets_count++;
        p = stop + 1;
    }
    return CM_OK;
fail:
    gw_alias_cfg_fini(out);
    return rv;
}

static cm_err reject(char *key, size_t keycap, char *msg, size_t msgcap, const char *k,
                     const char *m) {
    snprintf(key, keycap, "%s", k);
    snprintf(msg, msgcap, "%s", m);
    return CM_ERR_CONFIG;
}

static int name_ok(const char *s) {
    return s != NULL && s[0] != '\0' && strlen(s) < GW_ALIAS_NAME_MAX;
}

cm_err gw_alias_check(const gw_alias_cfg *aliases, unsigned n, char *key, size_t keycap, char *msg,
                      size_t msgcap) {
    char k[96], m[512];
    if (n > GW_ALIAS_MAX) {
        snprintf(m, sizeof m, "at most %d aliases, got %u", GW_ALIAS_MAX, n);
        return reject(key, keycap, msg, msgcap, "aliases", m);
    }
    for (unsigned i = 0; i < n; i++) {
        const gw_alias_cfg *a = &aliases[i];
        uint64_t sum = 0;
        if (!name_ok(a->name)) {
            snprintf(k, sizeof k, "aliases.%u.name", i);
            snprintf(m, sizeof m, "alias %u: the name must be 1..%d bytes", i,
                     GW_ALIAS_NAME_MAX - 1);
            return reject(key, keycap, msg, msgcap, k, m);
        }
        for (unsigned j = 0; j < i; j++) {
            if (strcmp(aliases[j].name, a->name) == 0) {
                snprintf(k, sizeof k, "aliases.%u.name", i);
                snprintf(m, sizeof m, "alias '%s' is defined twice", a->name);
                return reject(key, keycap, msg, msgcap, k, m);
            }
        }
        if (a->targets_count == 0 || a->targets_count > GW_ALIAS_MAX_TARGETS) {
            snprintf(k, sizeof k, "aliases.%u.targets", i);
            snprintf(m, sizeof m, "alias '%s' needs 1..%d targets, got %u", a->name,
                     GW_ALIAS_MAX_TARGETS, a->targets_count);
            return reject(key, keycap, msg, msgcap, k, m);
        }
        for (unsigned j = 0; j < a->targets_count; j++) {
            const gw_alias_target_cfg *t = &a->targets[j];
            if (!name_ok(t->model)) {
                snprintf(k, sizeof k, "aliases.%u.targets.%u.model", i, j);
                snprintf(m, sizeof m, "alias '%s': target %u needs a model name of 1..%d bytes",
                         a->name, j, GW_ALIAS_NAME_MAX - 1);
                return reject(key, keycap, msg, msgcap, k, m);
            }
            if (t->weight > GW_ALIAS_MAX_WEIGHT) {
                snprintf(k, sizeof k, "aliases.%u.targets.%u.weight", i, j);
                snprintf(m, sizeof m, "alias '%s': target '%s' has weight %u (must be 0..%d)",
                         a->name, t->model, t->weight, GW_ALIAS_MAX_WEIGHT);
                return reject(key, keycap, msg, msgcap, k, m);
            }
            for (unsigned q = 0; q < j; q++) {
                if (strcmp(a->targets[q].model, t->model) == 0) {
                    snprintf(k, sizeof k, "aliases.%u.targets.%u.model", i, j);
                    snprintf(m, sizeof m, "alias '%s': target '%s' is listed twice", a->name,
                             t->model);
                    return reject(key, keycap, msg, msgcap, k, m);
                }
            }
            sum += t->weight;
        }
        if (sum == 0) {
            snprintf(k, sizeof k, "aliases.%u.targets", i);
            snprintf(m, sizeof m, "alias '%s': the weights sum to 0 (no target takes traffic)",
                     a->name);
            return reject(key, keycap, msg, msgcap, k, m);
        }
    }
    return CM_OK;
}

cm_err gw_alias_table_init(gw_alias_table *t, const gw_alias_cfg *aliases, unsigned n) {
    char key[96], msg[512];
    memset(t, 0, sizeof *t);
    if (n > 0 && gw_alias_check(aliases, n, key, sizeof key, msg, sizeof msg) != CM_OK)
        return CM_ERR_INVALID;
    if (pthread_mutex_init(&t->mu, NULL) != 0)
        return CM_ERR_INTERNAL;
    if (n > 0 && (t->aliases = calloc(n, sizeof *t->aliases)) == NULL) {
        pthread_mutex_destroy(&t->mu);
        return CM_ERR_NOMEM;
    }
    t->ready = 1;
    for (unsigned i = 0; i < n; i++) {
        gw_alias *a = &t->aliases[i];
        snprintf(a->name, sizeof a->name, "%s", aliases[i].name);
        a->n_targets = aliases[i].targets_count;
        for (unsigned j = 0; j < a->n_targets; j++) {
            unsigned k = j;
            snprintf(a->targets[j].model, sizeof a->targets[j].model, "%s",
                     aliases[i].targets[j].model);
            a->targets[j].weight = aliases[i].targets[j].weight;
            a->total_weight += a->targets[j].weight;
            /* Insertion by weight, stable: equal weights keep configuration order. */
            while (k > 0 && a->targets[a->fallback[k - 1]].weight < a->targets[j].weight) {
                a->fallback[k] = a->fallback[k - 1];
                k--;
            }
            a->fallback[k] = j;
        }
    }
    t->n = n;
    return CM_OK;
}

void gw_alias_table_fini(gw_alias_table *t) {
    if (!t->ready)
        return;
    free(t->aliases);
    pthread_mutex_destroy(&t->mu);
    memset(t, 0, sizeof *t);
}

gw_alias *gw_alias_find(gw_alias_table *t, const char *name) {
    for (unsigned i = 0; i < t->n; i++)
        if (strcmp(t->aliases[i].name, name) == 0)
            return &t->aliases[i];
    return NULL;
}

unsigned gw_alias_order(gw_alias_table *t, gw_alias *a, unsigned *order) {
    unsigned pick = 0, n = 0;
    pthread_mutex_lock(&t->mu);
    /* Smooth weighted round robin: every target gains its weight, the richest is picked and
     * pays the total back. Weight-0 targets never gain, so they are never picked. */
    for (unsigned j = 0; j < a->n_targets; j++) {
        a->current[j] += a->targets[j].weight;
        if (a->current[j] > a->current[pick])
            pick = j;
    }
    a->current[pick] -= a->total_weight;
    pthread_mutex_unlock(&t->mu);
    order[n++] = pick;
    for (unsigned j = 0; j < a->n_targets; j++)
        if (a->fallback[j] != pick)
            order[n++] = a->fallback[j];
    return n;
}
