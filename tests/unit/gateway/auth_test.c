/* gw_auth: bearer parsing, lookup by sha256, config digests, disabled mode. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "gw_auth.h"

static void test_bearer(void **state) {
    const char *key;
    size_t len;
    (void)state;
    assert_int_equal(gw_auth_bearer("Bearer sk-1", 11, &key, &len), 0);
    assert_int_equal(len, 4);
    assert_memory_equal(key, "sk-1", 4);
    assert_int_equal(gw_auth_bearer("bearer   sk-2  ", 15, &key, &len), 0);
    assert_int_equal(len, 4);
    assert_int_equal(gw_auth_bearer("Basic abc", 9, &key, &len), -1);
    assert_int_equal(gw_auth_bearer("Bearer ", 7, &key, &len), -1);
    assert_int_equal(gw_auth_bearer("Bearersk", 8, &key, &len), -1);
}

static void test_lookup(void **state) {
    gw_config cfg;
    gw_tenant_cfg tc[1];
    char *keys[] = {"sk-cli"};
    char hex[CM_SHA256_HEX_LEN + 1], err[256];
    uint8_t d[CM_SHA256_LEN];
    gw_auth a;
    const gw_tenant *t;
    (void)state;
    memset(&cfg, 0, sizeof cfg);
    cm_sha256("sk-yaml", 7, d);
    cm_sha256_hex(d, hex);
    tc[0] = (gw_tenant_cfg){
        .name = "acme", .key_sha256 = hex, .rpm = 5, .tpm = 6, .max_concurrency = 7};
    cfg.tenants = tc;
    cfg.tenants_count = 1;
    cfg.cli_keys = keys;
    cfg.cli_keys_count = 1;
    cfg.default_rpm = 9;
    assert_int_equal(gw_auth_init(&a, &cfg, err, sizeof err), CM_OK);
    t = gw_auth_lookup(&a, "sk-yaml", 7, NULL);
    assert_non_null(t);
    assert_string_equal(t->name, "acme");
    assert_int_equal(t->rpm, 5);
    assert_int_equal(t->max_concurrency, 7);
    t = gw_auth_lookup(&a, "sk-cli", 6, NULL);
    assert_non_null(t);
    assert_string_equal(t->name, "default");
    assert_int_equal(t->rpm, 9);
    assert_null(gw_auth_lookup(&a, "sk-yam", 6, NULL));
    assert_null(gw_auth_lookup(&a, "sk-yaml ", 8, NULL));
    gw_auth_fini(&a);

    tc[0].key_sha256 = "nothex";
    assert_int_equal(gw_auth_init(&a, &cfg, err, sizeof err), CM_ERR_CONFIG);
    assert_non_null(strstr(err, "acme"));
}

int main(void) {
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_bearer),
                                       cmocka_unit_test(test_lookup)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
