/*
 * lt_openai: the OpenAI-compatible wire format as the load test needs it: building a chat or
 * completion request body, and reading streamed chunks, whole responses and error bodies.
 *
 * Only what is measured is extracted: whether a chunk carries generated text, the usage
 * numbers when the server reports them (we ask with stream_options.include_usage), the finish
 * reason, and an error message. Input is untrusted: anything malformed is CM_ERR_FORMAT.
 */
#ifndef LT_OPENAI_H
#define LT_OPENAI_H

#include <stddef.h>
#include <stdint.h>

#include "cm_err.h"
#include "lt_args.h"
#include "lt_prompt.h"

#define LT_OPENAI_MESSAGE_BYTES 160

typedef struct lt_openai_chunk {
    int done;        /* the "[DONE]" sentinel */
    int has_content; /* carries non-empty generated text (content/text/reasoning) */
    int has_usage;   /* usage object present */
    uint32_t prompt_tokens;
    uint32_t completion_tokens;
    int has_finish_reason;                 /* a choice carries a non-null finish_reason */
    int is_error;                          /* an {"error": ...} object */
    char message[LT_OPENAI_MESSAGE_BYTES]; /* error message when is_error */
} lt_openai_chunk;

/*
 * lt_openai_request_body renders the JSON body for prompt p under args a (model, stream,
 * endpoint, temperature, ignore_eos). *body_out is malloc'd, NUL-terminated, owned by the
 * caller (free()); NULL on failure.
 */
cm_err lt_openai_request_body(const lt_args *a, const lt_prompt *p, char **body_out);

/*
 * lt_openai_parse_chunk reads the data of one SSE event (a chat.completion.chunk or a
 * text_completion chunk, or "[DONE]"), or a whole non-streamed response (same fields: message
 * content instead of delta). out is always filled (zeroed first).
 */
cm_err lt_openai_parse_chunk(const char *data, size_t len, lt_openai_chunk *out);

/*
 * lt_openai_error_message extracts error.message (or the first bytes of the body when it is
 * not the OpenAI error shape) into msg, always NUL-terminated.
 */
void lt_openai_error_message(const char *body, size_t len, char *msg, size_t msg_len);

#endif /* LT_OPENAI_H */
