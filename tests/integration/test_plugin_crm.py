"""crm_update plugin: the real daemon against a local server imitating the Salesforce REST
upsert (201/204, DELETE, 404, 401, 503) and a plain REST backend."""
import json
import re
import time

import pytest

from conftest import (check_readme_config, cirrus_source, hookd_check, payload, send_event,
                      wait_until)

pytest_plugins = ["fakehttp"]  # the fake_server fixture

FAST_DELIVERY = {"concurrency": 4, "max_attempts": 5, "backoff_initial_ms": 100,
                 "backoff_max_ms": 2000, "timeout_ms": 30000}

MEETING = "c0ffee00-1234-4abc-9def-0123456789ab"
RECORD_PATH = f"/services/data/v59.0/sobjects/Event/Cirrus_Meeting_Id__c/{MEETING}"


class FakeSalesforce:
    """Keeps Event records by external id like the upsert endpoint does:
    PATCH creates (201 with a body) or updates (204); DELETE removes (204) or
    answers 404. `fail` maps a request number to a forced (status, body)."""

    def __init__(self, fake_server, fail=None, delay=0.0):
        self.records = {}
        self.fail = fail or {}
        self.delay = delay
        self.server = fake_server(self.respond)

    def respond(self, req, n):
        if n in self.fail:
            status, body = self.fail[n]
            return status, {"Content-Type": "application/json"}, body.encode()
        if self.delay:
            time.sleep(self.delay)  # a slow answer: a later event must wait for it
        ext = req.path.rsplit("/", 1)[1]
        if req.method == "PATCH":
            created = ext not in self.records
            self.records.setdefault(ext, {}).update(req.json())
            if created:
                return 201, {"Content-Type": "application/json"}, json.dumps(
                    {"id": "00U000000000001", "success": True, "errors": [],
                     "created": True}).encode()
            return 204, {}, b""
        if req.method == "DELETE":
            if self.records.pop(ext, None) is None:
                return 404, {"Content-Type": "application/json"}, json.dumps([{
                    "errorCode": "NOT_FOUND",
                    "message": "The requested resource does not exist"}]).encode()
            return 204, {}, b""
        return 405, {}, b""

    def url(self):
        return self.server.url("")

    def got(self):
        return self.server.got()


def event(kind="scheduled", event_id=None, meeting_id=None):
    doc = json.loads(payload(f"scheduling.smartscheduler.{kind}"))
    if event_id:
        doc["eventId"] = event_id
    if meeting_id:
        doc["data"]["id"] = meeting_id
    return json.dumps(doc, indent=1).encode()


def sf_config(url, **over):
    cfg = {"provider": "salesforce", "instance_url": url, "token": "00Dxx!token",
           "external_id_field": "Cirrus_Meeting_Id__c"}
    cfg.update(over)
    return {
        "sources": [cirrus_source()],
        "plugins": [{"name": "crm", "module": "crm_update", "config": cfg}],
        "routes": [{"source": "cirrus", "events": ["scheduling.smartscheduler.*"],
                    "to": ["crm"]}],
        "delivery": dict(FAST_DELIVERY),
    }


def delivered(d, etype, attempt=1):
    d.wait_for_log(rf"delivered {re.escape(etype)} \(attempt {attempt}\)")


def dead(d, message_regex):
    d.wait_for_log(r"failed for good after \d+ attempt\(s\): " + message_regex)


DESCRIPTION = ("Meeting with Pat Prospect <pat@prospect.example> booked through "
               "https://scheduling.example/acme/intro-call.\n"
               "Owner: Rep One <rep.one@example.com>")


def record(start, end, subject="Intro call: Prospect Inc"):
    return {"Subject": subject, "StartDateTime": start, "EndDateTime": end,
            "Location": "https://zoom.us/j/84512345678", "Description": DESCRIPTION}


# --- salesforce -------------------------------------------------------------

def test_scheduled_rescheduled_canceled_arrive_in_order(daemon_factory, fake_server):
    # Every answer is slow: were the three events of one meeting sent in
    # parallel, the later ones would arrive before the earlier ones finish.
    sf = FakeSalesforce(fake_server, delay=0.3)
    d = daemon_factory(sf_config(sf.url()))
    for kind in ("scheduled", "rescheduled", "canceled"):
        assert send_event(d, event(kind)) == 200
    delivered(d, "scheduling.smartscheduler.canceled")
    reqs = sf.got()
    assert [(r.method, r.path) for r in reqs] == [("PATCH", RECORD_PATH)] * 3
    for r in reqs:
        assert r.headers["authorization"] == "Bearer 00Dxx!token"
        assert r.headers["content-type"] == "application/json; charset=UTF-8"
    assert [r.json() for r in reqs] == [
        record("2026-12-01T14:00:00Z", "2026-12-01T14:30:00Z"),
        record("2026-12-02T16:00:00Z", "2026-12-02T16:30:00Z"),
        dict(record("2026-12-02T16:00:00Z", "2026-12-02T16:30:00Z",
                    subject="Canceled: Intro call: Prospect Inc"), ShowAs="Free"),
    ]
    # Strictly one after another: each began after the previous answer.
    assert reqs[1].at - reqs[0].at >= 0.3 and reqs[2].at - reqs[1].at >= 0.3
    assert sf.records[MEETING]["ShowAs"] == "Free"
    assert len(sf.got()) == 3


def test_retry_holds_back_later_events_of_the_meeting(daemon_factory, fake_server):
    sf = FakeSalesforce(fake_server, fail={1: (503, '[{"errorCode":"SERVER_UNAVAILABLE"}]')})
    d = daemon_factory(sf_config(sf.url()))
    assert send_event(d, event("scheduled")) == 200
    assert send_event(d, event("rescheduled")) == 200
    delivered(d, "scheduling.smartscheduler.rescheduled")
    starts = [r.json()["StartDateTime"] for r in sf.got()]
    assert starts == ["2026-12-01T14:00:00Z", "2026-12-01T14:00:00Z", "2026-12-02T16:00:00Z"]
    d.wait_for_log(r"retry in \d+ ms: HTTP 503")
    assert sf.records[MEETING]["StartDateTime"] == "2026-12-02T16:00:00Z"


def test_other_meetings_are_independent(daemon_factory, fake_server):
    sf = FakeSalesforce(fake_server)
    d = daemon_factory(sf_config(sf.url()))
    for i in range(3):
        assert send_event(d, event(event_id=f"evt-{i}", meeting_id=f"meeting-{i}")) == 200
    wait_until(lambda: len(sf.records) == 3, what="three records")
    paths = sorted(r.path for r in sf.got())
    assert paths == [f"/services/data/v59.0/sobjects/Event/Cirrus_Meeting_Id__c/meeting-{i}"
                     for i in range(3)]


def test_on_cancel_delete(daemon_factory, fake_server):
    sf = FakeSalesforce(fake_server)
    d = daemon_factory(sf_config(sf.url(), on_cancel="delete"))
    assert send_event(d, event("scheduled")) == 200
    assert send_event(d, event("canceled")) == 200
    delivered(d, "scheduling.smartscheduler.canceled")
    reqs = sf.got()
    assert [(r.method, r.path) for r in reqs] == [("PATCH", RECORD_PATH), ("DELETE", RECORD_PATH)]
    assert reqs[1].body == b"" and "content-length" not in reqs[1].headers
    assert reqs[1].headers["authorization"] == "Bearer 00Dxx!token"
    assert sf.records == {}


def test_delete_of_a_missing_record_counts_as_done(daemon_factory, fake_server):
    sf = FakeSalesforce(fake_server)
    d = daemon_factory(sf_config(sf.url(), on_cancel="delete"))
    assert send_event(d, event("canceled")) == 200
    delivered(d, "scheduling.smartscheduler.canceled")
    reqs = sf.got()
    assert [(r.method, r.path) for r in reqs] == [("DELETE", RECORD_PATH)]
    assert "failed" not in d.log()


def test_401_is_a_dead_letter_naming_the_token(daemon_factory, fake_server):
    body = '[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]'
    sf = FakeSalesforce(fake_server, fail={1: (401, body)})
    d = daemon_factory(sf_config(sf.url()))
    assert send_event(d, event()) == 200
    dead(d, r"Salesforce rejected the access token \(invalid or expired\): "
            r"HTTP 401: .*INVALID_SESSION_ID")
    assert len(sf.got()) == 1


def test_503_is_retried_until_created(daemon_factory, fake_server):
    sf = FakeSalesforce(fake_server, fail={1: (503, "unavailable"), 2: (503, "unavailable")})
    d = daemon_factory(sf_config(sf.url()))
    assert send_event(d, event()) == 200
    delivered(d, "scheduling.smartscheduler.scheduled", attempt=3)
    reqs = sf.got()
    assert len(reqs) == 3 and reqs[0].body == reqs[1].body == reqs[2].body
    assert sf.records[MEETING]["Subject"] == "Intro call: Prospect Inc"


def test_400_is_a_dead_letter_with_the_answer(daemon_factory, fake_server):
    body = '[{"message":"No such column \'Bogus__c\'","errorCode":"INVALID_FIELD"}]'
    sf = FakeSalesforce(fake_server, fail={1: (400, body)})
    d = daemon_factory(sf_config(sf.url(), fields={"Subject": "{{data.meetingInfo.meetingName}}",
                                                   "Bogus__c": "{{data.id}}"}))
    assert send_event(d, event()) == 200
    dead(d, r"HTTP 400: .*INVALID_FIELD")
    reqs = sf.got()
    assert len(reqs) == 1
    assert reqs[0].json() == {"Subject": "Intro call: Prospect Inc", "Bogus__c": MEETING}


def test_custom_object_fields_and_version(daemon_factory, fake_server):
    sf = FakeSalesforce(fake_server)
    d = daemon_factory(sf_config(sf.url() + "/", object="Meeting__c", api_version="60.0",
                                 external_id_field="Ext__c",
                                 external_id="{{data.organizationId}}:{{data.id}}",
                                 fields={"Name": "{{data.meetingInfo.meetingName}}",
                                         "Zoom__c": "{{data.zoomMeetingId}}",
                                         "Missing__c": "{{data.nothing}}"},
                                 cancel_fields={"Status__c": "Canceled"}))
    assert send_event(d, event("canceled")) == 200
    delivered(d, "scheduling.smartscheduler.canceled")
    reqs = sf.got()
    assert len(reqs) == 1
    # Values are percent-encoded, the template's own text (the colon) is not.
    assert reqs[0].path == ("/services/data/v60.0/sobjects/Meeting__c/Ext__c/"
                            "3f2b8c1e-7a4d-4e0b-9c55-1d2e3f4a5b6c:" + MEETING)
    assert reqs[0].json() == {"Name": "Intro call: Prospect Inc", "Zoom__c": "84512345678",
                              "Missing__c": None, "Status__c": "Canceled"}


# --- rest -------------------------------------------------------------------

def test_rest_provider(daemon_factory, fake_server):
    backend = fake_server(lambda req, n: (200, {}, b'{"ok":true}'))
    cfg = sf_config("unused")
    cfg["plugins"][0]["config"] = {
        "provider": "rest", "method": "PUT",
        "url": backend.url("/api/meetings/{{data.id}}?name={{data.meetingInfo.meetingName}}"),
        "headers": {"Authorization": "Bearer abc", "X-Event": "{{eventType}}"},
        "body": '{"name": "{{data.meetingInfo.meetingName}}", "start": "{{data.meetingStart}}",'
                ' "q": "{{data.meetingInfo.formValues.0.question}}"}',
    }
    d = daemon_factory(cfg)
    doc = json.loads(event())
    doc["data"]["meetingInfo"]["meetingName"] = 'Say "hi" & go'
    assert send_event(d, json.dumps(doc).encode()) == 200
    delivered(d, "scheduling.smartscheduler.scheduled")
    reqs = backend.got()
    assert len(reqs) == 1
    r = reqs[0]
    assert r.method == "PUT"
    assert r.path == f"/api/meetings/{MEETING}?name=Say%20%22hi%22%20%26%20go"
    assert r.headers["authorization"] == "Bearer abc"
    assert r.headers["x-event"] == "scheduling.smartscheduler.scheduled"
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"name": 'Say "hi" & go', "start": "2026-12-01T14:00:00Z",
                        "q": "Company"}


def test_rest_delete_404_is_done_and_422_is_dead(daemon_factory, fake_server):
    backend = fake_server(lambda req, n: (404, {}, b"gone") if req.method == "DELETE"
                          else (422, {}, b"unprocessable: start"))
    cfg = sf_config("unused")
    cfg["plugins"] = [
        {"name": "del", "module": "crm_update",
         "config": {"provider": "rest", "method": "DELETE",
                    "url": backend.url("/m/{{data.id}}")}},
        {"name": "post", "module": "crm_update",
         "config": {"provider": "rest", "url": backend.url("/m"), "body": "{}"}},
    ]
    cfg["routes"] = [{"source": "cirrus", "events": ["scheduling.smartscheduler.canceled"],
                      "to": ["del", "post"]}]
    d = daemon_factory(cfg)
    assert send_event(d, event("canceled")) == 200
    delivered(d, "scheduling.smartscheduler.canceled")
    dead(d, r"HTTP 422: unprocessable: start")
    assert sorted((r.method, r.path) for r in backend.got()) == [("DELETE", f"/m/{MEETING}"),
                                                                 ("POST", "/m")]


# --- config -----------------------------------------------------------------

@pytest.mark.parametrize("cfg,needle", [
    ({"provider": "salesforce", "instance_url": "https://x.my.salesforce.com", "token": "t",
      "external_id_field": "X__c", "instanceurl": "x"}, "instanceurl"),
    ({"provider": "salesforce", "instance_url": "https://x.my.salesforce.com", "token": "t"},
     "external_id_field"),
    ({"provider": "salesforce", "instance_url": "https://x.my.salesforce.com",
      "external_id_field": "X__c"}, "token"),
    ({"provider": "salesforce", "instance_url": "https://x.my.salesforce.com", "token": "t",
      "external_id_field": "X__c", "on_cancel": "remove"}, "on_cancel"),
    ({"provider": "salesforce", "instance_url": "https://x.my.salesforce.com", "token": "t",
      "external_id_field": "X__c", "object": "Meeting__c"}, "fields"),
    ({"provider": "salesforce", "instance_url": "https://x.my.salesforce.com", "token": "t",
      "external_id_field": "X__c", "on_cancel": "delete", "cancel_fields": {"A": "b"}},
     "cancel_fields"),
    ({"provider": "salesforce", "instance_url": "https://x.my.salesforce.com", "token": "t",
      "external_id_field": "X__c", "url": "https://elsewhere"}, "url"),
    ({"provider": "hubspot"}, "provider"),
    ({}, "provider"),
    ({"provider": "rest"}, "url"),
    ({"provider": "rest", "url": "https://x/", "method": "FETCH"}, "method"),
    ({"provider": "rest", "url": "https://x/", "headers": {"Bad Name": "x"}}, "Bad Name"),
    ({"provider": "rest", "url": "https://x/", "body_escape": "xml"}, "body_escape"),
    ({"provider": "rest", "url": "https://x/", "token": "t"}, "token"),
])
def test_check_rejects_bad_config(tmp_path, cfg, needle):
    c = sf_config("x")
    c["plugins"][0]["config"] = cfg
    rc, output = hookd_check(c, tmp_path)
    assert rc == 2, f"{cfg} was accepted:\n{output}"
    assert needle in output, output


def test_readme_config_is_accepted(tmp_path):
    check_readme_config("crm_update", tmp_path, env={
        "CIRRUS_SIGNING_KEY": "k", "SF_ACCESS_TOKEN": "00D!x", "CRM_TOKEN": "t"})
