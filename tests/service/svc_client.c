/*
 * sluice-svc-client: a tiny gateway stand-in for tests and by-hand poking at a worker.
 *
 *   sluice-svc-client ADDR [--prompt TEXT | --chat TEXT] [--max-tokens N] [--greedy]
 *                     [--count K] [--no-eos] [--hold]
 *
 * Submits K requests (ids 1..K), prints one line per event ("TOKENS id n", "FINISHED id
 * reason completion", "ERROR id code message") and, with --hold, then sleeps until killed
 * (the process test SIGKILLs it mid-stream to check that a lost gateway frees its requests).
 * Prints "SUBMITTED" once every Submit is sent. Exit 0 when every request ended, 3 on a
 * 60 s silence.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "svc_client.h"

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: sluice-svc-client ADDR [--prompt T|--chat T] [--max-tokens N] "
                        "[--greedy] [--count K] [--hold]\n");
        return 2;
    }
    svc_submit_opts o = {.prompt = "Once upon a time", .greedy = false};
    int count = 1;
    bool hold = false;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--prompt") == 0 && i + 1 < argc) {
            o.prompt = argv[++i];
        } else if (strcmp(argv[i], "--chat") == 0 && i + 1 < argc) {
            o.chat_user = argv[++i];
            o.prompt = NULL;
        } else if (strcmp(argv[i], "--max-tokens") == 0 && i + 1 < argc) {
            o.max_tokens = (uint32_t)atoi(argv[++i]);
        } else if (strcmp(argv[i], "--count") == 0 && i + 1 < argc) {
            count = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--greedy") == 0) {
            o.greedy = true;
        } else if (strcmp(argv[i], "--no-eos") == 0) {
            o.no_eos = true;
        } else if (strcmp(argv[i], "--hold") == 0) {
            hold = true;
        } else {
            fprintf(stderr, "unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    svc_client c;
    if (svc_client_open(&c, argv[1], 1, 10000) != 0) {
        fprintf(stderr, "cannot dial %s\n", argv[1]);
        return 1;
    }
    for (int i = 0; i < count; i++) {
        o.id = (uint64_t)i + 1;
        if (svc_client_submit(&c, &o) != 0) {
            fprintf(stderr, "submit failed\n");
            return 1;
        }
    }
    printf("SUBMITTED\n");
    fflush(stdout);
    int open = count;
    while (open > 0) {
        Sluice__Envelope *env = svc_client_next_event(&c, 60000);
        if (env == NULL) {
            fprintf(stderr, "timeout\n");
            return 3;
        }
        Sluice__Event *ev = env->event;
        switch (ev->kind_case) {
        case SLUICE__EVENT__KIND_TOKENS:
            printf("TOKENS %llu %zu\n", (unsigned long long)ev->request_id,
                   ev->tokens->n_token_ids);
            break;
        case SLUICE__EVENT__KIND_FINISHED:
            printf("FINISHED %llu %d %u\n", (unsigned long long)ev->request_id,
                   (int)ev->finished->reason, ev->finished->usage->completion_tokens);
            open--;
            break;
        case SLUICE__EVENT__KIND_ERROR:
            printf("ERROR %llu %u %s\n", (unsigned long long)ev->request_id, ev->error->code,
                   ev->error->message);
            open--;
            break;
        default:
            break;
        }
        fflush(stdout);
        sluice__envelope__free_unpacked(env, NULL);
    }
    while (hold)
        pause();
    svc_client_close(&c);
    return 0;
}
