/*
 * gw_limits: the bounds on one request (the config's limits: section) and their defaults.
 * Its own header so that the configuration needs nothing of the request parser (JSON, the
 * wire Submit).
 */
#ifndef GW_LIMITS_H
#define GW_LIMITS_H

#include <stddef.h>
#include <stdint.h>

/* The defaults, one place: gw_limits_default and the config's option table both use them
 * (plain decimal literals: the table writes them as strings with CM_OPT_DEF). */
#define GW_LIMIT_DEF_MAX_BODY_BYTES 1048576
#define GW_LIMIT_DEF_MAX_MESSAGES 256
#define GW_LIMIT_DEF_MAX_PROMPT_CHARS 262144
#define GW_LIMIT_DEF_MAX_TOKENS 4096
#define GW_LIMIT_DEF_DEFAULT_MAX_TOKENS 0 /* as OpenAI: up to the remaining context */
#define GW_LIMIT_DEF_MAX_N 8
#define GW_LIMIT_DEF_MAX_STOP 4
#define GW_LIMIT_DEF_MAX_STOP_CHARS 256
#define GW_LIMIT_DEF_MAX_LOGIT_BIAS 300
#define GW_LIMIT_DEF_MAX_PROMPT_TOKEN_IDS 32768

/* Bounds on a request, from the config (limits:). Zero fields are not allowed: use defaults. */
typedef struct gw_limits {
    size_t max_body_bytes;         /* 413 past it (checked by the HTTP layer too) */
    uint32_t max_messages;         /* chat messages per request */
    size_t max_prompt_chars;       /* sum of message contents / prompt length, in bytes */
    uint32_t max_tokens;           /* largest max_tokens accepted */
    uint32_t default_max_tokens;   /* used when a chat request gives none; 0 = none: up to the
                                      remaining context, as OpenAI (the default) */
    uint32_t max_n;                /* largest n */
    uint32_t max_stop;             /* stop strings per request */
    uint32_t max_stop_chars;       /* bytes per stop string */
    uint32_t max_logit_bias;       /* logit_bias entries */
    uint32_t max_prompt_token_ids; /* pre-tokenized prompt length */
} gw_limits;

/* gw_limits_default fills the defaults documented in sluice-gateway.example.yaml. */
void gw_limits_default(gw_limits *l);

#endif /* GW_LIMITS_H */
