#include "gw_limits.h"

void gw_limits_default(gw_limits *l) {
    l->max_body_bytes = 1u << 20;
    l->max_messages = 256;
    l->max_prompt_chars = 256 * 1024;
    l->max_tokens = 4096;
    l->default_max_tokens = 0; /* as OpenAI: up to the remaining context */
    l->max_n = 8;
    l->max_stop = 4;
    l->max_stop_chars = 256;
    l->max_logit_bias = 300;
    l->max_prompt_token_ids = 32768;
}
