/*
 * cm_log: lines are built in a fixed stack buffer (CM_LOG_LINE_MAX) and written with a single
 * write(2) to stderr. Over-long lines are cut and marked with truncated=true so one huge value
 * can neither allocate nor split a line. Settings are process-wide and meant to be set once
 * at start; they are atomics so a late change is still race-free.
 */
#include "cm_log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CM_LOG_LINE_MAX 8192
#define CM_LOG_COMPONENT_MAX 32

static atomic_int log_level = CM_LOG_INFO;
static atomic_int log_json = 0;
/* Written only by cm_log_set_component, which must run before threads start. */
static char log_component[CM_LOG_COMPONENT_MAX] = "sluice";

void cm_log_set_level(cm_log_level level) {
    atomic_store(&log_level, (int)level);
}

void cm_log_set_json(int json) {
    atomic_store(&log_json, json != 0);
}

void cm_log_set_component(const char *component) {
    if (component == NULL) {
        return;
    }
    snprintf(log_component, sizeof log_component, "%s", component);
}

int cm_log_parse_level(const char *s) {
    static const char *const names[] = {"debug", "info", "warn", "error"};
    if (s == NULL) {
        return -1;
    }
    for (int i = 0; i < 4; i++) {
        if (strcmp(s, names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

int cm_log_enabled(cm_log_level level) {
    return (int)level >= atomic_load(&log_level);
}

static const char *level_name(cm_log_level level) {
    switch (level) {
    case CM_LOG_DEBUG:
        return "debug";
    case CM_LOG_INFO:
        return "info";
    case CM_LOG_WARN:
        return "warn";
    case CM_LOG_ERROR:
        return "error";
    }
    return "unknown";
}

/* A line being built; once full, further text is dropped and truncated is set. Keep room
 * for the closing of the line (suffix) so a cut line still ends cleanly. */
typedef struct line {
    char buf[CM_LOG_LINE_MAX];
    size_t len;
    int truncated;
} line;

/* Room kept at the end for a closing quote and ` truncated=true\n` or `,"truncated":true}\n`. */
#define LINE_RESERVE 32

/* put appends all n bytes or none (so an escape like \u0001 is never cut in half); once
 * anything did not fit, the line is truncated and nothing more is added. */
static void put(line *l, const char *s, size_t n) {
    if (l->truncated || n > sizeof l->buf - LINE_RESERVE - l->len) {
        l->truncated = 1;
        return;
    }
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void puts_(line *l, const char *s) {
    put(l, s, strlen(s));
}

static void putc_(line *l, char c) {
    put(l, &c, 1);
}

/* trim_utf8 drops a multi-byte UTF-8 character left incomplete by a cut at the end of the
 * line (never before start), so a truncated value is still valid UTF-8. */
static void trim_utf8(line *l, size_t start) {
    size_t i = l->len;
    while (i > start && i + 3 >= l->len && ((unsigned char)l->buf[i - 1] & 0xC0) == 0x80) {
        i--;
    }
    if (i == start || i + 4 < l->len) {
        return;
    }
    unsigned char lead = (unsigned char)l->buf[i - 1];
    size_t want = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
    if (want > 1 && l->len - (i - 1) < want) {
        l->len = i - 1;
    }
}

static int logfmt_needs_quotes(const char *s) {
    if (*s == '\0') {
        return 1;
    }
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p <= ' ' || *p == '=' || *p == '"' || *p == '\\' || *p == 0x7f) {
            return 1;
        }
    }
    return 0;
}

/* Escapes shared by logfmt's quoted strings and JSON strings: \" \\ \n \r \t and \u00XX for
 * other control bytes. Non-ASCII bytes pass through (values are expected to be UTF-8). */
static void put_escaped(line *l, const char *s) {
    char tmp[8];
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"':
            puts_(l, "\\\"");
            break;
        case '\\':
            puts_(l, "\\\\");
            break;
        case '\n':
            puts_(l, "\\n");
            break;
        case '\r':
            puts_(l, "\\r");
            break;
        case '\t':
            puts_(l, "\\t");
            break;
        default:
            if (*p < 0x20 || *p == 0x7f) {
                snprintf(tmp, sizeof tmp, "\\u%04x", *p);
                puts_(l, tmp);
            } else {
                putc_(l, (char)*p);
            }
        }
        if (l->truncated) {
            return;
        }
    }
}

/*
 * put_field appends one key/value. A field whose key part does not fit is dropped whole; a
 * value that does not fit is cut (at a character boundary) and its quote still closed, using
 * the reserve, so even a truncated line is well-formed logfmt or JSON.
 */
static void put_field(line *l, int json, const char *key, const char *value) {
    if (value == NULL) {
        value = "";
    }
    size_t mark = l->len;
    int quoted = json || logfmt_needs_quotes(value);
    if (json) {
        puts_(l, ",\"");
        put_escaped(l, key);
        puts_(l, "\":\"");
    } else {
        putc_(l, ' ');
        put_escaped(l, key);
        putc_(l, '=');
        if (quoted) {
            putc_(l, '"');
        }
    }
    if (l->truncated) {
        l->len = mark;
        return;
    }
    size_t value_start = l->len;
    /* put_escaped copies plain bytes one by one, so unquoted logfmt values go through it too
     * and can be cut anywhere. */
    put_escaped(l, value);
    if (l->truncated) {
        trim_utf8(l, value_start);
    }
    if (quoted) {
        putc_(l, '"');
        if (l->truncated) {
            l->buf[l->len++] = '"'; /* into the reserve: only this and the tail go there */
        }
    }
}

static void write_all(const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return; /* nowhere left to report a failing stderr */
        }
        p += w;
        n -= (size_t)w;
    }
}

static void emit(cm_log_level level, const char *request_id, const char *msg, va_list *fields) {
    line l;
    l.len = 0;
    l.truncated = 0;
    int json = atomic_load(&log_json);

    struct timespec ts;
    struct tm tm;
    char tsbuf[64];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(tsbuf, sizeof tsbuf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (int)(ts.tv_nsec / 1000000) % 1000);

    if (json) {
        puts_(&l, "{\"ts\":\"");
        puts_(&l, tsbuf);
        putc_(&l, '"');
    } else {
        puts_(&l, "ts=");
        puts_(&l, tsbuf);
    }
    put_field(&l, json, "level", level_name(level));
    put_field(&l, json, "component", log_component);
    if (request_id != NULL) {
        put_field(&l, json, "request_id", request_id);
    }
    put_field(&l, json, "msg", msg);
    if (fields != NULL) {
        for (;;) {
            const char *key = va_arg(*fields, const char *);
            if (key == NULL) {
                break;
            }
            const char *value = va_arg(*fields, const char *);
            put_field(&l, json, key, value);
        }
    }
    /* The reserve keeps room for this tail even when the body was cut. */
    const char *tail;
    if (json) {
        tail = l.truncated ? ",\"truncated\":true}\n" : "}\n";
    } else {
        tail = l.truncated ? " truncated=true\n" : "\n";
    }
    size_t tn = strlen(tail);
    memcpy(l.buf + l.len, tail, tn);
    l.len += tn;
    write_all(l.buf, l.len);
}

void cm_log(cm_log_level level, const char *request_id, const char *msg, ...) {
    if ((int)level < atomic_load(&log_level)) {
        return;
    }
    va_list ap;
    va_start(ap, msg);
    emit(level, request_id, msg, &ap);
    va_end(ap);
}

void cm_logf(cm_log_level level, const char *request_id, const char *fmt, ...) {
    if ((int)level < atomic_load(&log_level)) {
        return;
    }
    char msg[CM_LOG_LINE_MAX / 2];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    emit(level, request_id, msg, NULL);
}
