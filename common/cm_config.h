/*
 * cm_config: load a YAML file into a plain C struct described by a libcyaml schema, with ONE
 * clear error line when the file is wrong, e.g.
 *
 *   config.yaml:12:3: unknown key 'max_tokenz' in 'limits' (did you mean 'max_tokens'?)
 *   config.yaml:4:7: 'port' must be a non-negative integer, got 'eighty'
 *   config.yaml:1:1: missing required key 'model'
 *   config.yaml:7:11: 'limits.stream' must be true or false, got 'maybe'
 *
 * Before libcyaml maps the document, cm_config walks the YAML tree against the schema and
 * reports the first problem with file:line:column (1-based). That walk is stricter than
 * libcyaml: booleans must be exactly true/false (libcyaml reads 'maybe' as true), integers
 * must fit the field's size, mappings/sequences/scalars must be where the schema says.
 * Anything the walk does not catch but libcyaml does is reported from libcyaml's log
 * (captured through its log callback, never printed to stderr).
 *
 * After loading, an optional validate callback checks meaning (ranges, cross-field rules);
 * cm_config_reject() turns its verdict into the same one-line format, located at the key.
 *
 * Example (the gateway/worker each define their own schema in their *_config.c):
 *
 *   typedef struct limits { uint32_t max_tokens; bool stream; } limits;
 *   typedef struct my_cfg { char *model; uint16_t port; limits limits; } my_cfg;
 *
 *   static const cyaml_schema_field_t limits_fields[] = {
 *       CYAML_FIELD_UINT("max_tokens", CYAML_FLAG_OPTIONAL, limits, max_tokens),
 *       CYAML_FIELD_BOOL("stream", CYAML_FLAG_OPTIONAL, limits, stream),
 *       CYAML_FIELD_END};
 *   static const cyaml_schema_field_t top_fields[] = {
 *       CYAML_FIELD_STRING_PTR("model", CYAML_FLAG_POINTER, my_cfg, model, 1, 256),
 *       CYAML_FIELD_UINT("port", CYAML_FLAG_DEFAULT, my_cfg, port),
 *       CYAML_FIELD_MAPPING("limits", CYAML_FLAG_OPTIONAL, my_cfg, limits, limits_fields),
 *       CYAML_FIELD_END};
 *   static const cyaml_schema_value_t top_schema = {
 *       CYAML_VALUE_MAPPING(CYAML_FLAG_POINTER, my_cfg, top_fields)};
 *
 *   static cm_err check(void *data, cm_config_check *chk, void *arg) {
 *       my_cfg *c = data;
 *       if (c->limits.max_tokens > 32768)
 *           return cm_config_reject(chk, "limits.max_tokens", "must be at most 32768");
 *       return CM_OK;
 *   }
 *
 *   my_cfg *cfg = NULL;
 *   char err[512];
 *   cm_config_opts opts = {.validate = check};
 *   if (cm_config_load(path, &top_schema, &opts, (void **)&cfg, err, sizeof err) != CM_OK) {
 *       fprintf(stderr, "sluice-gateway: %s\n", err);  // one line, already has file:line
 *       return 1;
 *   }
 *   ...
 *   cm_config_free(&top_schema, cfg);
 *
 * Defaults: fields marked CYAML_FLAG_OPTIONAL that are absent are left zero; fill defaults
 * after loading (a 0 means "not set") or in the validate callback, which may modify data.
 *
 * Thread contract: cm_config_load may be called from any thread; calls are independent.
 */
#ifndef CM_CONFIG_H
#define CM_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include <cyaml/cyaml.h>

#include "cm_err.h"

/* Largest config file accepted; bigger files fail with CM_ERR_LIMIT. */
#define CM_CONFIG_MAX_BYTES (1u << 20)

/* cm_config_check locates keys for cm_config_reject; only valid inside a validate callback. */
typedef struct cm_config_check cm_config_check;

/*
 * cm_config_validate_fn checks a freshly loaded struct (data: the schema's type). Return CM_OK
 * to accept; to refuse, return cm_config_reject(...) (which writes the message). It may
 * modify data (e.g. fill defaults). It must not free data.
 */
typedef cm_err (*cm_config_validate_fn)(void *data, cm_config_check *chk, void *arg);

typedef struct cm_config_opts {
    cm_config_validate_fn validate; /* optional */
    void *validate_arg;             /* passed through to validate */
} cm_config_opts;

/*
 * cm_config_load reads the YAML file at path and maps it through schema (a top-level
 * CYAML_VALUE_MAPPING with CYAML_FLAG_POINTER). opts may be NULL.
 * On CM_OK, *out owns a new struct: free it with cm_config_free(schema, *out).
 * On failure *out is NULL, nothing is left allocated, and err (if errlen > 0) holds one line
 * "file:line:col: what is wrong" (or "file: ..." when no position applies, e.g. a missing
 * file). Returns CM_ERR_IO (unreadable file), CM_ERR_LIMIT (file too big), CM_ERR_FORMAT
 * (not YAML), CM_ERR_CONFIG (YAML that does not fit the schema or fails validate),
 * CM_ERR_NOMEM, CM_ERR_INVALID (NULL arguments).
 */
cm_err cm_config_load(const char *path, const cyaml_schema_value_t *schema,
                      const cm_config_opts *opts, void **out, char *err, size_t errlen);

/*
 * cm_config_load_string is cm_config_load over an in-memory document; name is used in
 * messages in place of the file name. yaml need not be NUL-terminated (len bytes are read).
 */
cm_err cm_config_load_string(const char *name, const char *yaml, size_t len,
                             const cyaml_schema_value_t *schema, const cm_config_opts *opts,
                             void **out, char *err, size_t errlen);

/* cm_config_free frees a struct returned by cm_config_load*; data may be NULL. */
void cm_config_free(const cyaml_schema_value_t *schema, void *data);

/*
 * cm_config_reject writes "file:line:col: 'key_path' <message>" for the validate callback's
 * caller and returns CM_ERR_CONFIG. key_path is dotted ("limits.max_tokens", "models.1.name"
 * for the second entry of a sequence); when it is not found in the document (e.g. an absent
 * optional key), the position of the closest enclosing key is used.
 */
cm_err cm_config_reject(cm_config_check *chk, const char *key_path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * cm_config_parse_bool accepts exactly "true" or "false" (the YAML 1.2 core schema) and
 * stores 1/0 in *out; anything else is CM_ERR_INVALID. For values read as strings, e.g. from
 * environment variables or command-line flags.
 */
cm_err cm_config_parse_bool(const char *s, int *out);

#endif /* CM_CONFIG_H */
