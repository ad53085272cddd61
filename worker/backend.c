/*
 * wk_backend: the registry of backends. The CPU backend is always in it; a program adds the
 * others it links (wk_backend_register_linked), so this file names no backend outside wk_core.
 */
#include "backend.h"

#include <string.h>

/* Filled at program start, read-only afterwards (see wk_backend_register). */
static const wk_backend_ops *registered[WK_BACKEND_MAX] = {&wk_backend_cpu};
static size_t n_registered = 1;

cm_err wk_backend_register(const wk_backend_ops *ops) {
    if (ops == NULL || ops->name == NULL)
        return CM_ERR_INVALID;
    if (wk_backend_find(ops->name) != NULL)
        return CM_ERR_EXISTS;
    if (n_registered == WK_BACKEND_MAX)
        return CM_ERR_LIMIT;
    registered[n_registered++] = ops;
    return CM_OK;
}

const wk_backend_ops *wk_backend_find(const char *name) {
    if (name == NULL)
        return NULL;
    for (size_t i = 0; i < n_registered; i++)
        if (strcmp(registered[i]->name, name) == 0)
            return registered[i];
    return NULL;
}
