/*
 * wk_wire: decoding hostile bytes (garbage, empty, wrong oneof, contradictory and oversized
 * fields) and round trips of everything the worker encodes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "wire.h"

static uint8_t *pack(const Sluice__Envelope *env, size_t *len) {
    *len = sluice__envelope__get_packed_size(env);
    uint8_t *buf = malloc(*len + 1);
    sluice__envelope__pack(env, buf);
    return buf;
}

static cm_err decode_submit(Sluice__Submit *s, wk_wire_in *in, char *err, size_t errlen) {
    Sluice__Envelope env = SLUICE__ENVELOPE__INIT;
    env.msg_case = SLUICE__ENVELOPE__MSG_SUBMIT;
    env.submit = s;
    size_t len;
    uint8_t *buf = pack(&env, &len);
    cm_err rv = wk_wire_decode(buf, len, NULL, in, err, errlen);
    free(buf);
    return rv;
}

static void test_garbage_and_empty(void **state) {
    (void)state;
    wk_wire_in in;
    char err[256];
    assert_int_equal(wk_wire_decode("", 0, NULL, &in, err, sizeof err), CM_ERR_FORMAT);
    assert_false(in.has_request_id);
    assert_null(in.env);
    /* Many random buffers: never a crash, never an accepted Submit without checks. */
    srand(1234);
    uint8_t buf[256];
    int accepted = 0;
    for (int i = 0; i < 20000; i++) {
        size_t n = (size_t)(rand() % (int)sizeof buf);
        for (size_t k = 0; k < n; k++)
            buf[k] = (uint8_t)rand();
        cm_err rv = wk_wire_decode(buf, n, NULL, &in, err, sizeof err);
        if (rv == CM_OK) {
            accepted++;
            assert_non_null(in.env);
            assert_int_not_equal(in.kind, WK_WIRE_NONE);
            if (in.kind == WK_WIRE_SUBMIT) {
                const Sluice__Submit *s = in.env->submit;
                int forms = (s->n_messages > 0) + (s->prompt != NULL) + (s->n_prompt_token_ids > 0);
                assert_int_equal(forms, 1);
            }
            wk_wire_in_free(&in);
        } else {
            assert_null(in.env);
        }
    }
    assert_true(accepted < 20000);
}

static void test_oversize_message(void **state) {
    (void)state;
    wk_wire_limits lim;
    wk_wire_limits_init(&lim);
    lim.max_message_bytes = 16;
    uint8_t buf[64] = {0};
    wk_wire_in in;
    char err[256];
    assert_int_equal(wk_wire_decode(buf, sizeof buf, &lim, &in, err, sizeof err), CM_ERR_LIMIT);
    assert_non_null(strstr(err, "exceeds"));
}

static void test_submit_forms(void **state) {
    (void)state;
    wk_wire_in in;
    char err[256];
    Sluice__Submit s = SLUICE__SUBMIT__INIT;
    s.request_id = 42;
    /* none */
    assert_int_equal(decode_submit(&s, &in, err, sizeof err), CM_ERR_INVALID);
    assert_true(in.has_request_id);
    assert_int_equal(in.request_id, 42);
    assert_non_null(strstr(err, "exactly one"));
    /* two */
    int32_t ids[] = {1, 2};
    s.prompt = (char *)"hi";
    s.n_prompt_token_ids = 2;
    s.prompt_token_ids = ids;
    assert_int_equal(decode_submit(&s, &in, err, sizeof err), CM_ERR_INVALID);
    /* one */
    s.n_prompt_token_ids = 0;
    assert_int_equal(decode_submit(&s, &in, err, sizeof err), CM_OK);
    assert_int_equal(in.kind, WK_WIRE_SUBMIT);
    assert_string_equal(in.env->submit->prompt, "hi");
    wk_wire_in_free(&in);
    assert_null(in.env);
}

static void test_submit_bounds(void **state) {
    (void)state;
    wk_wire_in in;
    char err[256];
    Sluice__Submit s = SLUICE__SUBMIT__INIT;
    s.request_id = 9;
    s.prompt = (char *)"x";
    char *stops[WK_MAX_STOP_STRINGS + 1];
    for (int i = 0; i <= WK_MAX_STOP_STRINGS; i++)
        stops[i] = (char *)"stop";
    s.n_stop = WK_MAX_STOP_STRINGS + 1;
    s.stop = stops;
    assert_int_equal(decode_submit(&s, &in, err, sizeof err), CM_ERR_LIMIT);
    assert_int_equal(in.request_id, 9);
    s.n_stop = 1;
    stops[0] = (char *)"";
    assert_int_equal(decode_submit(&s, &in, err, sizeof err), CM_ERR_INVALID);
    s.n_stop = 0;
    /* a tenant longer than the engine's 63 bytes */
    char tenant[100];
    memset(tenant, 't', sizeof tenant - 1);
    tenant[99] = '\0';
    s.tenant = tenant;
    assert_int_equal(decode_submit(&s, &in, err, sizeof err), CM_ERR_LIMIT);
    s.tenant = NULL;
    /* too many logit biases */
    Sluice__SamplingParams sp = SLUICE__SAMPLING_PARAMS__INIT;
    Sluice__LogitBias lb = SLUICE__LOGIT_BIAS__INIT;
    Sluice__LogitBias *lbs[WK_MAX_LOGIT_BIAS + 1];
    for (int i = 0; i <= WK_MAX_LOGIT_BIAS; i++)
        lbs[i] = &lb;
    sp.n_logit_bias = WK_MAX_LOGIT_BIAS + 1;
    sp.logit_bias = lbs;
    s.sampling = &sp;
    assert_int_equal(decode_submit(&s, &in, err, sizeof err), CM_ERR_LIMIT);
    assert_non_null(strstr(err, "logit_bias"));
    s.sampling = NULL;
    /* the prompt byte bound */
    wk_wire_limits lim;
    wk_wire_limits_init(&lim);
    lim.max_prompt_bytes = 4;
    s.prompt = (char *)"12345";
    Sluice__Envelope env = SLUICE__ENVELOPE__INIT;
    env.msg_case = SLUICE__ENVELOPE__MSG_SUBMIT;
    env.submit = &s;
    size_t len;
    uint8_t *buf = pack(&env, &len);
    assert_int_equal(wk_wire_decode(buf, len, &lim, &in, err, sizeof err), CM_ERR_LIMIT);
    free(buf);
    /* too many messages */
    lim.max_prompt_bytes = 1024;
    lim.max_messages = 2;
    Sluice__ChatMessage m = SLUICE__CHAT_MESSAGE__INIT;
    m.role = (char *)"user";
    m.content = (char *)"hi";
    Sluice__ChatMessage *ms[3] = {&m, &m, &m};
    s.prompt = NULL;
    s.n_messages = 3;
    s.messages = ms;
    buf = pack(&env, &len);
    assert_int_equal(wk_wire_decode(buf, len, &lim, &in, err, sizeof err), CM_ERR_LIMIT);
    free(buf);
}

static void test_other_kinds(void **state) {
    (void)state;
    wk_wire_in in;
    char err[256];
    /* Hello */
    wk_wire_hello_info hi = {.model = "m",
                             .backend = "cpu",
                             .instance_id = "h:1:2",
                             .max_context_tokens = 8192,
                             .max_batch_tokens = 512,
                             .max_waiting = 1024};
    wk_wire_buf b;
    assert_int_equal(wk_wire_encode_hello(&hi, &b), CM_OK);
    assert_int_equal(wk_wire_decode(b.data, b.len, NULL, &in, err, sizeof err), CM_OK);
    assert_int_equal(in.kind, WK_WIRE_HELLO);
    assert_int_equal(in.env->hello->protocol_version, WK_WIRE_PROTOCOL_VERSION);
    assert_string_equal(in.env->hello->model, "m");
    assert_int_equal(in.env->hello->max_context_tokens, 8192);
    wk_wire_in_free(&in);
    wk_wire_buf_free(&b);
    /* Cancel */
    Sluice__Cancel c = SLUICE__CANCEL__INIT;
    c.request_id = 77;
    Sluice__Envelope env = SLUICE__ENVELOPE__INIT;
    env.msg_case = SLUICE__ENVELOPE__MSG_CANCEL;
    env.cancel = &c;
    size_t len;
    uint8_t *buf = pack(&env, &len);
    assert_int_equal(wk_wire_decode(buf, len, NULL, &in, err, sizeof err), CM_OK);
    assert_int_equal(in.kind, WK_WIRE_CANCEL);
    assert_int_equal(in.request_id, 77);
    wk_wire_in_free(&in);
    free(buf);
    /* Stats / Drain sent to a worker: valid, ignored. */
    assert_int_equal(wk_wire_encode_drain(5000, &b), CM_OK);
    assert_int_equal(wk_wire_decode(b.data, b.len, NULL, &in, err, sizeof err), CM_OK);
    assert_int_equal(in.kind, WK_WIRE_IGNORED);
    assert_int_equal(in.env->drain->timeout_ms, 5000);
    wk_wire_in_free(&in);
    wk_wire_buf_free(&b);
}

static void test_encode_events(void **state) {
    (void)state;
    wk_wire_buf b;
    wk_wire_in in;
    char err[256];
    int32_t ids[] = {5, 6};
    wk_sample_result lp[2];
    memset(lp, 0, sizeof lp);
    lp[0].token_id = 5;
    lp[0].logprob = -0.5f;
    lp[0].n_top = 2;
    lp[0].top[0] = (wk_logprob_entry){5, -0.5f};
    lp[0].top[1] = (wk_logprob_entry){9, -1.5f};
    lp[1].token_id = 6;
    lp[1].logprob = -0.25f;
    wk_event ev = {.kind = WK_EVENT_TOKENS,
                   .token_ids = ids,
                   .n_tokens = 2,
                   .text = "héllo",
                   .text_len = strlen("héllo"),
                   .logprobs = lp};
    assert_int_equal(wk_wire_encode_event(&ev, 1234, NULL, &b), CM_OK);
    Sluice__Envelope *env = sluice__envelope__unpack(NULL, b.len, b.data);
    assert_non_null(env);
    assert_int_equal(env->msg_case, SLUICE__ENVELOPE__MSG_EVENT);
    assert_int_equal(env->event->request_id, 1234);
    assert_int_equal(env->event->kind_case, SLUICE__EVENT__KIND_TOKENS);
    Sluice__Tokens *t = env->event->tokens;
    assert_int_equal(t->n_token_ids, 2);
    assert_int_equal(t->token_ids[1], 6);
    assert_string_equal(t->text, "héllo");
    assert_int_equal(t->n_logprobs, 2);
    assert_int_equal(t->logprobs[0]->n_top, 2);
    assert_int_equal(t->logprobs[0]->top[1]->token_id, 9);
    assert_true(t->logprobs[1]->logprob == -0.25f);
    sluice__envelope__free_unpacked(env, NULL);
    wk_wire_buf_free(&b);

    wk_event fin = {
        .kind = WK_EVENT_FINISHED,
        .finish_reason = WK_FINISH_LENGTH,
        .usage = {.prompt_tokens = 7, .completion_tokens = 3, .cached_prompt_tokens = 2},
        .timing = {.queue_ms = 1.5},
        .text = "tail",
        .text_len = 4};
    assert_int_equal(wk_wire_encode_event(&fin, 8, NULL, &b), CM_OK);
    env = sluice__envelope__unpack(NULL, b.len, b.data);
    assert_non_null(env);
    Sluice__Finished *f = env->event->finished;
    assert_int_equal(f->reason, SLUICE__FINISH_REASON__FINISH_REASON_LENGTH);
    assert_int_equal(f->usage->prompt_tokens, 7);
    assert_int_equal(f->usage->completion_tokens, 3);
    assert_int_equal(f->usage->cached_prompt_tokens, 2);
    assert_string_equal(f->text, "tail");
    assert_true(f->timing->queue_ms == 1.5);
    sluice__envelope__free_unpacked(env, NULL);
    wk_wire_buf_free(&b);

    wk_event er = {.kind = WK_EVENT_ERROR, .err = CM_ERR_TIMEOUT, .message = "too late"};
    assert_int_equal(wk_wire_encode_event(&er, 3, NULL, &b), CM_OK);
    env = sluice__envelope__unpack(NULL, b.len, b.data);
    assert_int_equal(env->event->error->code, CM_ERR_TIMEOUT);
    assert_string_equal(env->event->error->message, "too late");
    sluice__envelope__free_unpacked(env, NULL);
    wk_wire_buf_free(&b);

    /* A worker-encoded event is not something a worker acts on. */
    assert_int_equal(wk_wire_encode_error(1, CM_ERR_CLOSED, NULL, &b), CM_OK);
    assert_int_equal(wk_wire_decode(b.data, b.len, NULL, &in, err, sizeof err), CM_OK);
    assert_int_equal(in.kind, WK_WIRE_IGNORED);
    assert_string_equal(in.env->event->error->message, cm_strerror(CM_ERR_CLOSED));
    wk_wire_in_free(&in);
    wk_wire_buf_free(&b);

    wk_wire_stats st = {
        .waiting = 1, .running = 2, .kv_blocks_free = 3, .kv_blocks_total = 4, .draining = true};
    assert_int_equal(wk_wire_encode_stats(&st, &b), CM_OK);
    env = sluice__envelope__unpack(NULL, b.len, b.data);
    assert_int_equal(env->stats->running, 2);
    assert_true(env->stats->draining);
    sluice__envelope__free_unpacked(env, NULL);
    wk_wire_buf_free(&b);
}

static void test_sampling(void **state) {
    (void)state;
    wk_sampling_params p;
    char err[128];
    assert_int_equal(wk_wire_sampling(NULL, 99, &p, err, sizeof err), CM_OK);
    assert_true(p.temperature == 1.0f);
    assert_int_equal(p.seed, 99);
    assert_false(p.logprobs);
    Sluice__SamplingParams sp = SLUICE__SAMPLING_PARAMS__INIT;
    sp.has_temperature = true;
    sp.temperature = 0;
    sp.has_seed = true;
    sp.seed = 5;
    sp.has_logprobs = true;
    sp.logprobs = 4; /* 3 alternatives */
    sp.has_top_k = true;
    sp.top_k = 40;
    assert_int_equal(wk_wire_sampling(&sp, 99, &p, err, sizeof err), CM_OK);
    assert_true(p.temperature == 0.0f);
    assert_int_equal(p.seed, 5);
    assert_true(p.logprobs);
    assert_int_equal(p.top_logprobs, 3);
    assert_int_equal(p.top_k, 40);
    sp.logprobs = WK_MAX_TOP_LOGPROBS + 2;
    assert_int_equal(wk_wire_sampling(&sp, 99, &p, err, sizeof err), CM_ERR_LIMIT);
}

static void test_tool_bounds(void **state) {
    (void)state;
    wk_wire_in in;
    char err[256];
    wk_wire_limits lim;
    wk_wire_limits_init(&lim);
    Sluice__ChatMessage m = SLUICE__CHAT_MESSAGE__INIT, *mp = &m;
    m.role = (char *)"assistant";
    m.content = (char *)"";
    Sluice__Submit s = SLUICE__SUBMIT__INIT;
    s.request_id = 3;
    s.n_messages = 1;
    s.messages = &mp;
    /* Fine: a tool and a history call. */
    Sluice__Tool tool = SLUICE__TOOL__INIT, *tp[130];
    tool.name = (char *)"f";
    tool.parameters_json = (char *)"{}";
    for (int i = 0; i < 130; i++)
        tp[i] = &tool;
    Sluice__ToolCall call = SLUICE__TOOL_CALL__INIT, *cp[70];
    call.name = (char *)"f";
    call.arguments_json = (char *)"{}";
    for (int i = 0; i < 70; i++)
        cp[i] = &call;
    s.n_tools = 1;
    s.tools = tp;
    m.n_tool_calls = 1;
    m.tool_calls = cp;
    assert_int_equal(decode_submit(&s, &in, err, sizeof err), CM_OK);
    wk_wire_in_free(&in);
    /* Too many tools, too many calls in one message. */
    s.n_tools = lim.max_tools + 1;
    assert_int_equal(decode_submit(&s, &in, err, sizeof err), CM_ERR_LIMIT);
    assert_non_null(strstr(err, "tools"));
    s.n_tools = 1;
    m.n_tool_calls = lim.max_tool_calls + 1;
    assert_int_equal(decode_submit(&s, &in, err, sizeof err), CM_ERR_LIMIT);
    m.n_tool_calls = 1;
    /* A name over 64 bytes, an empty one, a schema over the bound. */
    char name[80];
    memset(name, 'a', 65);
    name[65] = '\0';
    tool.name = name;
    assert_int_equal(decode_submit(&s, &in, err, sizeof err), CM_ERR_LIMIT);
    tool.name = (char *)"";
    assert_int_equal(decode_submit(&s, &in, err, sizeof err), CM_ERR_LIMIT);
    tool.name = (char *)"f";
    char *big = malloc(lim.max_schema_bytes + 2);
    memset(big, ' ', lim.max_schema_bytes + 1);
    big[lim.max_schema_bytes + 1] = '\0';
    Sluice__ResponseFormat rf = SLUICE__RESPONSE_FORMAT__INIT;
    rf.schema_json = big;
    s.response_format = &rf;
    assert_int_equal(decode_submit(&s, &in, err, sizeof err), CM_ERR_LIMIT);
    assert_non_null(strstr(err, "response_format"));
    s.response_format = NULL;
    call.arguments_json = big;
    assert_int_equal(decode_submit(&s, &in, err, sizeof err), CM_ERR_LIMIT);
    free(big);
}

static void test_encode_tool_events(void **state) {
    (void)state;
    wk_wire_buf b;
    int32_t ids[] = {7};
    wk_event ev = {
        .kind = WK_EVENT_TOKENS, .token_ids = ids, .n_tokens = 1, .text = "", .text_len = 0};
    /* Fragments are not NUL-terminated in the parser's buffer: only their length counts. */
    const char *buf = "{\"a\": 1}XXXX";
    wk_wire_tool_delta d[2] = {
        {.index = 0, .id = "call_x", .name = "f", .arguments = buf, .arguments_len = 0},
        {.index = 0, .arguments = buf, .arguments_len = 8}};
    assert_int_equal(wk_wire_encode_event_tools(&ev, 5, NULL, d, 2, false, &b), CM_OK);
    Sluice__Envelope *env = sluice__envelope__unpack(NULL, b.len, b.data);
    assert_non_null(env);
    Sluice__Tokens *t = env->event->tokens;
    assert_int_equal(t->n_tool_calls, 2);
    assert_string_equal(t->tool_calls[0]->id, "call_x");
    assert_string_equal(t->tool_calls[0]->name, "f");
    assert_string_equal(t->tool_calls[0]->arguments, "");
    assert_null(t->tool_calls[1]->id);
    assert_string_equal(t->tool_calls[1]->arguments, "{\"a\": 1}");
    sluice__envelope__free_unpacked(env, NULL);
    wk_wire_buf_free(&b);
    /* Finished: TOOL_CALLS replaces the engine's stop. */
    wk_event fe = {.kind = WK_EVENT_FINISHED, .finish_reason = WK_FINISH_STOP};
    assert_int_equal(wk_wire_encode_event_tools(&fe, 5, NULL, NULL, 0, true, &b), CM_OK);
    env = sluice__envelope__unpack(NULL, b.len, b.data);
    assert_non_null(env);
    assert_int_equal(env->event->finished->reason, SLUICE__FINISH_REASON__FINISH_REASON_TOOL_CALLS);
    sluice__envelope__free_unpacked(env, NULL);
    wk_wire_buf_free(&b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_garbage_and_empty),  cmocka_unit_test(test_oversize_message),
        cmocka_unit_test(test_submit_forms),       cmocka_unit_test(test_submit_bounds),
        cmocka_unit_test(test_other_kinds),        cmocka_unit_test(test_encode_events),
        cmocka_unit_test(test_sampling),           cmocka_unit_test(test_tool_bounds),
        cmocka_unit_test(test_encode_tool_events),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
