/* Envelope decoding: the JSON body of an event, its type, id and order key, and dotted-path lookup.
 */
#ifndef HOOKD_ENVELOPE_H
#define HOOKD_ENVELOPE_H

#include <stddef.h>
#include <cjson/cJSON.h>

typedef enum { ENVELOPE_CIRRUS_INSIGHT = 0, ENVELOPE_GENERIC } envelope_format;

/* How a source's envelope names its fields. For cirrus-insight the fields are
 * fixed: eventType, eventId, data.id. */
typedef struct envelope_spec {
  envelope_format format;
  char *type_field; /* dotted paths; generic only (presets fill them too) */
  char *id_field;
  char *order_key; /* NULL: events of this source have no order key */
  /* Senders that put type or id in a header (GitHub's X-GitHub-Event,
   * Shopify's X-Shopify-Webhook-Id): then the matching *_field is NULL. */
  char *type_header;
  char *id_header;
  char *id_header_alt; /* read when id_header is absent (svix-id for webhook-id) */
  /* No id anywhere (Zoom): the id is "sha256:" and the hex SHA-256 of the
   * body, which a sender's retry repeats byte for byte. */
  int id_body_hash;
} envelope_spec;

/* A decoded event. type, id and order_key are NUL-terminated copies owned by
 * the envelope (numbers are printed as text); order_key may be NULL. */
typedef struct envelope {
  cJSON *root;
  char *type;
  char *id;
  char *order_key;
} envelope;

/* Parses body (len bytes, need not be NUL-terminated). Returns 0, or -1 with
 * a short static reason ("body is not JSON", "missing event type field
 * 'eventType'", ...) in *reason; on failure nothing needs freeing. */
int envelope_decode(const envelope_spec *spec, const char *body, size_t len, envelope *out,
                    const char **reason);
/* The same answer as envelope_decode, found by one pass over the body
 * without building a tree when it can (then out->root is NULL); bodies it
 * cannot answer for go to envelope_decode. */
int envelope_decode_fields(const envelope_spec *spec, const char *body, size_t len, envelope *out,
                           const char **reason);
void envelope_clear(envelope *env);

/* How envelope_decode_request reads a request header: the value (not
 * NUL-terminated) and its length, or NULL when absent. */
typedef const char *(*envelope_header_fn)(void *ctx, const char *name, size_t *len);

/* A request's event: the body as envelope_decode (tree != 0) or
 * envelope_decode_fields does it, with type and id taken from headers or a
 * body hash when the spec says so. Same results and reasons otherwise. */
int envelope_decode_request(const envelope_spec *spec, const char *body, size_t len,
                            envelope_header_fn header, void *hctx, int tree, envelope *out,
                            const char **reason);

/* The node at a dotted path ("data.meetingInfo.formValues.0.answerText";
 * numeric segments index arrays), or NULL. The empty path is the root. */
const cJSON *envelope_path(const cJSON *root, const char *path);

/* The value as text: strings as they are, numbers as JSON numbers (integers
 * without a fraction), true/false, objects and arrays as compact JSON. NULL
 * for NULL or JSON null. Caller frees with free(). */
char *envelope_text(const cJSON *node);

void envelope_spec_clear(envelope_spec *spec);

#endif
