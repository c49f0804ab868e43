/* libFuzzer target: envelope decoding (cirrus-insight and generic) and dotted paths, and the
 * one-pass decoder (jscan) giving exactly the answer of the cJSON tree for every input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "envelope.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static char type_field[] = "type", id_field[] = "meta.id", order_key[] = "data.items.0.key";
  envelope_spec specs[2] = {{.format = ENVELOPE_CIRRUS_INSIGHT},
                            {.format = ENVELOPE_GENERIC, .type_field = type_field,
                             .id_field = id_field, .order_key = order_key}};
  for (size_t i = 0; i < 2; i++) {
    envelope env, fast;
    const char *reason = NULL, *fast_reason = NULL;
    int rc = envelope_decode(&specs[i], (const char *)data, size, &env, &reason);
    int fast_rc = envelope_decode_fields(&specs[i], (const char *)data, size, &fast, &fast_reason);
    if (rc != fast_rc) abort();
    if (rc != 0) {
      if (!reason || !*reason || strchr(reason, '\n')) abort();
      if (strcmp(reason, fast_reason) != 0) abort();
      continue;
    }
    if (strcmp(env.type, fast.type) != 0 || strcmp(env.id, fast.id) != 0) abort();
    if ((env.order_key == NULL) != (fast.order_key == NULL)) abort();
    if (env.order_key && strcmp(env.order_key, fast.order_key) != 0) abort();
    envelope_clear(&fast);
    if (!env.root || !env.type || !env.id) abort();
    (void)strlen(env.type);
    (void)strlen(env.id);
    if (env.order_key) (void)strlen(env.order_key);
    static const char *const paths[] = {"", "data", "data.meetingInfo.formValues.0.answerText",
                                        "data.0", "eventType.x", "data.meetingOwner.username"};
    for (size_t p = 0; p < sizeof paths / sizeof paths[0]; p++) {
      char *t = envelope_text(envelope_path(env.root, paths[p]));
      free(t);
    }
    envelope_clear(&env);
  }
  return 0;
}
