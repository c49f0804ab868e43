"""slack_post plugin: the real daemon posting to a local server that imitates Slack's
incoming webhooks and chat.postMessage (429 Retry-After, 500, ok:false)."""
import json
import re

import pytest

from conftest import check_readme_config, cirrus_source, hookd_check, payload, send_event
from fakehttp import answers

pytest_plugins = ["fakehttp"]  # the fake_server fixture

FAST_DELIVERY = {"concurrency": 4, "max_attempts": 5, "backoff_initial_ms": 100,
                 "backoff_max_ms": 5000, "timeout_ms": 30000}

SCHEDULED_ID = "5a6b7c8d-1111-4e2f-a3b4-c5d6e7f80912"


WEBHOOK_OK = (200, {"Content-Type": "text/html"}, "ok")
API_OK = (200, {"Content-Type": "application/json"},
          '{"ok":true,"channel":"C0123","ts":"1700000000.000100","message":{"ok":false}}')


def event(kind="scheduled", event_id=None, meeting_id=None):
    doc = json.loads(payload(f"scheduling.smartscheduler.{kind}"))
    if event_id:
        doc["eventId"] = event_id
    if meeting_id:
        doc["data"]["id"] = meeting_id
    return json.dumps(doc, indent=1).encode()


def slack_config(cfg, events=("**",)):
    return {
        "sources": [cirrus_source()],
        "plugins": [{"name": "slack", "module": "slack_post", "config": cfg}],
        "routes": [{"source": "cirrus", "events": list(events), "to": ["slack"]}],
        "delivery": dict(FAST_DELIVERY),
    }


def delivered(d, etype, attempt=1):
    d.wait_for_log(rf"delivered {re.escape(etype)} \(attempt {attempt}\)")


def dead(d, message_regex):
    d.wait_for_log(r"failed for good after \d+ attempt\(s\): " + message_regex)


# --- incoming webhook -------------------------------------------------------

def test_webhook_meeting_events_get_block_kit(daemon_factory, fake_server):
    slack = fake_server(answers(WEBHOOK_OK))
    d = daemon_factory(slack_config({"webhook_url": slack.url("/services/T000/B000/XXXX")}))
    assert send_event(d, event("scheduled")) == 200
    delivered(d, "scheduling.smartscheduler.scheduled")
    reqs = slack.got()
    assert len(reqs) == 1
    r = reqs[0]
    assert r.method == "POST" and r.path == "/services/T000/B000/XXXX"
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    msg = r.json()
    assert msg["text"] == ("Meeting booked: Intro call: Prospect Inc with Pat Prospect, "
                           "Tue 1 Dec 2026, 14:00\u201314:30 UTC")
    assert msg["blocks"] == [
        {"type": "header",
         "text": {"type": "plain_text", "text": "Meeting booked: Intro call: Prospect Inc"}},
        {"type": "section", "fields": [
            {"type": "mrkdwn", "text": "*When*\nTue 1 Dec 2026, 14:00\u201314:30 UTC"},
            {"type": "mrkdwn", "text": "*Invitee*\nPat Prospect\n"
                                       "<mailto:pat@prospect.example|pat@prospect.example>\n"
                                       "Also invited: cfo@prospect.example,it@prospect.example"},
            {"type": "mrkdwn", "text": "*Owner*\nRep One\nrep.one@example.com"},
            {"type": "mrkdwn", "text": "*Location*\n<https://zoom.us/j/84512345678|"
                                       "https://zoom.us/j/84512345678>"},
        ]},
        {"type": "section", "text": {"type": "mrkdwn", "text":
            "*Form answers*\n*Company:* Prospect Inc\n*Team size:* 50-200"}},
        {"type": "context", "elements": [
            {"type": "mrkdwn", "text": "booked \u00b7 scheduling.smartscheduler.scheduled"}]},
    ]


def test_webhook_kinds_in_order_for_one_meeting(daemon_factory, fake_server):
    slack = fake_server(answers(WEBHOOK_OK))
    d = daemon_factory(slack_config({"webhook_url": slack.url("/hook")}))
    for kind in ("scheduled", "rescheduled", "canceled"):
        assert send_event(d, event(kind)) == 200
    delivered(d, "scheduling.smartscheduler.canceled")
    headers = [r.json()["blocks"][0]["text"]["text"] for r in slack.got()]
    assert headers == ["Meeting booked: Intro call: Prospect Inc",
                       "Meeting moved: Intro call: Prospect Inc",
                       "Meeting canceled: Intro call: Prospect Inc"]
    moved = slack.got()[1].json()
    assert moved["blocks"][1]["fields"][0]["text"] == "*When*\nWed 2 Dec 2026, 16:00\u201316:30 UTC"


def test_values_cannot_inject_mrkdwn(daemon_factory, fake_server):
    slack = fake_server(answers(WEBHOOK_OK))
    d = daemon_factory(slack_config({"webhook_url": slack.url("/hook")}))
    doc = json.loads(event())
    doc["data"]["meetingInfo"]["meetingName"] = 'Hi <!channel> & "friends"'
    doc["data"]["meetingInfo"]["location"] = "Room 4 <b>"
    assert send_event(d, json.dumps(doc).encode()) == 200
    delivered(d, "scheduling.smartscheduler.scheduled")
    msg = slack.got()[0].json()
    assert msg["text"].startswith('Meeting booked: Hi &lt;!channel&gt; &amp; "friends" with')
    # plain_text is shown as it is: no mrkdwn there to escape.
    assert msg["blocks"][0]["text"]["text"] == 'Meeting booked: Hi <!channel> & "friends"'
    assert msg["blocks"][1]["fields"][3]["text"] == "*Location*\nRoom 4 &lt;b&gt;"


def test_webhook_other_events_get_plain_text(daemon_factory, fake_server):
    slack = fake_server(answers(WEBHOOK_OK))
    d = daemon_factory(slack_config({"webhook_url": slack.url("/hook")}))
    assert send_event(d, payload("organization.setting.changed")) == 200
    delivered(d, "organization.setting.changed")
    assert [r.json() for r in slack.got()] == [{
        "text": "hookd: organization.setting.changed event "
                "77aa0000-4444-4e2f-a3b4-c5d6e7f80912 from source cirrus"}]


def test_text_and_texts_templates(daemon_factory, fake_server):
    slack = fake_server(answers(WEBHOOK_OK))
    d = daemon_factory(slack_config({
        "webhook_url": slack.url("/hook"),
        "text": 'Event "{{eventType}}"\n{{data.meetingInfo.meetingName|default:none}}',
        "texts": {
            "scheduling.smartscheduler.canceled": "Canceled: {{data.meetingInfo.meetingName}}",
            "organization.**": "Org: {{data.setting.title|upper}}",
        }}))
    assert send_event(d, event("scheduled")) == 200
    delivered(d, "scheduling.smartscheduler.scheduled")
    assert send_event(d, event("canceled")) == 200
    delivered(d, "scheduling.smartscheduler.canceled")
    assert send_event(d, payload("organization.setting.changed")) == 200
    delivered(d, "organization.setting.changed")
    assert send_event(d, payload("developer.webhook.test")) == 200
    delivered(d, "developer.webhook.test")
    assert [r.json() for r in slack.got()] == [
        {"text": 'Event "scheduling.smartscheduler.scheduled"\nIntro call: Prospect Inc'},
        {"text": "Canceled: Intro call: Prospect Inc"},
        {"text": "Org: REQUIRE MEETING NAME"},
        {"text": 'Event "developer.webhook.test"\nnone'},
    ]


def test_webhook_500_is_retried(daemon_factory, fake_server):
    slack = fake_server(answers((500, {}, "rollup_error"), WEBHOOK_OK))
    d = daemon_factory(slack_config({"webhook_url": slack.url("/hook")}))
    assert send_event(d, event()) == 200
    delivered(d, "scheduling.smartscheduler.scheduled", attempt=2)
    reqs = slack.got()
    assert len(reqs) == 2
    assert reqs[0].body == reqs[1].body
    d.wait_for_log(r"retry in \d+ ms: HTTP 500: rollup_error")


def test_webhook_404_is_a_dead_letter(daemon_factory, fake_server):
    slack = fake_server(answers((404, {}, "channel_not_found")))
    d = daemon_factory(slack_config({"webhook_url": slack.url("/hook")}))
    assert send_event(d, event()) == 200
    dead(d, r"HTTP 404: channel_not_found")
    assert len(slack.got()) == 1


# --- chat.postMessage -------------------------------------------------------

def api_config(slack, **over):
    cfg = {"token": "xoxb-test-token", "channel": "C0123", "api_url": slack.url("/api")}
    cfg.update(over)
    return slack_config(cfg)


def test_api_post_message(daemon_factory, fake_server):
    slack = fake_server(answers(API_OK))
    d = daemon_factory(api_config(slack, channel="{{data.meetingInfo.calendarPath}}-alerts",
                                  text="Booked: {{data.meetingInfo.meetingName}}"))
    assert send_event(d, event()) == 200
    delivered(d, "scheduling.smartscheduler.scheduled")
    reqs = slack.got()
    assert len(reqs) == 1
    r = reqs[0]
    assert (r.method, r.path) == ("POST", "/api/chat.postMessage")
    assert r.headers["authorization"] == "Bearer xoxb-test-token"
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    assert r.json() == {"text": "Booked: Intro call: Prospect Inc", "channel": "intro-call-alerts"}


def test_api_default_message_has_blocks_and_channel(daemon_factory, fake_server):
    slack = fake_server(answers(API_OK))
    d = daemon_factory(api_config(slack))
    assert send_event(d, event("canceled")) == 200
    delivered(d, "scheduling.smartscheduler.canceled")
    msg = slack.got()[0].json()
    assert msg["channel"] == "C0123"
    assert msg["blocks"][0]["text"]["text"] == "Meeting canceled: Intro call: Prospect Inc"


def test_api_429_honours_retry_after(daemon_factory, fake_server):
    slack = fake_server(answers((429, {"Retry-After": "1"}, ""), API_OK))
    d = daemon_factory(api_config(slack))
    assert send_event(d, event()) == 200
    # A 429 holds the instance for its Retry-After and uses no attempt.
    delivered(d, "scheduling.smartscheduler.scheduled", attempt=1)
    reqs = slack.got()
    assert len(reqs) == 2
    assert reqs[0].body == reqs[1].body
    assert reqs[1].at - reqs[0].at >= 0.9, "Retry-After: 1 was not honoured"
    d.wait_for_log(r"too many requests \(HTTP 429.*holds its deliveries for 1000 ms")


def test_api_ok_false_ratelimited_is_retried(daemon_factory, fake_server):
    slack = fake_server(answers((200, {}, '{"ok":false,"error":"ratelimited"}'), API_OK))
    d = daemon_factory(api_config(slack))
    assert send_event(d, event()) == 200
    # Slack's "ratelimited" is a 429 by another name: a hold, no attempt.
    delivered(d, "scheduling.smartscheduler.scheduled", attempt=1)
    assert len(slack.got()) == 2
    d.wait_for_log(r"too many requests \(Slack API error: ratelimited\)")


@pytest.mark.parametrize("error", ["channel_not_found", "invalid_auth", "not_in_channel"])
def test_api_ok_false_errors_are_dead_letters(daemon_factory, fake_server, error):
    slack = fake_server(answers((200, {}, json.dumps({"ok": False, "error": error}))))
    d = daemon_factory(api_config(slack))
    assert send_event(d, event()) == 200
    dead(d, rf"Slack API error: {error}")
    assert len(slack.got()) == 1


def test_api_500_then_ok(daemon_factory, fake_server):
    slack = fake_server(answers((500, {}, "internal"), (503, {"Retry-After": "0"}, ""), API_OK))
    d = daemon_factory(api_config(slack))
    assert send_event(d, event()) == 200
    delivered(d, "scheduling.smartscheduler.scheduled", attempt=3)
    assert len(slack.got()) == 3


# --- config -----------------------------------------------------------------

@pytest.mark.parametrize("cfg,needle", [
    ({"webhook_url": "http://127.0.0.1:9/x", "colour": "red"}, "colour"),
    ({}, "webhook_url"),
    ({"webhook_url": "http://127.0.0.1:9/x", "token": "t"}, "token"),
    ({"token": "xoxb-1"}, "channel"),
    ({"webhook_url": "http://127.0.0.1:9/x", "channel": "C1"}, "channel"),
    ({"webhook_url": "slack.com/x"}, "webhook_url"),
    ({"webhook_url": "http://127.0.0.1:9/x", "text": "{{unclosed"}, "text"),
    ({"webhook_url": "http://127.0.0.1:9/x", "texts": {"a..b": "x"}}, "a..b"),
    ({"webhook_url": "http://127.0.0.1:9/x", "texts": {"a.*": 1}}, "texts"),
    ({"webhook_url": "http://127.0.0.1:9/x", "timeout_ms": 0}, "timeout_ms"),
])
def test_check_rejects_bad_config(tmp_path, cfg, needle):
    rc, output = hookd_check(slack_config(cfg), tmp_path)
    assert rc == 2, f"{cfg} was accepted:\n{output}"
    assert needle in output, output


def test_check_accepts_good_config(tmp_path):
    rc, output = hookd_check(slack_config({
        "token": "xoxb-1", "channel": "C1", "text": "x", "texts": {"a.*": "y", "b.**": "z"},
        "timeout_ms": 5000, "api_url": "https://slack.example/api"}), tmp_path)
    assert rc == 0, output


def test_readme_config_is_accepted(tmp_path):
    check_readme_config("slack_post", tmp_path, env={
        "CIRRUS_SIGNING_KEY": "k", "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T/B/X",
        "SLACK_BOT_TOKEN": "xoxb-1"})
