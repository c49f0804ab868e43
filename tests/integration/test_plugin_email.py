"""email_notify plugin: the real daemon sends to a real SMTP server (aiosmtpd) on a free port."""
import datetime
import email
import email.utils
import json
import re
import subprocess
import threading
import time
from email import policy

import pytest
from aiosmtpd.controller import Controller

from conftest import (HOOKD, README_FIRST_JSONC, check_readme_config, cirrus_source, free_port,
                      hookd_check, payload, send_event, wait_until)

FAST_DELIVERY = {"concurrency": 4, "max_attempts": 5, "backoff_initial_ms": 100,
                 "backoff_max_ms": 400, "timeout_ms": 30000}
MEETING_ID = "c0ffee00-1234-4abc-9def-0123456789ab"


class Recorder:
    """An aiosmtpd handler that keeps every accepted message and can refuse
    the next DATA commands (`answers`) or all of them (`always`)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.messages = []  # (mail_from, rcpt_tos, content bytes)
        self.attempts = 0   # DATA commands seen, accepted or not
        self.answers = []
        self.always = None

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.attempts += 1
            if self.always:
                return self.always
            if self.answers:
                return self.answers.pop(0)
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 2.0.0 queued"

    def parsed(self):
        with self.lock:
            return [email.message_from_bytes(m[2], policy=policy.default) for m in self.messages]


@pytest.fixture
def smtp():
    rec = Recorder()
    ctl = Controller(rec, hostname="127.0.0.1", port=free_port())
    ctl.start()
    rec.port = ctl.port
    yield rec
    ctl.stop()


def event(kind="scheduled", **data_changes):
    doc = json.loads(payload(f"scheduling.smartscheduler.{kind}"))
    for path, value in data_changes.items():
        node = doc["data"]
        keys = path.split("__")
        for k in keys[:-1]:
            node = node[k]
        node[keys[-1]] = value
    return json.dumps(doc).encode()


def mail_config(port, instances=None, **over):
    cfg = {"smtp_url": f"smtp://127.0.0.1:{port}", "tls": "none", "from": "hookd@example.com",
           "to": ["{{data.meetingOwner.username}}"], "timeout_ms": 5000}
    cfg.update(over)
    plugins = instances or [{"name": "mail", "module": "email_notify", "config": cfg}]
    return {
        "sources": [cirrus_source()],
        "plugins": plugins,
        "routes": [{"source": "cirrus", "events": ["scheduling.smartscheduler.*"],
                    "to": [p["name"] for p in plugins]}],
        "delivery": dict(FAST_DELIVERY),
    }


def ics_of(msg):
    """(content-type params, unfolded property lines) of the text/calendar part."""
    for part in msg.walk():
        if part.get_content_type() == "text/calendar":
            raw = part.get_payload(decode=True)
            for line in raw.split(b"\r\n"):
                assert len(line) <= 75, f"ICS line longer than 75 octets: {line!r}"
            assert not re.search(rb"[^\r]\n", raw), "ICS lines must end in CRLF"
            text = raw.decode("utf-8").replace("\r\n ", "")
            return dict(part.get_params()), [l for l in text.split("\r\n") if l]
    raise AssertionError("no text/calendar part")


def prop(lines, name):
    """Value of the first property `name` (parameters ignored)."""
    for line in lines:
        head, _, value = line.partition(":")
        if head.split(";")[0] == name:
            return value
    return None


def test_message_headers_subject_and_body(daemon_factory, smtp):
    subject = "Réunion prévue : {{data.meetingInfo.meetingName}} ✓ avec {{data.meetingInfo.primaryInviteeName}} — 日本語のテキストも"
    d = daemon_factory(mail_config(
        smtp.port,
        cc=["{{data.meetingInfo.primaryInvitee}}", "{{data.meetingInfo.nothingHere}}",
            "{{data.meetingInfo.optionalInvitees}}"],
        subject=subject,
        body="Hello {{data.meetingOwner.firstName}},\n\n{{data.meetingInfo.primaryInviteeName}} "
             "booked “{{data.meetingInfo.meetingName}}” at {{data.meetingStart}}.\n"))
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    assert send_event(d, event()) == 200
    wait_until(lambda: smtp.messages, what="the email")
    time.sleep(0.3)
    assert len(smtp.messages) == 1
    mail_from, rcpts, raw = smtp.messages[0]
    assert mail_from == "hookd@example.com"
    # The empty cc entry is skipped; the comma-separated one becomes two.
    assert sorted(rcpts) == sorted(["rep.one@example.com", "pat@prospect.example",
                                    "cfo@prospect.example", "it@prospect.example"])
    for line in raw.split(b"\r\n"):
        assert len(line) <= 78, f"line longer than 78: {line!r}"
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert msg["MIME-Version"] == "1.0"
    assert msg["From"] == "hookd@example.com"
    assert msg["To"] == "rep.one@example.com"
    assert [a.addr_spec for a in msg["Cc"].addresses] == [
        "pat@prospect.example", "cfo@prospect.example", "it@prospect.example"]
    date = email.utils.parsedate_to_datetime(msg["Date"])
    assert date.utcoffset() == datetime.timedelta(0)
    assert before - datetime.timedelta(seconds=2) <= date <= before + datetime.timedelta(seconds=30)
    assert re.fullmatch(r"<[0-9a-f]{32}\.hookd@example\.com>", msg["Message-ID"])
    raw_subject = re.search(rb"^Subject:(.*?)\r\n(?!\s)", raw, re.S | re.M).group(1)
    assert raw_subject.strip().startswith(b"=?UTF-8?B?")
    assert msg["Subject"] == ("Réunion prévue : Intro call: Prospect Inc ✓ avec Pat Prospect"
                              " — 日本語のテキストも")
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content_charset() == "utf-8"
    assert msg["Content-Transfer-Encoding"] == "base64"
    body = msg.get_content().replace("\r\n", "\n")
    assert body == ("Hello Rep,\n\nPat Prospect booked “Intro call: Prospect Inc” at "
                    "2026-12-01T14:00:00Z.\n")


def test_header_injection_is_impossible(daemon_factory, smtp):
    d = daemon_factory(mail_config(smtp.port, subject="Booked: {{data.meetingInfo.meetingName}}",
                                   to=["{{data.meetingOwner.username}}"]))
    evil = "Intro\r\nBcc: victim@attacker.example\r\n\r\nforged body"
    assert send_event(d, event(meetingInfo__meetingName=evil)) == 200
    wait_until(lambda: smtp.messages, what="the email")
    _, rcpts, raw = smtp.messages[0]
    assert rcpts == ["rep.one@example.com"]
    msg = email.message_from_bytes(raw, policy=policy.default)
    assert msg["Bcc"] is None
    assert "\n" not in msg["Subject"] and "\r" not in msg["Subject"]
    assert "Bcc: victim@attacker.example" in msg["Subject"]
    assert b"\r\nBcc:" not in raw


def test_calendar_invite_follows_the_meeting(daemon_factory, smtp):
    d = daemon_factory(mail_config(smtp.port, attach_ics=True,
                                   cc=["{{data.meetingInfo.primaryInvitee}}"]))
    for kind in ("scheduled", "rescheduled", "canceled"):
        assert send_event(d, payload(f"scheduling.smartscheduler.{kind}")) == 200
    wait_until(lambda: len(smtp.messages) == 3, timeout=15, what="three emails")
    msgs = smtp.parsed()
    # One order key (the meeting id): the emails leave in the order accepted.
    assert [m["Subject"].split(":")[0] for m in msgs] == [
        "Meeting booked", "Meeting moved", "Meeting canceled"]
    expect = [("REQUEST", "20261201T140000Z", "20261201T143000Z", "CONFIRMED"),
              ("REQUEST", "20261202T160000Z", "20261202T163000Z", "CONFIRMED"),
              ("CANCEL", "20261202T160000Z", "20261202T163000Z", "CANCELLED")]
    sequences = []
    for msg, (method, start, end, status) in zip(msgs, expect):
        assert msg.get_content_type() == "multipart/mixed"
        texts = [p for p in msg.walk() if p.get_content_type() == "text/plain"]
        assert len(texts) == 1 and "Intro call: Prospect Inc" in texts[0].get_content()
        params, lines = ics_of(msg)
        assert params["method"] == method
        assert lines[0] == "BEGIN:VCALENDAR" and lines[-1] == "END:VCALENDAR"
        assert prop(lines, "METHOD") == method
        assert prop(lines, "UID") == f"{MEETING_ID}@hookd"
        assert prop(lines, "DTSTART") == start
        assert prop(lines, "DTEND") == end
        assert prop(lines, "STATUS") == status
        assert prop(lines, "SUMMARY") == "Intro call: Prospect Inc"
        assert prop(lines, "ORGANIZER") == "mailto:rep.one@example.com"
        attendees = [l.split(":", 1)[1] for l in lines if l.startswith("ATTENDEE")]
        assert "mailto:pat@prospect.example" in attendees
        assert re.fullmatch(r"\d{8}T\d{6}Z", prop(lines, "DTSTAMP"))
        sequences.append(int(prop(lines, "SEQUENCE")))
    assert sequences[0] < sequences[1] < sequences[2], sequences


def test_451_is_retried_then_delivered(daemon_factory, smtp):
    smtp.answers = ["451 4.3.0 Try again later", "451 4.3.0 Try again later"]
    d = daemon_factory(mail_config(smtp.port))
    assert send_event(d, event()) == 200
    wait_until(lambda: smtp.messages, timeout=15, what="delivery after two 451s")
    time.sleep(1.0)
    assert smtp.attempts == 3
    assert len(smtp.messages) == 1
    d.wait_for_log(r"will retry: SMTP 451 4\.3\.0 Try again later")


def test_550_is_a_dead_letter(daemon_factory, smtp):
    smtp.always = "550 5.7.1 Message rejected"
    d = daemon_factory(mail_config(smtp.port))
    assert send_event(d, event()) == 200
    d.wait_for_log(r"not delivered: SMTP 550 5\.7\.1 Message rejected")
    d.wait_for_log(r"(?i)(dead.letter|failed for good).*550 5\.7\.1")  # hookd's own line
    time.sleep(1.5)  # several backoff periods: a retry would have happened
    assert smtp.attempts == 1
    assert smtp.messages == []
    p = subprocess.run([str(HOOKD), "dlq", "list", "-c", str(d.cfg_path)], capture_output=True,
                       text=True, timeout=30)
    if p.returncode == 0:  # the dead-letter CLI may come later than the plugin
        assert "5a6b7c8d-1111-4e2f-a3b4-c5d6e7f80912" in p.stdout + p.stderr


def test_bad_or_missing_recipients_fail(daemon_factory, smtp):
    def inst(name, to):
        return {"name": name, "module": "email_notify",
                "config": {"smtp_url": f"smtp://127.0.0.1:{smtp.port}", "tls": "none",
                           "from": "hookd@example.com", "to": to}}
    d = daemon_factory(mail_config(smtp.port, instances=[
        inst("nobody", ["{{data.notThere}}", " {{data.alsoNotThere}} "]),
        inst("garbage", ["{{data.meetingInfo.meetingName}}"])]))
    assert send_event(d, event()) == 200
    d.wait_for_log(r"no recipients")
    d.wait_for_log(r"\"Intro call: Prospect Inc\" is not an email address")
    time.sleep(1.0)
    assert smtp.attempts == 0


def test_check_rejects_bad_config(tmp_path):
    good = {"smtp_url": "smtp://127.0.0.1:2525", "tls": "none", "from": "hookd@example.com",
            "to": ["{{data.meetingOwner.username}}"]}
    rc, output = hookd_check(mail_config(0, instances=[
        {"name": "mail", "module": "email_notify", "config": good}]), tmp_path)
    assert rc == 0, output
    cases = [
        ({"smtp_ur1": "x"}, "smtp_ur1"),
        ({"smtp_url": "http://mail.example.com"}, "smtp_url"),
        ({"tls": "maybe"}, "tls"),
        ({"smtp_url": "smtps://mail.example.com", "tls": "none"}, "tls"),
        ({"from": "not an address"}, "from"),
        ({"to": ["someone@"]}, "to"),
        ({"to": []}, "to"),
        ({"cc": ["{{data.unclosed"]}, "cc"),
        ({"timeout_ms": -5}, "timeout_ms"),
        ({"attach_ics": "yes"}, "attach_ics"),
    ]
    for i, (change, needle) in enumerate(cases):
        cfg = dict(good)
        cfg.update(change)
        sub = tmp_path / f"c{i}"
        sub.mkdir()
        rc, output = hookd_check(mail_config(0, instances=[
            {"name": "mail", "module": "email_notify", "config": cfg}]), sub)
        assert rc == 2, f"{change} was accepted:\n{output}"
        assert needle in output, output


def test_readme_config_is_accepted(tmp_path):
    check_readme_config("email_notify", tmp_path, block_re=README_FIRST_JSONC, env={
        "CIRRUS_SIGNING_KEY": "k", "SMTP_USER": "hookd", "SMTP_PASSWORD": "secret"})
