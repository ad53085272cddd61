/*
 * libFuzzer driver for the gateway's request mapping: arbitrary bytes as the body of
 * /v1/chat/completions (first byte even) or /v1/completions (odd), through validation, then,
 * when accepted, packed to the wire Submit for two choices and unpacked again. Checks that a
 * refusal always names a 4xx status with a message, and that the packed Submit round-trips.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gw_error.h"
#include "gw_request.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    gw_limits lim;
    gw_request rq;
    gw_error err;
    gw_api api;
    char json[1024];
    if (size < 1)
        return 0;
    api = (data[0] & 1) ? GW_API_COMPLETIONS : GW_API_CHAT;
    gw_limits_default(&lim);
    lim.max_body_bytes = 64 * 1024;
    if (gw_request_parse((const char *)data + 1, size - 1, api, &lim, &rq, &err) != CM_OK) {
        if (err.status < 400 || err.status >= 600 || err.message[0] == '\0')
            abort();
        gw_error_json(&err, json, sizeof json);
        gw_request_fini(&rq);
        return 0;
    }
    for (uint32_t choice = 0; choice < 2; choice++) {
        gw_submit_ids ids = {.request_id = 42 + choice,
                             .choice = choice,
                             .tenant = "fuzz",
                             .gateway_id = "req-fuzz",
                             .deadline_unix_ms = 1};
        Sluice__Envelope wire;
        gw_request_envelope(&rq, &ids, &wire);
        size_t len = sluice__envelope__get_packed_size(&wire);
        uint8_t *buf = malloc(len);
        Sluice__Envelope *env;
        if (buf == NULL)
            break;
        if (sluice__envelope__pack(&wire, buf) != len)
            abort();
        env = sluice__envelope__unpack(NULL, len, buf);
        if (env == NULL || env->msg_case != SLUICE__ENVELOPE__MSG_SUBMIT ||
            env->submit->request_id != 42 + choice || env->submit->max_tokens != rq.max_tokens ||
            env->submit->n_messages != rq.submit.n_messages)
            abort();
        sluice__envelope__free_unpacked(env, NULL);
        free(buf);
    }
    gw_request_fini(&rq);
    return 0;
}
