"""Local stand-ins for the notification services that cannot run here (Slack, PagerDuty, an SMTP
relay), each checking the payload format the real service accepts and recording what arrived.

- Slack stand-in: an incoming-webhook endpoint (POST /slack/<token>) that checks Alertmanager's
  Slack payload (attachments with title, text, fallback, color) and answers "ok" like Slack.
- PagerDuty stand-in: the Events API v2 endpoint (POST /v2/enqueue) that checks routing_key,
  event_action (trigger/resolve), dedup_key and, on trigger, payload.summary/source/severity, and
  answers 202 like PagerDuty.
- Webhook stand-in: POST /webhook, Alertmanager's webhook format (version 4).
- SMTP stand-in: a minimal SMTP server (HELO/EHLO, MAIL, RCPT, DATA, QUIT) that keeps each message.
"""

from __future__ import annotations

import json
import socketserver
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PAGERDUTY_SEVERITIES = {"critical", "error", "warning", "info"}


@dataclass
class Received:
    """What a stand-in accepted, and what it refused with the reason."""

    kind: str
    body: dict | str
    at: float = field(default_factory=time.time)


class Sinks:
    """The HTTP stand-ins on one port and the SMTP stand-in on another, on 127.0.0.1."""

    def __init__(self, http_port: int, smtp_port: int):
        self.http_port = http_port
        self.smtp_port = smtp_port
        self.received: list[Received] = []
        self.refused: list[str] = []
        self._lock = threading.Lock()
        sinks = self

        class Http(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                try:
                    body = json.loads(raw)
                    kind, reply, status = sinks.check(self.path, body)
                except (ValueError, KeyError, TypeError) as exc:
                    sinks.refuse(f"{self.path}: {exc}")
                    kind, reply, status = None, b'{"status":"invalid event"}', 400
                if kind:
                    sinks.add(Received(kind, body))
                self.send_response(status)
                self.send_header("Content-Type", "application/json" if reply.startswith(b"{") else "text/plain")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        class Smtp(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.wfile.write(b"220 smtp stand-in ready\r\n")
                data: list[str] = []
                in_data = False
                for raw in self.rfile:
                    line = raw.decode(errors="replace").rstrip("\r\n")
                    if in_data:
                        if line == ".":
                            in_data = False
                            sinks.add(Received("email", "\n".join(data)))
                            data = []
                            self.wfile.write(b"250 queued\r\n")
                        else:
                            data.append(line[1:] if line.startswith("..") else line)
                        continue
                    verb = line.split(" ", 1)[0].upper()
                    if verb == "EHLO":
                        self.wfile.write(b"250-smtp stand-in\r\n250 8BITMIME\r\n")
                    elif verb == "DATA":
                        in_data = True
                        self.wfile.write(b"354 end with .\r\n")
                    elif verb == "QUIT":
                        self.wfile.write(b"221 bye\r\n")
                        return
                    else:
                        self.wfile.write(b"250 ok\r\n")

        self._http = ThreadingHTTPServer(("127.0.0.1", http_port), Http)
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self._smtp = socketserver.ThreadingTCPServer(("127.0.0.1", smtp_port), Smtp)
        for server in (self._http, self._smtp):
            threading.Thread(target=server.serve_forever, daemon=True).start()

    def add(self, item: Received) -> None:
        with self._lock:
            self.received.append(item)

    def refuse(self, reason: str) -> None:
        with self._lock:
            self.refused.append(reason)

    def close(self) -> None:
        for server in (self._http, self._smtp):
            server.shutdown()
            server.server_close()

    @staticmethod
    def check(path: str, body: dict) -> tuple[str, bytes, int]:
        """The kind of a valid payload and the real service's answer; ValueError when invalid."""
        if path.startswith("/slack/"):
            attachments = body["attachments"]
            if not attachments:
                raise ValueError("slack: attachments is empty")
            for a in attachments:
                if not (a.get("title") and a.get("fallback") and "text" in a):
                    raise ValueError("slack: an attachment needs title, text and fallback")
                if a.get("color") not in ("good", "danger", "warning", None):
                    raise ValueError(f"slack: unexpected color {a.get('color')!r}")
            return "slack", b"ok", 200
        if path == "/v2/enqueue":
            if not body.get("routing_key") or len(body["routing_key"]) != 32:
                raise ValueError("pagerduty: routing_key must be the 32-character integration key")
            if body["event_action"] not in ("trigger", "resolve", "acknowledge"):
                raise ValueError(f"pagerduty: unknown event_action {body['event_action']!r}")
            if not body.get("dedup_key"):
                raise ValueError("pagerduty: dedup_key is missing")
            if body["event_action"] == "trigger":
                payload = body["payload"]
                if not (payload.get("summary") and payload.get("source")):
                    raise ValueError("pagerduty: payload needs summary and source")
                if payload.get("severity") not in PAGERDUTY_SEVERITIES:
                    raise ValueError(
                        f"pagerduty: severity {payload.get('severity')!r} is not one of {PAGERDUTY_SEVERITIES}"
                    )
            reply = json.dumps({"status": "success", "message": "Event processed", "dedup_key": body["dedup_key"]})
            return "pagerduty", reply.encode(), 202
        if path == "/webhook":
            if body.get("version") != "4" or "alerts" not in body:
                raise ValueError("webhook: expected Alertmanager's version 4 payload")
            return "webhook", b"{}", 200
        raise ValueError(f"no stand-in at {path}")

    def of(self, kind: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.kind == kind]

    def wait_for(self, predicate, timeout: float) -> list[Received]:
        """Every item received once predicate(item) holds for at least one, or [] after timeout."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self._lock:
                if any(predicate(r) for r in self.received):
                    return list(self.received)
            time.sleep(0.5)
        return []


def mentions(item: Received, alertname: str, status: str) -> bool:
    """Whether a received notification is about alertname and is firing or resolved."""
    text = json.dumps(item.body) if isinstance(item.body, dict) else item.body
    if alertname not in text:
        return False
    if item.kind == "pagerduty":
        return item.body["event_action"] == ("trigger" if status == "firing" else "resolve")
    if item.kind == "slack":
        return ("[FIRING" if status == "firing" else "[RESOLVED") in item.body["attachments"][0]["title"]
    if item.kind == "webhook":
        return item.body["status"] == status
    return ("[FIRING" if status == "firing" else "[RESOLVED") in text
