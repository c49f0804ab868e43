/* email_notify: the iCalendar invitation (RFC 5545/5546), built with libical. */
#ifndef EMAIL_ICS_H
#define EMAIL_ICS_H

#include <stdint.h>

/* SEQUENCE is a signed 32-bit integer (RFC 5545 3.3.8); counting seconds
 * from 2020-01-01T00:00:00Z instead of 1970 keeps it in range until 2088. */
#define EMAIL_SEQUENCE_EPOCH 1577836800

/* One meeting. Strings are borrowed and may be NULL (left out). */
typedef struct email_meeting {
  const char *id;   /* required: the UID is "<id>@hookd" */
  int64_t start_ms; /* required, Unix ms */
  int64_t end_ms;   /* required */
  int64_t stamp_ms; /* the event's own time: DTSTAMP and SEQUENCE, so a later
                       reschedule or cancel always counts higher */
  int canceled;     /* METHOD:CANCEL and STATUS:CANCELLED */
  const char *summary;
  const char *location;
  const char *owner; /* ORGANIZER address */
  const char *owner_name;
  const char *invitee; /* required ATTENDEE */
  const char *invitee_name;
  const char *optional; /* optional ATTENDEEs: one string, ',' or ';' separated */
} email_meeting;

/* The VCALENDAR text (CRLF line ends, lines folded at 75 octets, TEXT
 * values escaped: libical does both), malloc'd: free() it. Addresses that
 * are not plain addr-specs are left out. NULL when out of memory. Any
 * thread. */
char *email_ics_build(const email_meeting *m);

/* "REQUEST" or "CANCEL", for the MIME part's method parameter. */
const char *email_ics_method(const email_meeting *m);

#endif
