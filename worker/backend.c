/*
 * wk_backend: the registry of compiled-in backends.
 */
#include "backend.h"

#include <string.h>

#ifdef SLUICE_HAVE_CUDA
extern const wk_backend_ops wk_backend_cuda;
#endif

const wk_backend_ops *wk_backend_find(const char *name) {
    if (name == NULL) {
        return NULL;
    }
    if (strcmp(name, "cpu") == 0) {
        return &wk_backend_cpu;
    }
#ifdef SLUICE_HAVE_CUDA
    if (strcmp(name, "cuda") == 0) {
        return &wk_backend_cuda;
    }
#endif
    return NULL;
}
