/* lt_prompt: generated lengths, shared prefixes, JSONL parsing and its errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lt_prompt.h"

static size_t count_words(const char *s) {
    size_t n = 0;
    int in_word = 0;
    for (; *s; s++) {
        if (*s == ' ') {
            in_word = 0;
        } else if (!in_word) {
            in_word = 1;
            n++;
        }
    }
    return n;
}

static void test_generated_lengths(void **state) {
    (void)state;
    lt_prompt_source src;
    assert_int_equal(lt_prompt_source_init_generated(&src, 10, 20, 5, 7, 0, 1), CM_OK);
    for (int i = 0; i < 200; i++) {
        lt_prompt p;
        assert_int_equal(lt_prompt_next(&src, &p), CM_OK);
        size_t w = count_words(p.text);
        assert_true(w >= 10 && w <= 20);
        assert_int_equal(w, p.input_tokens_est);
        assert_true(p.max_tokens >= 5 && p.max_tokens <= 7);
        assert_true(p.text[0] != ' ');
        assert_null(p.messages);
        lt_prompt_fini(&p);
    }
    lt_prompt_source_fini(&src);
    assert_int_equal(lt_prompt_source_init_generated(&src, 0, 20, 5, 7, 0, 1), CM_ERR_INVALID);
    assert_int_equal(lt_prompt_source_init_generated(&src, 5, 4, 5, 7, 0, 1), CM_ERR_INVALID);
    assert_int_equal(lt_prompt_source_init_generated(&src, 5, 5, 5, 7, 1.5, 1), CM_ERR_INVALID);
}

static void test_shared_prefix(void **state) {
    (void)state;
    lt_prompt_source src;
    assert_int_equal(lt_prompt_source_init_generated(&src, 100, 100, 1, 1, 0.5, 9), CM_OK);
    lt_prompt a, b;
    assert_int_equal(lt_prompt_next(&src, &a), CM_OK);
    assert_int_equal(lt_prompt_next(&src, &b), CM_OK);
    /* the first 50 words are equal, the whole prompts are not */
    size_t off = 0, words = 0;
    while (words < 50) {
        assert_int_equal(a.text[off], b.text[off]);
        if (a.text[off] == ' ') {
            words++;
        }
        off++;
    }
    assert_string_not_equal(a.text, b.text);
    lt_prompt_fini(&a);
    lt_prompt_fini(&b);
    lt_prompt_source_fini(&src);
    /* same seed, same prompts: runs are reproducible */
    lt_prompt_source s1, s2;
    assert_int_equal(lt_prompt_source_init_generated(&s1, 30, 60, 1, 9, 0.2, 5), CM_OK);
    assert_int_equal(lt_prompt_source_init_generated(&s2, 30, 60, 1, 9, 0.2, 5), CM_OK);
    for (int i = 0; i < 20; i++) {
        assert_int_equal(lt_prompt_next(&s1, &a), CM_OK);
        assert_int_equal(lt_prompt_next(&s2, &b), CM_OK);
        assert_string_equal(a.text, b.text);
        assert_int_equal(a.max_tokens, b.max_tokens);
        lt_prompt_fini(&a);
        lt_prompt_fini(&b);
    }
    lt_prompt_source_fini(&s1);
    lt_prompt_source_fini(&s2);
}

static char *write_tmp(const char *content) {
    char *path = strdup("/tmp/lt_prompt_test_XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs(content, f);
    fclose(f);
    return path;
}

static void test_jsonl(void **state) {
    (void)state;
    char *path = write_tmp("{\"prompt\": \"hello there\", \"max_tokens\": 9}\n"
                           "\n"
                           "{\"messages\": [{\"role\": \"system\", \"content\": \"be brief\"},"
                           " {\"role\": \"user\", \"content\": \"hi\"}]}\r\n");
    lt_prompt_source src;
    char err[256];
    assert_int_equal(lt_prompt_source_init_file(&src, path, LT_API_CHAT, 4, 4, 0, err, 256), CM_OK);
    assert_int_equal(src.n_file_prompts, 2);
    lt_prompt p;
    assert_int_equal(lt_prompt_next(&src, &p), CM_OK);
    assert_string_equal(p.text, "hello there");
    assert_int_equal(p.max_tokens, 9);
    lt_prompt_fini(&p);
    assert_int_equal(lt_prompt_next(&src, &p), CM_OK);
    assert_null(p.text);
    assert_int_equal(json_array_size(p.messages), 2);
    assert_int_equal(p.max_tokens, 4);
    lt_prompt_fini(&p);
    assert_int_equal(lt_prompt_next(&src, &p), CM_OK); /* cycles */
    assert_string_equal(p.text, "hello there");
    lt_prompt_fini(&p);
    lt_prompt_source_fini(&src);
    /* the completions endpoint cannot use a messages-only line */
    assert_int_equal(lt_prompt_source_init_file(&src, path, LT_API_COMPLETIONS, 4, 4, 0, err, 256),
                     CM_ERR_FORMAT);
    assert_non_null(strstr(err, "line 3"));
    unlink(path);
    free(path);
}

static void expect_bad(const char *content, const char *needle) {
    char *path = write_tmp(content);
    lt_prompt_source src;
    char err[256];
    cm_err rv = lt_prompt_source_init_file(&src, path, LT_API_CHAT, 4, 4, 0, err, 256);
    assert_int_not_equal(rv, CM_OK);
    assert_non_null(strstr(err, needle));
    assert_null(src.file_prompts);
    unlink(path);
    free(path);
}

static void test_jsonl_errors(void **state) {
    (void)state;
    expect_bad("{\"prompt\": \"ok\"}\n{not json\n", "line 2: invalid JSON");
    expect_bad("[1,2]\n", "line 1: expected a JSON object");
    expect_bad("{\"prompt\": 5}\n", "\"prompt\" must be a string");
    expect_bad("{\"messages\": []}\n", "\"messages\" must be");
    expect_bad("{\"messages\": [{\"role\": \"user\"}]}\n", "\"messages\" must be");
    expect_bad("{\"text\": \"x\"}\n", "needs \"prompt\" or \"messages\"");
    expect_bad("{\"prompt\": \"x\", \"max_tokens\": 0}\n", "\"max_tokens\" must be");
    expect_bad("\n\n", "holds no prompts");
    lt_prompt_source src;
    char err[256];
    assert_int_equal(
        lt_prompt_source_init_file(&src, "/nonexistent/p.jsonl", LT_API_CHAT, 4, 4, 0, err, 256),
        CM_ERR_IO);
    assert_non_null(strstr(err, "cannot open"));
}

static void test_jsonl_line_cap(void **state) {
    (void)state;
    size_t n = LT_PROMPT_MAX_LINE + 100;
    char *big = malloc(n + 32);
    strcpy(big, "{\"prompt\": \"");
    memset(big + 12, 'a', n);
    strcpy(big + 12 + n, "\"}\n");
    expect_bad(big, "longer than");
    free(big);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generated_lengths),
        cmocka_unit_test(test_shared_prefix),
        cmocka_unit_test(test_jsonl),
        cmocka_unit_test(test_jsonl_errors),
        cmocka_unit_test(test_jsonl_line_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
