/*
 * wk_inbox: the bounded, mutex-protected queue from nng's threads to the engine thread.
 *
 * nng callbacks (many threads) push commands; the engine thread takes them all at once
 * between engine steps and sleeps in wk_inbox_wait when it has nothing to do. Submits count
 * against submit_cap (a full inbox answers OVERLOADED to the gateway at once); control
 * commands (connection open/close, Hello, Cancel) have their own, larger cap so a flood of
 * submits can never crowd out the cancel or close that frees resources.
 *
 * Threads: push/wake from any thread; pop_all/wait from the one consumer thread.
 */
#ifndef WK_INBOX_H
#define WK_INBOX_H

#include <stdbool.h>
#include <stdint.h>

#include "cm_err.h"
#include "sluice.pb-c.h"

typedef enum wk_cmd_kind {
    WK_CMD_OPEN = 1,   /* a gateway connection opened */
    WK_CMD_CLOSE = 2,  /* it closed: cancel its requests */
    WK_CMD_HELLO = 3,  /* env->hello */
    WK_CMD_SUBMIT = 4, /* env->submit */
    WK_CMD_CANCEL = 5, /* request_id */
} wk_cmd_kind;

typedef struct wk_cmd {
    struct wk_cmd *next;
    wk_cmd_kind kind;
    uint32_t conn_id;
    uint64_t request_id;
    Sluice__Envelope *env; /* HELLO/SUBMIT: owned by the command */
    int64_t received_ns;   /* cm_clock monotonic ns, when the message was decoded */
} wk_cmd;

typedef struct wk_inbox wk_inbox;

/* wk_inbox_create: submit_cap >= 1; the control cap is 4 * submit_cap + 1024. */
cm_err wk_inbox_create(uint32_t submit_cap, wk_inbox **out);
/* wk_inbox_destroy frees queued commands too. No thread may be using the inbox. */
void wk_inbox_destroy(wk_inbox *in);

/* wk_inbox_push moves *cmd (copied; cmd->env ownership passes to the inbox on CM_OK only)
 * and wakes the consumer. CM_ERR_OVERLOADED when the command's cap is reached,
 * CM_ERR_NOMEM. */
cm_err wk_inbox_push(wk_inbox *in, const wk_cmd *cmd);

/* wk_inbox_pop_all returns every queued command in arrival order (NULL if none). The caller
 * owns the list: free each with wk_cmd_free. */
wk_cmd *wk_inbox_pop_all(wk_inbox *in);

/* wk_cmd_free frees one command and its envelope. */
void wk_cmd_free(wk_cmd *c);

/* wk_inbox_wait sleeps until a command arrives, wk_inbox_wake is called, or timeout_ms
 * passes. Returns at once if commands are queued or a wake is pending. */
void wk_inbox_wait(wk_inbox *in, int timeout_ms);

/* wk_inbox_wake makes the current or next wk_inbox_wait return. Any thread, but not from a
 * signal handler (it takes a mutex). */
void wk_inbox_wake(wk_inbox *in);

/* wk_inbox_submits: submits queued now. */
uint32_t wk_inbox_submits(wk_inbox *in);

#endif /* WK_INBOX_H */
