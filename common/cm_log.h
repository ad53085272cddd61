/*
 * cm_log: structured logs, one line per event, to stderr.
 *
 * Format is logfmt (key=value) by default or JSON lines (cm_log_set_json). Every line has
 * ts, level, component and msg; a request id field when given. Thread-safe: a line is
 * written with one write(2) so lines from different threads never interleave.
 */
#ifndef CM_LOG_H
#define CM_LOG_H

typedef enum cm_log_level {
    CM_LOG_DEBUG = 0,
    CM_LOG_INFO = 1,
    CM_LOG_WARN = 2,
    CM_LOG_ERROR = 3,
} cm_log_level;

/* Process-wide settings; call before starting threads. */
void cm_log_set_level(cm_log_level level);
void cm_log_set_json(int json);
void cm_log_set_component(const char *component); /* "gateway", "worker", ... (copied) */
/* cm_log_parse_level maps "debug"/"info"/"warn"/"error"; returns -1 on anything else. */
int cm_log_parse_level(const char *s);

/* cm_log_enabled returns 1 when a line at level would be written; use it to skip building
 * costly field values for debug lines. Any thread. */
int cm_log_enabled(cm_log_level level);

/*
 * cm_log writes one line: msg, then the extra fields given as a NULL-terminated list of
 * key, value string pairs, e.g.
 *   cm_log(CM_LOG_INFO, req_id, "request done", "status", "200", "tokens", buf, NULL);
 * request_id may be NULL. Values are quoted/escaped as the format needs.
 */
void cm_log(cm_log_level level, const char *request_id, const char *msg, ...)
    __attribute__((sentinel));

/* cm_logf: printf-style message with no extra fields. */
void cm_logf(cm_log_level level, const char *request_id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif /* CM_LOG_H */
