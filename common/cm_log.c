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

#define LINE_RESERVE 32 /* room for ` truncated=true\n` or `,"truncated":true}\n` */

static void put(line *l, const char *s, size_t n) {
    size_t room = sizeof l->buf - LINE_RESERVE - l->len;
    if (n > room) {
        n = room;
        l->truncated = 1;
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

static void put_field(line *l, int json, const char *key, const char *value) {
    if (value == NULL) {
        value = "";
    }
    if (json) {
        puts_(l, ",\"");
        put_escaped(l, key);
        puts_(l, "\":\"");
        put_escaped(l, value);
        putc_(l, '"');
        return;
    }
    putc_(l, ' ');
    put_escaped(l, key);
    putc_(l, '=');
    if (logfmt_needs_quotes(value)) {
        putc_(l, '"');
        put_escaped(l, value);
        putc_(l, '"');
    } else {
        puts_(l, value);
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
        tail = l.truncated ? ",\"truncated\":\"true\"}\n" : "}\n";
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
