/* email_notify: the iCalendar invitation (RFC 5545/5546), built with libical. */
#include "email_ics.h"

#include <libical/ical.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "email_mime.h"

/* icaltimezone_get_utc_timezone() loads libical's list of built-in zones
 * once per process and keeps it; when hookd closes the plugin, libical goes
 * with it, so the list is freed here first (after every instance is gone). */
__attribute__((destructor)) static void on_unload(void) {
  icaltimezone_free_builtin_timezones();
}

const char *email_ics_method(const email_meeting *m) {
  return m->canceled ? "CANCEL" : "REQUEST";
}

static struct icaltimetype utc_time(int64_t ms) {
  return icaltime_from_timet_with_zone((time_t)(ms / 1000), 0, icaltimezone_get_utc_timezone());
}

/* ORGANIZER or ATTENDEE with mailto:, CN and, for attendees, the role and
 * an RSVP request; nothing when the address is not a plain addr-spec. */
static void add_person(icalcomponent *ev, int organizer, const char *addr, const char *name,
                       icalparameter_role role) {
  if (addr == NULL || !email_addr_ok(addr)) return;
  char uri[300];
  snprintf(uri, sizeof uri, "mailto:%s", addr);
  icalproperty *p = organizer ? icalproperty_new_organizer(uri) : icalproperty_new_attendee(uri);
  if (p == NULL) return;
  if (name && *name) icalproperty_add_parameter(p, icalparameter_new_cn(name));
  if (!organizer) {
    icalproperty_add_parameter(p, icalparameter_new_role(role));
    icalproperty_add_parameter(p, icalparameter_new_partstat(ICAL_PARTSTAT_NEEDSACTION));
    icalproperty_add_parameter(p, icalparameter_new_rsvp(ICAL_RSVP_TRUE));
  }
  icalcomponent_add_property(ev, p);
}

/* optionalInvitees is one string, comma or semicolon separated. */
static void add_optional(icalcomponent *ev, const char *list) {
  char *copy = list ? strdup(list) : NULL, *save = NULL;
  for (char *a = copy ? strtok_r(copy, ",;", &save) : NULL; a; a = strtok_r(NULL, ",;", &save))
    add_person(ev, 0, email_trim(a), NULL, ICAL_ROLE_OPTPARTICIPANT);
  free(copy);
}

static icalcomponent *vevent(const email_meeting *m) {
  char uid[300];
  int64_t seq = m->stamp_ms / 1000 - EMAIL_SEQUENCE_EPOCH;
  if (seq < 0) seq = 0;
  if (seq > INT32_MAX) seq = INT32_MAX;
  snprintf(uid, sizeof uid, "%s@hookd", m->id);
  icalcomponent *ev = icalcomponent_new(ICAL_VEVENT_COMPONENT);
  if (ev == NULL) return NULL;
  icalcomponent_add_property(ev, icalproperty_new_uid(uid));
  icalcomponent_add_property(ev, icalproperty_new_sequence((int)seq));
  icalcomponent_add_property(ev, icalproperty_new_dtstamp(utc_time(m->stamp_ms)));
  icalcomponent_add_property(ev, icalproperty_new_dtstart(utc_time(m->start_ms)));
  icalcomponent_add_property(ev, icalproperty_new_dtend(utc_time(m->end_ms)));
  if (m->summary && *m->summary)
    icalcomponent_add_property(ev, icalproperty_new_summary(m->summary));
  if (m->location && *m->location)
    icalcomponent_add_property(ev, icalproperty_new_location(m->location));
  add_person(ev, 1, m->owner, m->owner_name, ICAL_ROLE_NONE);
  add_person(ev, 0, m->invitee, m->invitee_name, ICAL_ROLE_REQPARTICIPANT);
  add_optional(ev, m->optional);
  icalcomponent_add_property(
      ev, icalproperty_new_status(m->canceled ? ICAL_STATUS_CANCELLED : ICAL_STATUS_CONFIRMED));
  return ev;
}

char *email_ics_build(const email_meeting *m) {
  icalcomponent *cal = icalcomponent_new(ICAL_VCALENDAR_COMPONENT);
  icalcomponent *ev = cal ? vevent(m) : NULL;
  if (ev == NULL) {
    if (cal) icalcomponent_free(cal);
    return NULL;
  }
  icalcomponent_add_property(cal, icalproperty_new_prodid("-//hookd//email_notify 1.1//EN"));
  icalcomponent_add_property(cal, icalproperty_new_version("2.0"));
  icalcomponent_add_property(cal, icalproperty_new_calscale("GREGORIAN"));
  icalcomponent_add_property(
      cal, icalproperty_new_method(m->canceled ? ICAL_METHOD_CANCEL : ICAL_METHOD_REQUEST));
  icalcomponent_add_component(cal, ev);
  /* The _r form hands the caller a buffer of its own (malloc'd by libical's
   * default allocator): no ring buffer shared between threads. */
  char *text = icalcomponent_as_ical_string_r(cal);
  icalcomponent_free(cal);
  return text;
}
