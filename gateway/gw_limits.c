#include "gw_limits.h"

void gw_limits_default(gw_limits *l) {
    l->max_body_bytes = GW_LIMIT_DEF_MAX_BODY_BYTES;
    l->max_messages = GW_LIMIT_DEF_MAX_MESSAGES;
    l->max_prompt_chars = GW_LIMIT_DEF_MAX_PROMPT_CHARS;
    l->max_tokens = GW_LIMIT_DEF_MAX_TOKENS;
    l->default_max_tokens = GW_LIMIT_DEF_DEFAULT_MAX_TOKENS;
    l->max_n = GW_LIMIT_DEF_MAX_N;
    l->max_stop = GW_LIMIT_DEF_MAX_STOP;
    l->max_stop_chars = GW_LIMIT_DEF_MAX_STOP_CHARS;
    l->max_logit_bias = GW_LIMIT_DEF_MAX_LOGIT_BIAS;
    l->max_prompt_token_ids = GW_LIMIT_DEF_MAX_PROMPT_TOKEN_IDS;
}
