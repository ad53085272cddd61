/*
 * wk_wire: the worker's side of proto/sluice.proto - decoding and structural validation of
 * what gateways send, encoding of what the worker sends back.
 *
 * Decoding never trusts the bytes: protobuf-c enforces `required` fields, but garbage can
 * still unpack, so the oneof case, the prompt form (exactly one of messages / prompt /
 * prompt_token_ids) and every size (message count, string bytes, token ids, stop strings,
 * logit biases, tools, schemas, tool calls) are checked against wk_wire_limits here. Meaning
 * (UTF-8, chat template, vocabulary, context length) is checked later by wk_prompt.
 *
 * Events (the per-token path) go through a wk_wire_enc: the message tree is built inside the
 * encoder, borrowing the event's arrays and copying strings into a scratch buffer the encoder
 * keeps, then packed by wk_wire_enc_write straight into wherever the bytes go (the
 * connection's send buffer: wk_transport_send_payload). Once the scratch has grown to the
 * largest event, encoding allocates nothing. The one-shot encoders (wk_wire_encode_*) return
 * malloc'd bytes instead; the caller frees them (wk_wire_buf_free).
 *
 * Threads: every function is reentrant; no shared state.
 */
#ifndef WK_WIRE_H
#define WK_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cm_err.h"
#include "engine.h"
#include "sluice.pb-c.h"
#include "tokenizer.h"

/* The protocol version this worker speaks (proto PROTOCOL_VERSION). */
#define WK_WIRE_PROTOCOL_VERSION 1u

/* Bounds on one decoded message; a zero field means "use the default" in wk_wire_limits_init. */
typedef struct wk_wire_limits {
    size_t max_message_bytes; /* whole envelope; default 4 MiB */
    size_t max_prompt_bytes;  /* prompt, or sum of message contents; default 1 MiB */
    uint32_t max_messages;    /* chat messages; default 1024 */
    uint32_t max_prompt_ids;  /* prompt_token_ids; default 131072 */
    size_t max_string_bytes;  /* model, tenant, role, name, ids; default 256 */
    uint32_t max_tools;       /* tools per Submit; default 128 */
    size_t max_schema_bytes;  /* one schema (tool parameters, response_format), tool description
                                 or tool-call arguments; default 64 KiB */
    uint32_t max_tool_calls;  /* tool_calls per history message; default 64 */
} wk_wire_limits;

/* wk_wire_limits_init fills the defaults above. */
void wk_wire_limits_init(wk_wire_limits *lim);

typedef enum wk_wire_kind {
    WK_WIRE_NONE = 0,
    WK_WIRE_HELLO = 1,
    WK_WIRE_SUBMIT = 2,
    WK_WIRE_CANCEL = 3,
    WK_WIRE_IGNORED = 4,  /* a valid envelope a worker does not act on (Event, Stats, Drain) */
    WK_WIRE_TOKENIZE = 5, /* env->tokenize, checked by wk_tokenize_check */
} wk_wire_kind;

/* One decoded inbound message. env is owned: free with wk_wire_in_free. */
typedef struct wk_wire_in {
    wk_wire_kind kind;
    Sluice__Envelope *env;
    bool has_request_id; /* Submit/Cancel: request_id could be read (also on failure) */
    uint64_t request_id;
} wk_wire_in;

/*
 * wk_wire_decode unpacks and checks len bytes. On CM_OK, out->env is set and out->kind tells
 * which member is valid (env->hello / env->submit / env->cancel). On failure out->env is NULL,
 * err holds one line safe to send to the client, and out->has_request_id says whether the
 * failure can be answered with an Error event for out->request_id. Returns CM_ERR_FORMAT
 * (not a protobuf Envelope, no or unknown oneof member), CM_ERR_LIMIT (a size bound),
 * CM_ERR_INVALID (contradictory or missing fields).
 */
cm_err wk_wire_decode(const void *data, size_t len, const wk_wire_limits *lim, wk_wire_in *out,
                      char *err, size_t errlen);

/* wk_wire_check_submit: the structural checks of a Submit (one prompt form, every size under
 * lim) that wk_wire_decode runs; also used for a Tokenize's view as a Submit. */
cm_err wk_wire_check_submit(const Sluice__Submit *s, const wk_wire_limits *lim, char *err,
                            size_t errlen);

/* wk_wire_in_free frees out->env (if any) and resets *in. */
void wk_wire_in_free(wk_wire_in *in);

/*
 * wk_wire_sampling converts a Submit's SamplingParams (may be NULL: defaults) into engine
 * params: absent fields keep wk_sampling_defaults, except a missing seed, which becomes
 * random_seed. Ranges are checked by wk_sampling_validate later; here only counts
 * (CM_ERR_LIMIT for too many logit biases, err says so).
 */
cm_err wk_wire_sampling(const Sluice__SamplingParams *sp, uint64_t random_seed,
                        wk_sampling_params *out, char *err, size_t errlen);

/* Packed bytes; data is malloc'd and owned by the holder. */
typedef struct wk_wire_buf {
    uint8_t *data;
    size_t len;
} wk_wire_buf;

/* wk_wire_buf_free frees b->data and zeroes b. */
void wk_wire_buf_free(wk_wire_buf *b);

typedef struct wk_wire_hello_info {
    const char *model;
    const char *backend;
    const char *instance_id;
    uint32_t max_context_tokens;
    uint32_t max_batch_tokens;
    uint32_t max_waiting;
    bool draining;
} wk_wire_hello_info;

typedef struct wk_wire_stats {
    uint32_t waiting;
    uint32_t running;
    uint32_t kv_blocks_free;
    uint32_t kv_blocks_total;
    double tokens_per_s;
    bool draining;
    uint64_t prefix_hits;
    uint64_t preemptions;
} wk_wire_stats;

/* Encoders: CM_OK with *out filled, or CM_ERR_NOMEM (out zeroed). */
cm_err wk_wire_encode_hello(const wk_wire_hello_info *h, wk_wire_buf *out);
cm_err wk_wire_encode_stats(const wk_wire_stats *s, wk_wire_buf *out);
cm_err wk_wire_encode_drain(uint32_t timeout_ms, wk_wire_buf *out);
/* wk_wire_encode_error: Event{request_id, Error{code, message}}; message NULL = cm_strerror. */
cm_err wk_wire_encode_error(uint64_t request_id, cm_err code, const char *message,
                            wk_wire_buf *out);
/* wk_wire_encode_tokenized: Event{request_id, Tokenized}; CM_ERR_LIMIT (nothing allocated,
 * out->len = the bytes it would take) when that is over max_bytes. */
cm_err wk_wire_encode_tokenized(uint64_t request_id, Sluice__Tokenized *tk, size_t max_bytes,
                                wk_wire_buf *out);
/*
 * wk_wire_encode_event encodes an engine event as Event{request_id, ...} (the engine's own
 * id inside ev is not used). tok (may be NULL) supplies token bytes for logprobs. ev->text
 * must be valid UTF-8 (the engine emits complete characters only).
 */
cm_err wk_wire_encode_event(const wk_event *ev, uint64_t request_id, const wk_tokenizer *tok,
                            wk_wire_buf *out);

/* A piece of a tool call for a Tokens event (ToolCallDelta); strings borrowed. */
typedef struct wk_wire_tool_delta {
    uint32_t index;        /* call number within the choice */
    const char *id;        /* first delta of a call only, else NULL */
    const char *name;      /* first delta of a call only, else NULL */
    const char *arguments; /* fragment (arguments_len bytes, valid UTF-8) */
    size_t arguments_len;
} wk_wire_tool_delta;

/*
 * wk_wire_encode_event_tools is wk_wire_encode_event for requests whose output is parsed
 * for tool calls: a TOKENS event carries the n deltas as Tokens.tool_calls (ev->text is the
 * plain content left after parsing), and a FINISHED event with tool_calls_finish reports
 * FINISH_REASON_TOOL_CALLS instead of the engine's reason.
 */
cm_err wk_wire_encode_event_tools(const wk_event *ev, uint64_t request_id, const wk_tokenizer *tok,
                                  const wk_wire_tool_delta *deltas, size_t n,
                                  bool tool_calls_finish, wk_wire_buf *out);

/*
 * wk_wire_enc: a reusable encoder for events. One owner thread; zero it with wk_wire_enc_init,
 * free its scratch with wk_wire_enc_fini. Between wk_wire_enc_event (or _error) and the last
 * wk_wire_enc_write the encoder must not move and what the event borrows (token ids,
 * tokenizer pieces, tool-delta id and name, the error message) must stay valid.
 */
typedef struct wk_wire_enc {
    uint8_t *scratch; /* string copies and sub-messages; grows to the largest event */
    size_t scratch_cap;
    Sluice__Envelope env;
    Sluice__Event event;
    Sluice__Tokens tokens;
    Sluice__Finished finished;
    Sluice__Usage usage;
    Sluice__Timing timing;
    Sluice__Error error;
    size_t len; /* packed bytes of the message built last */
} wk_wire_enc;

void wk_wire_enc_init(wk_wire_enc *enc);
void wk_wire_enc_fini(wk_wire_enc *enc);

/* wk_wire_enc_event builds what wk_wire_encode_event_tools would encode (deltas may be NULL
 * when n_deltas is 0) and measures it (wk_wire_enc_len). CM_ERR_NOMEM when the scratch cannot
 * grow (nothing built). */
cm_err wk_wire_enc_event(wk_wire_enc *enc, const wk_event *ev, uint64_t request_id,
                         const wk_tokenizer *tok, const wk_wire_tool_delta *deltas, size_t n_deltas,
                         bool tool_calls_finish);

/* wk_wire_enc_error builds Event{request_id, Error{code, message}} (message NULL =
 * cm_strerror(code), borrowed otherwise). Always CM_OK (nothing to allocate). */
cm_err wk_wire_enc_error(wk_wire_enc *enc, uint64_t request_id, cm_err code, const char *message);

/* wk_wire_enc_len: the packed bytes of the message built last. */
size_t wk_wire_enc_len(const wk_wire_enc *enc);

/* wk_wire_enc_write packs the message built last into dst (wk_wire_enc_len bytes). enc is a
 * const wk_wire_enc *; the signature is wk_transport_payload's write. Allocates nothing. */
void wk_wire_enc_write(const void *enc, uint8_t *dst);

#endif /* WK_WIRE_H */
