#include "cm_id.h"

#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>

static cm_err fill_random(void *buf, size_t n) {
    uint8_t *p = buf;
    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR) {
                continue;
            }
            return CM_ERR_IO;
        }
        p += got;
        n -= (size_t)got;
    }
    return CM_OK;
}

/* splitmix64's finaliser: a bijection on 64-bit values, so distinct counters give distinct
 * outputs while the output looks random. */
static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

cm_err cm_id_gen_init(cm_id_gen *g, const char *prefix) {
    if (g == NULL || prefix == NULL) {
        return CM_ERR_INVALID;
    }
    size_t n = strlen(prefix);
    if (n == 0 || n > CM_ID_PREFIX_MAX) {
        return CM_ERR_INVALID;
    }
    for (size_t i = 0; i < n; i++) {
        char c = prefix[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_')) {
            return CM_ERR_INVALID;
        }
    }
    cm_err rv = fill_random(&g->seed, sizeof g->seed);
    if (rv != CM_OK) {
        return rv;
    }
    memcpy(g->prefix, prefix, n + 1);
    atomic_init(&g->counter, 0);
    return CM_OK;
}

cm_err cm_id_next(cm_id_gen *g, char *out, size_t outlen) {
    uint64_t n = atomic_fetch_add_explicit(&g->counter, 1, memory_order_relaxed) + 1;
    /* Adding the seed before mixing keeps the mix a bijection of n for a fixed seed. */
    int len = snprintf(out, outlen, "%s-%016" PRIx64 "-%" PRIx64, g->prefix, mix64(g->seed + n), n);
    if (len < 0 || (size_t)len >= outlen) {
        if (outlen > 0) {
            out[0] = '\0';
        }
        return CM_ERR_LIMIT;
    }
    return CM_OK;
}

cm_err cm_id_random_hex(size_t nbytes, char *out, size_t outlen) {
    static const char hex[] = "0123456789abcdef";
    if (out == NULL || nbytes > (SIZE_MAX - 1) / 2 || outlen < 2 * nbytes + 1) {
        if (out != NULL && outlen > 0) {
            out[0] = '\0';
        }
        return CM_ERR_LIMIT;
    }
    /* Random bytes go into the upper half of out, then expand to hex from the front: each
     * byte is read before its two digits can overwrite it. */
    uint8_t *raw = (uint8_t *)out + nbytes;
    cm_err rv = fill_random(raw, nbytes);
    if (rv != CM_OK) {
        out[0] = '\0';
        return rv;
    }
    for (size_t i = 0; i < nbytes; i++) {
        uint8_t v = raw[i];
        out[2 * i] = hex[v >> 4];
        out[2 * i + 1] = hex[v & 15];
    }
    out[2 * nbytes] = '\0';
    return CM_OK;
}

int cm_id_valid(const char *s) {
    if (s == NULL) {
        return 0;
    }
    size_t i = 0;
    for (; s[i] != '\0'; i++) {
        if (i >= CM_ID_EXTERNAL_MAX) {
            return 0;
        }
        char c = s[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '.' || c == '_' || c == ':' || c == '-';
        if (!ok) {
            return 0;
        }
    }
    return i > 0;
}
