#include "lt_coldstart.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cm_clock.h"
#include "lt_run.h"
#include "lt_stats.h"

#define POLL_INTERVAL_MS 200
#define STOP_GRACE_MS 10000

static void stop_child(pid_t pid) {
    /* the whole process group: the command may be a script that started the server */
    kill(-pid, SIGTERM);
    int64_t deadline = cm_clock_mono_ms() + STOP_GRACE_MS;
    while (cm_clock_mono_ms() < deadline) {
        pid_t got = waitpid(pid, NULL, WNOHANG);
        if (got == pid || (got < 0 && errno == ECHILD)) {
            kill(-pid, SIGKILL); /* stragglers in the group, if any */
            return;
        }
        cm_clock_sleep_ms(50);
    }
    kill(-pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* one_request sends one measured request; *sample_out is its sample (ok or not). */
static cm_err one_request(const lt_args *a, lt_prompt_source *prompts, lt_stats *stats,
                          lt_sample *sample_out, char *err, size_t err_len) {
    lt_run_config cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.args = a;
    cfg.concurrency = 1;
    cfg.requests = 1;
    cfg.label = "cold-start";
    lt_stats_clear(stats);
    double duration = 0;
    cm_err rv = lt_run(&cfg, prompts, stats, &duration, err, err_len);
    if (rv != CM_OK) {
        return rv;
    }
    if (stats->n_samples != 1) {
        snprintf(err, err_len, "internal: expected one sample");
        return CM_ERR_INTERNAL;
    }
    *sample_out = stats->samples[0];
    return CM_OK;
}

cm_err lt_coldstart_run(const lt_args *a, lt_prompt_source *prompts, lt_coldstart_result *out,
                        char *err, size_t err_len) {
    memset(out, 0, sizeof(*out));
    lt_stats stats;
    cm_err rv = lt_stats_init(&stats, 4, LT_RUN_MAX_ITL_PER_REQUEST);
    if (rv != CM_OK) {
        return rv;
    }
    int64_t t0 = cm_clock_mono_ns();
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, err_len, "fork: %s", strerror(errno));
        lt_stats_fini(&stats);
        return CM_ERR_IO;
    }
    if (pid == 0) {
        setpgid(0, 0);
        /* the command's output goes to stderr: stdout carries only the report */
        dup2(STDERR_FILENO, STDOUT_FILENO);
        execl("/bin/sh", "sh", "-c", a->cold_start_cmd, (char *)NULL);
        _exit(127);
    }
    setpgid(pid, pid); /* also from the parent, so kill(-pid) works whoever runs first */
    int64_t deadline = t0 + (int64_t)(a->cold_start_timeout_s * 1e9);
    lt_sample x;
    memset(&x, 0, sizeof(x));
    int ready = 0;
    while (!ready) {
        int status = 0;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            snprintf(err, err_len, "the command exited (status %d) before serving a token",
                     WIFEXITED(status) ? WEXITSTATUS(status) : -1);
            rv = CM_ERR_CLOSED;
            lt_stats_fini(&stats);
            return rv;
        }
        if (cm_clock_mono_ns() >= deadline) {
            snprintf(err, err_len, "no successful request within %.0f s (last: HTTP %d)",
                     a->cold_start_timeout_s, x.http_status);
            rv = CM_ERR_TIMEOUT;
            goto fail;
        }
        int64_t sent_ns = cm_clock_mono_ns();
        rv = one_request(a, prompts, &stats, &x, err, err_len);
        if (rv != CM_OK) {
            goto fail;
        }
        out->attempts++;
        if (x.ok && x.ttft_ms >= 0) {
            out->ready_ms = (double)(sent_ns - t0) / 1e6 + x.ttft_ms;
            out->cold_ttft_ms = x.ttft_ms;
            out->cold_e2e_ms = x.e2e_ms;
            ready = 1;
        } else {
            cm_clock_sleep_ms(POLL_INTERVAL_MS);
        }
    }
    rv = one_request(a, prompts, &stats, &x, err, err_len);
    if (rv != CM_OK) {
        goto fail;
    }
    if (!x.ok) {
        snprintf(err, err_len, "the warm request failed (HTTP %d)", x.http_status);
        rv = CM_ERR_STATE;
        goto fail;
    }
    out->warm_ttft_ms = x.ttft_ms;
    out->warm_e2e_ms = x.e2e_ms;
    stop_child(pid);
    lt_stats_fini(&stats);
    return CM_OK;
fail:
    stop_child(pid);
    lt_stats_fini(&stats);
    return rv;
}
