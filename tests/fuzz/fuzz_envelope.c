/* libFuzzer target: envelope decoding (cirrus-insight and generic) and dotted paths. */
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
    envelope env;
    const char *reason = NULL;
    if (envelope_decode(&specs[i], (const char *)data, size, &env, &reason) != 0) {
      if (!reason || !*reason || strchr(reason, '\n')) abort();
      continue;
    }
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
