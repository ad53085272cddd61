/*
 * gw_request: validation of an OpenAI request body and its mapping to the wire Submit.
 *
 * gw_request_parse takes the raw JSON of POST /v1/chat/completions or /v1/completions, checks
 * every field against the OpenAI schema and the configured limits, and fills a gw_request
 * whose `submit` is ready to pack. Every refusal is a gw_error naming the parameter
 * ("messages[1].content", "temperature"); unknown and unsupported parameters are refused, never
 * ignored. Pure computation: no I/O, no globals, safe on any thread (one gw_request per thread).
 */
#ifndef GW_REQUEST_H
#define GW_REQUEST_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "cm_err.h"
#include "gw_error.h"
#include "gw_limits.h"
#include "sluice.pb-c.h"

/* The API kind of a request (gw_route's table maps paths to kinds). */
typedef enum gw_api {
    GW_API_NONE = -1,       /* not a model request (probes, /v1/models, /metrics) */
    GW_API_CHAT = 0,        /* chat completions */
    GW_API_COMPLETIONS = 1, /* completions */
    GW_API_TOKENIZE = 2,    /* vLLM's /tokenize: text or chat messages -> token ids */
    GW_API_DETOKENIZE = 3,  /* vLLM's /detokenize: token ids -> text */
} gw_api;

/* Bounds on structured outputs and tools (OpenAI's own: 128 tools, names of 64 bytes). */
#define GW_MAX_TOOLS 128
#define GW_MAX_TOOL_NAME_BYTES 64
#define GW_MAX_TOOL_DESCRIPTION_BYTES 8192
#define GW_MAX_SCHEMA_BYTES (64u * 1024) /* one schema (parameters or response_format), as JSON */
#define GW_MAX_TOOL_CALLS 64             /* tool_calls per history message and per choice */
#define GW_MAX_TOOL_ARGUMENTS_BYTES (64u * 1024)

/*
 * A validated request. Strings inside `submit` point into `root` (or into arrays owned by the
 * request): the request must outlive every pack. Free with gw_request_fini.
 */
typedef struct gw_request {
    gw_api api;
    json_t *root;        /* parsed body; owns the strings */
    const char *model;   /* points into root */
    int stream;          /* 1 = SSE */
    int include_usage;   /* stream_options.include_usage */
    uint32_t n;          /* choices wanted (1..max_n) */
    uint32_t max_tokens; /* effective (default applied); 0 = up to the remaining context */
    int logprobs;        /* 1 when token logprobs are wanted */
    uint32_t top_logprobs;
    int has_seed;
    uint64_t seed;
    size_t prompt_chars;            /* bytes of prompt text, for the token estimate */
    uint32_t prompt_token_estimate; /* rough prompt tokens, for TPM admission */
    const char *user;               /* "user" field or NULL */
    int priority_batch;             /* priority > 0 -> batch class */

    /* Wire form; request_id, tenant, deadline and seed are set per choice by
     * gw_request_envelope. */
    Sluice__Submit submit;
    Sluice__SamplingParams sampling;
    Sluice__ChatMessage *msg_store; /* (n_messages) */
    Sluice__ChatMessage **msg_ptrs; /* (n_messages) */
    char **joined;                  /* (n_joined) content joined from text parts, or NULL */
    size_t n_joined;
    char **stop_ptrs;              /* (n_stop) point into root */
    Sluice__LogitBias *bias_store; /* (n_bias) */
    Sluice__LogitBias **bias_ptrs; /* (n_bias) */
    int32_t *prompt_ids;           /* (n_prompt_ids) */

    /* Structured outputs and tools (chat only). */
    int has_tools;                  /* tools given and tool_choice is not "none" */
    Sluice__ResponseFormat rformat; /* submit.response_format points here when given */
    Sluice__ToolChoice tool_choice; /* submit.tool_choice points here when given */
    Sluice__Tool *tool_store;       /* (submit.n_tools) */
    Sluice__Tool **tool_ptrs;       /* (submit.n_tools) */
    Sluice__ToolCall *call_store;   /* (n_calls) tool_calls of history messages */
    Sluice__ToolCall **call_ptrs;   /* (n_calls) */
    size_t n_calls;
    char **dumped; /* (n_dumped) schemas serialized by the gateway (owned) */
    size_t n_dumped;
} gw_request;

/*
 * gw_request_parse validates body (len bytes, need not be NUL-terminated) for api under lim.
 * On CM_OK, *out is filled and owns memory: release with gw_request_fini. On failure, err is
 * filled (status 400, or 413 for an oversized body), *out holds nothing to free (calling
 * gw_request_fini on it is still safe), and the return value is CM_ERR_INVALID, CM_ERR_LIMIT
 * or CM_ERR_NOMEM.
 */
cm_err gw_request_parse(const char *body, size_t len, gw_api api, const gw_limits *lim,
                        gw_request *out, gw_error *err);

/* gw_request_fini frees what req owns and zeroes it; safe on a zeroed or failed request. */
void gw_request_fini(gw_request *req);

/* Identity of one Submit on the wire (one per choice when n > 1). */
typedef struct gw_submit_ids {
    uint64_t request_id;       /* unique per worker pipe */
    uint32_t choice;           /* 0..n-1: seed + choice when a seed is given */
    const char *tenant;        /* may be NULL */
    const char *gateway_id;    /* x-request-id, may be NULL */
    uint64_t deadline_unix_ms; /* 0 = none */
} gw_submit_ids;

/*
 * gw_request_envelope points *env at the Envelope{submit} for ids (borrowing req; valid while
 * req is and until the next call). Modifies req->submit's per-choice fields (not thread-safe
 * on one req).
 */
void gw_request_envelope(gw_request *req, const gw_submit_ids *ids, Sluice__Envelope *env);

/*
 * A validated /tokenize or /detokenize body (vLLM's shapes):
 *   tokenize   {model, prompt, add_special_tokens?, return_token_strs?} or
 *              {model, messages, add_generation_prompt?, add_special_tokens?, tools?,
 *               return_token_strs?}; messages, prompt and tools are checked exactly as a chat
 *              or completion request's (same limits, same error params);
 *   detokenize {model, tokens: [ids]} (1..max_prompt_token_ids ids, each 0..2^31-1; the
 *              vocabulary range is the worker's check).
 * `msg` is the wire form, its strings pointing into `rq`: set msg.request_id, then pack.
 */
typedef struct gw_tokenize_request {
    gw_api api;           /* GW_API_TOKENIZE or GW_API_DETOKENIZE */
    const char *model;    /* points into rq.root */
    gw_request rq;        /* the body and what its messages/prompt/tools parsed into */
    int32_t *token_ids;   /* (msg.n_token_ids) detokenize; owned */
    Sluice__Tokenize msg; /* wire form */
} gw_tokenize_request;

/*
 * gw_tokenize_parse validates body (len bytes) for api (GW_API_TOKENIZE/DETOKENIZE) under
 * lim, as gw_request_parse does: on CM_OK *out owns memory (gw_tokenize_request_fini); on
 * failure err is filled (400, or 413 past max_body_bytes) and *out holds nothing.
 */
cm_err gw_tokenize_parse(const char *body, size_t len, gw_api api, const gw_limits *lim,
                         gw_tokenize_request *out, gw_error *err);

/* gw_tokenize_request_fini frees what t owns and zeroes it; safe on a zeroed or failed one. */
void gw_tokenize_request_fini(gw_tokenize_request *t);

#endif /* GW_REQUEST_H */
