/*
 * gw_error: an HTTP-facing error in the OpenAI shape
 *   {"error":{"message":"...","type":"...","param":"..."|null,"code":"..."|null}}
 * filled by validation, auth, rate limiting and routing, rendered once by the HTTP layer.
 *
 * A gw_error is a plain value (no heap memory); copy it freely. Not thread-safe to share
 * while being written, like any plain struct.
 */
#ifndef GW_ERROR_H
#define GW_ERROR_H

#include <stddef.h>

#include "cm_err.h"

/* OpenAI error types. */
#define GW_ERRT_INVALID "invalid_request_error"
#define GW_ERRT_AUTH "authentication_error"
#define GW_ERRT_RATE "rate_limit_exceeded"
#define GW_ERRT_SERVER "server_error"
#define GW_ERRT_UNAVAILABLE "service_unavailable"
#define GW_ERRT_TIMEOUT "timeout"

typedef struct gw_error {
    int status;        /* HTTP status, e.g. 400 */
    const char *type;  /* one of GW_ERRT_* (static string) */
    char code[48];     /* machine code ("invalid_value"); "" renders as null */
    char param[96];    /* offending parameter ("messages[2].content"); "" renders as null */
    char message[320]; /* safe to show to the client */
    int retry_after_s; /* > 0: send a Retry-After header */
} gw_error;

/*
 * gw_error_set fills e (all fields; retry_after_s = 0). code and param may be NULL. Returns
 * CM_ERR_INVALID for 4xx statuses and CM_ERR_OVERLOADED/CM_ERR_TIMEOUT/CM_ERR_INTERNAL for 503,
 * 504 and other 5xx, so validators can `return gw_error_set(...)`.
 */
cm_err gw_error_set(gw_error *e, int status, const char *type, const char *code, const char *param,
                    const char *fmt, ...) __attribute__((format(printf, 6, 7)));

/*
 * gw_error_from_worker maps a worker Event.Error code (a cm_err value) and its message to the
 * client-facing status: OVERLOADED 503 "overloaded" (busy), CLOSED 503 "no_capacity"
 * (draining), TIMEOUT 504, CONTEXT_LENGTH 400 (param
 * "messages", code "context_length_exceeded"), INVALID/LIMIT/UTF8/UNSUPPORTED 400, NOT_FOUND
 * 404, anything else 500.
 */
void gw_error_from_worker(gw_error *e, unsigned code, const char *message);

/*
 * gw_error_json renders e as OpenAI error JSON into out (NUL-terminated, truncated to cap).
 * Returns the length written (excluding the NUL).
 */
size_t gw_error_json(const gw_error *e, char *out, size_t cap);

/*
 * gw_json_escape appends s (len bytes) as the inside of a JSON string (no quotes) to out at
 * *pos, never writing past cap (truncating at a character boundary). Invalid UTF-8 bytes are
 * replaced with U+FFFD. Returns 0, or -1 when truncated.
 */
int gw_json_escape(const char *s, size_t len, char *out, size_t cap, size_t *pos);

#endif /* GW_ERROR_H */
