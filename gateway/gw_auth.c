#include "gw_auth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void fill(gw_tenant *t, const char *name, uint32_t rpm, uint32_t tpm, uint32_t conc) {
    snprintf(t->name, sizeof t->name, "%s", name);
    t->rpm = rpm;
    t->tpm = tpm;
    t->max_concurrency = conc;
}

cm_err gw_auth_init(gw_auth *a, const gw_config *cfg, char *err, size_t errlen) {
    size_t n = cfg->tenants_count + cfg->cli_keys_count, k = 0;
    memset(a, 0, sizeof *a);
    a->disabled = cfg->no_auth;
    fill(&a->anonymous, "anonymous", cfg->default_rpm, cfg->default_tpm,
         cfg->default_max_concurrency);
    if (n == 0)
        return CM_OK;
    a->tenants = calloc(n, sizeof *a->tenants);
    if (a->tenants == NULL)
        return CM_ERR_NOMEM;
    for (unsigned i = 0; i < cfg->tenants_count; i++, k++) {
        const gw_tenant_cfg *tc = &cfg->tenants[i];
        fill(&a->tenants[k], tc->name, tc->rpm, tc->tpm, tc->max_concurrency);
        if (tc->key_sha256 == NULL || strlen(tc->key_sha256) != CM_SHA256_HEX_LEN ||
            cm_sha256_from_hex(tc->key_sha256, a->tenants[k].digest) != CM_OK) {
            snprintf(err, errlen, "tenants[%u] (%s): key_sha256 must be 64 hex digits", i,
                     tc->name);
            gw_auth_fini(a);
            return CM_ERR_CONFIG;
        }
    }
    for (unsigned i = 0; i < cfg->cli_keys_count; i++, k++) {
        fill(&a->tenants[k], "default", cfg->default_rpm, cfg->default_tpm,
             cfg->default_max_concurrency);
        cm_sha256(cfg->cli_keys[i], strlen(cfg->cli_keys[i]), a->tenants[k].digest);
    }
    a->n_tenants = k;
    return CM_OK;
}

void gw_auth_fini(gw_auth *a) {
    free(a->tenants);
    memset(a, 0, sizeof *a);
}

int gw_auth_bearer(const char *value, size_t len, const char **key, size_t *key_len) {
    size_t i = 6;
    if (len < 7 || strncasecmp(value, "bearer", 6) != 0 || (value[6] != ' ' && value[6] != '\t'))
        return -1;
    while (i < len && (value[i] == ' ' || value[i] == '\t'))
        i++;
    while (len > i && (value[len - 1] == ' ' || value[len - 1] == '\t'))
        len--;
    if (i >= len)
        return -1;
    *key = value + i;
    *key_len = len - i;
    return 0;
}

const gw_tenant *gw_auth_lookup(const gw_auth *a, const char *key, size_t key_len,
                                uint8_t digest_out[CM_SHA256_LEN]) {
    uint8_t digest[CM_SHA256_LEN];
    const gw_tenant *found = NULL;
    cm_sha256(key, key_len, digest);
    if (digest_out != NULL)
        memcpy(digest_out, digest, sizeof digest);
    /* Compare with every entry, no early exit: the time does not depend on the match. */
    for (size_t i = 0; i < a->n_tenants; i++) {
        int eq = cm_ct_equal(digest, a->tenants[i].digest, CM_SHA256_LEN);
        if (eq && found == NULL)
            found = &a->tenants[i];
    }
    return found;
}
