/* sluice-gateway: OpenAI-compatible HTTP front of Sluice. See docs/gateway.md. */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "cm_log.h"
#include "gw_config.h"
#include "gw_server.h"

/* Signals are taken by a dedicated thread with sigwait, so no handler runs async code. */
static void *signal_thread(void *arg) {
    gw_server *s = arg;
    sigset_t set;
    int sig;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    if (sigwait(&set, &sig) == 0) {
        cm_logf(CM_LOG_INFO, NULL, "signal %d: stopping", sig);
        gw_server_stop(s);
    }
    return NULL;
}

int main(int argc, char **argv) {
    gw_config *cfg = NULL;
    gw_server *srv = NULL;
    char err[512];
    sigset_t set;
    pthread_t sig_tid;
    cm_err rv;

    cm_log_set_component("gateway");
    rv = gw_config_load(argc, argv, &cfg, err, sizeof err);
    if (rv == CM_ERR_CANCELLED)
        return 0;
    if (rv != CM_OK) {
        fprintf(stderr, "sluice-gateway: %s\n", err);
        return 2;
    }
    if (cfg->log_level != NULL)
        cm_log_set_level((cm_log_level)cm_log_parse_level(cfg->log_level));
    cm_log_set_json(cfg->log_json);
    signal(SIGPIPE, SIG_IGN);
    /* Block the stop signals in every thread; signal_thread takes them. */
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    err[0] = '\0';
    rv = gw_server_create(cfg, &srv, err, sizeof err);
    if (rv != CM_OK) {
        fprintf(stderr, "sluice-gateway: %s\n", err);
        gw_config_free(cfg);
        return 1;
    }
    pthread_create(&sig_tid, NULL, signal_thread, srv);
    pthread_detach(sig_tid);
    gw_server_run(srv);
    cm_log(CM_LOG_INFO, NULL, "gateway stopped", NULL);
    gw_server_destroy(srv);
    gw_config_free(cfg);
    return 0;
}
