/*
 * lt_sse: an incremental parser for a text/event-stream body (Server-Sent Events), as OpenAI
 * compatible servers stream completions.
 *
 * Bytes arrive in arbitrary pieces (a network read may end mid-line); lt_sse_feed buffers
 * the partial line and calls on_event once per complete event with the event's data (several
 * `data:` lines joined by '\n', as the SSE spec says). Comment lines (":"), `event:`, `id:` and
 * `retry:` fields are accepted and ignored; CR, LF and CRLF all end a line. Memory is bounded:
 * a line or an event's data longer than max_event_bytes is an error (CM_ERR_LIMIT).
 *
 * Thread contract: one parser per response stream, one thread at a time.
 */
#ifndef LT_SSE_H
#define LT_SSE_H

#include <stddef.h>

#include "cm_err.h"

/*
 * on_event receives the data of one event (not NUL-terminated beyond len, but data[len] is
 * '\0'); the pointer is valid only during the call. Return 0 to continue, non-zero to stop
 * parsing (lt_sse_feed then returns CM_ERR_CANCELLED).
 */
typedef int (*lt_sse_on_event)(void *user, const char *data, size_t len);

typedef struct lt_sse {
    char *line; /* partial current line, capacity max_event_bytes + 1 */
    size_t line_len;
    char *data; /* data of the event being assembled, capacity max_event_bytes + 1 */
    size_t data_len;
    int have_data;   /* at least one data: line seen in the current event */
    int last_was_cr; /* previous byte was CR: a following LF belongs to the same line end */
    size_t max_event_bytes;
} lt_sse;

/* lt_sse_init prepares p; max_event_bytes >= 16. Free with lt_sse_fini (also after failure). */
cm_err lt_sse_init(lt_sse *p, size_t max_event_bytes);
/* lt_sse_reset forgets any partial line or event, to reuse p for a new stream. */
void lt_sse_reset(lt_sse *p);
/*
 * lt_sse_feed parses n bytes. Returns CM_OK, CM_ERR_LIMIT when a line or event exceeds the cap
 * (p must then be reset before reuse), or CM_ERR_CANCELLED when on_event asked to stop.
 */
cm_err lt_sse_feed(lt_sse *p, const char *bytes, size_t n, lt_sse_on_event on_event, void *user);
/*
 * lt_sse_finish ends the stream: a last event not followed by a blank line is dispatched too
 * (servers that close right after the final data line are common). Same returns as feed.
 */
cm_err lt_sse_finish(lt_sse *p, lt_sse_on_event on_event, void *user);
/* lt_sse_fini frees p's buffers; p may be zeroed or half-initialised. */
void lt_sse_fini(lt_sse *p);

#endif /* LT_SSE_H */
