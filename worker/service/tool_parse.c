/*
 * wk_tool_parser: see tool_parse.h. A byte-level state machine; every byte is looked at once.
 */
#include "tool_parse.h"

#include <stdio.h>
#include <string.h>

#include "chat_template.h"

#define FEED_MAX_BYTES (64u << 10)

enum {
    S_START,   /* nothing decided yet (or between calls: S_BETWEEN) */
    S_TEXT,    /* plain content to the end */
    S_HEAD,    /* inside <tool_call>, before the arguments value */
    S_ARGS,    /* inside the arguments value */
    S_TAIL,    /* after the arguments, up to </tool_call> */
    S_BETWEEN, /* after a call: whitespace, then maybe another call */
};

static const char OPEN[] = "<tool_call>";
static const char CLOSE[] = "</tool_call>";

void wk_tool_parser_init(wk_tool_parser *p, uint64_t seed) {
    memset(p, 0, sizeof *p);
    p->state = S_START;
    p->rng = seed;
    cm_buf_init(&p->content, FEED_MAX_BYTES);
    cm_buf_init(&p->args, FEED_MAX_BYTES);
}

void wk_tool_parser_fini(wk_tool_parser *p) {
    cm_buf_fini(&p->content);
    cm_buf_fini(&p->args);
}

uint32_t wk_tool_parser_n_calls(const wk_tool_parser *p) {
    return p->n_calls;
}

/* splitmix64: ids only need to differ, not to be secret. */
static uint64_t next_rand(wk_tool_parser *p) {
    uint64_t z = (p->rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static bool is_ws(char c) {
    return c == ' ' || c == '\n' || c == '\t' || c == '\r';
}

/* Opens a delta for call idx whose arguments start at the current end of p->args. */
static cm_err add_delta(wk_tool_parser *p, uint32_t idx, bool first) {
    if (p->n_deltas == WK_TOOL_PARSER_MAX_DELTAS)
        return CM_ERR_LIMIT;
    wk_wire_tool_delta *d = &p->deltas[p->n_deltas];
    memset(d, 0, sizeof *d);
    d->index = idx;
    if (first) {
        d->id = p->calls[idx].id;
        d->name = p->calls[idx].name;
    }
    p->delta_off[p->n_deltas++] = p->args.len;
    return CM_OK;
}

/* The head after "<tool_call>" is ready when it reads {"name": "NAME", "arguments": X with X
 * the first byte of the value; *name gets NAME. Whitespace between tokens is tolerated. */
static bool head_ready(const char *h, size_t n, char *name, size_t name_cap) {
    const char *a, *q, *end = h + n;
    size_t k = 0;
    if (n == 0 || (h[n - 1] != '{' && h[n - 1] != '['))
        return false;
    a = strstr(h, "\"arguments\"");
    q = strstr(h, "\"name\"");
    if (a == NULL || q == NULL || q > a)
        return false;
    for (a += 11; a < end - 1 && is_ws(*a); a++)
        ;
    if (a >= end - 1 || *a != ':')
        return false;
    for (a++; a < end - 1 && is_ws(*a); a++)
        ;
    if (a != end - 1)
        return false;
    for (q += 6; is_ws(*q); q++)
        ;
    if (*q != ':')
        return false;
    for (q++; is_ws(*q); q++)
        ;
    if (*q != '"')
        return false;
    for (q++; *q != '"' && *q != '\0' && k + 1 < name_cap; q++)
        name[k++] = *q;
    name[k] = '\0';
    return *q == '"' && k > 0;
}

static cm_err start_call(wk_tool_parser *p, const char *name) {
    static const char alnum[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    wk_tool_call_info *c = &p->calls[p->n_calls];
    memcpy(c->id, "call_", 5);
    for (int i = 0; i < 24; i++)
        c->id[5 + i] = alnum[next_rand(p) % (sizeof alnum - 1)];
    c->id[29] = '\0';
    snprintf(c->name, sizeof c->name, "%s", name);
    p->n_calls++;
    cm_err rv = add_delta(p, p->n_calls - 1, true);
    if (rv == CM_OK)
        rv = add_delta(p, p->n_calls - 1, false);
    return rv;
}

/* Bytes held back as a possible "<tool_call>" turned out to be content. */
static cm_err to_text(wk_tool_parser *p, const char *prefix, size_t n) {
    p->state = S_TEXT;
    return cm_buf_append(&p->content, prefix, n);
}

static cm_err feed_byte(wk_tool_parser *p, char c) {
    switch (p->state) {
    case S_TEXT:
        return cm_buf_append_byte(&p->content, c);
    case S_BETWEEN:
        if (p->n_hold == 0 && is_ws(c))
            return CM_OK;
        /* fall through */
    case S_START:
        p->hold[p->n_hold++] = c;
        if (memcmp(p->hold, OPEN, p->n_hold) != 0 || p->n_calls == WK_TOOL_PARSER_MAX_CALLS) {
            size_t n = p->n_hold;
            p->n_hold = 0;
            return to_text(p, p->hold, n);
        }
        if (p->n_hold == sizeof OPEN - 1) {
            p->n_hold = 0;
            p->n_head = 0;
            p->state = S_HEAD;
        }
        return CM_OK;
    case S_HEAD: {
        char name[65];
        if (p->n_head + 1 >= sizeof p->head) {
            /* Not the format: give the raw text back as content. */
            cm_err rv = to_text(p, OPEN, sizeof OPEN - 1);
            if (rv == CM_OK)
                rv = cm_buf_append(&p->content, p->head, p->n_head);
            if (rv == CM_OK)
                rv = cm_buf_append_byte(&p->content, c);
            return rv;
        }
        p->head[p->n_head++] = c;
        p->head[p->n_head] = '\0';
        if (!head_ready(p->head, p->n_head, name, sizeof name))
            return CM_OK;
        cm_err rv = start_call(p, name);
        if (rv != CM_OK)
            return rv;
        p->state = S_ARGS;
        p->depth = 1;
        p->in_string = p->escape = false;
        return cm_buf_append_byte(&p->args, c);
    }
    case S_ARGS: {
        cm_err rv = cm_buf_append_byte(&p->args, c);
        if (p->in_string) {
            if (p->escape)
                p->escape = false;
            else if (c == '\\')
                p->escape = true;
            else if (c == '"')
                p->in_string = false;
        } else if (c == '"') {
            p->in_string = true;
        } else if (c == '{' || c == '[') {
            p->depth++;
        } else if ((c == '}' || c == ']') && --p->depth == 0) {
            p->state = S_TAIL;
            p->n_tail = 0;
        }
        return rv;
    }
    case S_TAIL:
        /* A sliding window over the last bytes, enough to see "</tool_call>". */
        if (p->n_tail == sizeof p->tail) {
            memmove(p->tail, p->tail + 1, sizeof p->tail - 1);
            p->n_tail--;
        }
        p->tail[p->n_tail++] = c;
        if (p->n_tail >= sizeof CLOSE - 1 &&
            memcmp(p->tail + p->n_tail - (sizeof CLOSE - 1), CLOSE, sizeof CLOSE - 1) == 0) {
            p->state = S_BETWEEN;
            p->n_hold = 0;
        }
        return CM_OK;
    default:
        return CM_ERR_STATE;
    }
}

static void begin_feed(wk_tool_parser *p) {
    cm_buf_reset(&p->content);
    cm_buf_reset(&p->args);
    p->n_deltas = 0;
    /* A call in progress continues in this feed's first fragment. */
    if (p->state == S_ARGS)
        add_delta(p, p->n_calls - 1, false);
}

/* Points each delta at its fragment and drops empty continuation deltas. */
static void end_feed(wk_tool_parser *p) {
    size_t kept = 0;
    for (size_t i = 0; i < p->n_deltas; i++) {
        size_t end = i + 1 < p->n_deltas ? p->delta_off[i + 1] : p->args.len;
        wk_wire_tool_delta d = p->deltas[i];
        d.arguments = p->args.len ? p->args.data + p->delta_off[i] : "";
        d.arguments_len = end - p->delta_off[i];
        if (d.id == NULL && d.arguments_len == 0)
            continue;
        p->deltas[kept++] = d;
    }
    p->n_deltas = kept;
}

cm_err wk_tool_parser_feed(wk_tool_parser *p, const char *text, size_t len) {
    cm_err rv = CM_OK;
    begin_feed(p);
    for (size_t i = 0; i < len && rv == CM_OK; i++)
        rv = feed_byte(p, text[i]);
    end_feed(p);
    return rv;
}

cm_err wk_tool_parser_finish(wk_tool_parser *p) {
    cm_err rv = CM_OK;
    cm_buf_reset(&p->content);
    cm_buf_reset(&p->args);
    p->n_deltas = 0;
    if ((p->state == S_START || p->state == S_BETWEEN) && p->n_hold > 0)
        rv = to_text(p, p->hold, p->n_hold);
    else if (p->state == S_HEAD) {
        rv = to_text(p, OPEN, sizeof OPEN - 1);
        if (rv == CM_OK)
            rv = cm_buf_append(&p->content, p->head, p->n_head);
    }
    p->n_hold = 0;
    return rv;
}
