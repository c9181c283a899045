"""Hot-lead webhooks: signed, retried with back-off, failures recorded and visible."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from leadscore.auth import SCORE_READ
from leadscore.settings import WebhookSettings
from leadscore.webhooks import (
    DELIVERY_HEADER,
    HOT_LEAD_EVENT,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookLog,
    WebhookSender,
    sign,
    verify_signature,
)
from pipelines.examples import current_features, load_champion
from tests.api_keys import api_client, key_headers
from tests.stack import build_stack

SECRET = "s3cret-for-tests"


class Receiver:
    """A local CRM endpoint: records every request, answers with scripted statuses."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.statuses = list(statuses or [])
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self._arrived = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver._arrived:
                    receiver.requests.append((dict(self.headers), body))
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver._arrived.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/leadscore"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, n: int, timeout: float = 15.0) -> list[tuple[dict[str, str], bytes]]:
        deadline = time.monotonic() + timeout
        with self._arrived:
            while len(self.requests) < n and time.monotonic() < deadline:
                self._arrived.wait(deadline - time.monotonic())
        assert len(self.requests) >= n, f"{len(self.requests)} webhook(s) arrived, expected {n}"
        return self.requests

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _sender(tmp_path: Path, url: str, **options: float) -> WebhookSender:
    log = WebhookLog(f"sqlite:///{tmp_path / 'hooks.db'}")
    settings = {"backoff_seconds": 0.05, "max_attempts": 3, "timeout_seconds": 2.0, **options}
    return WebhookSender(log, url=url, secret=SECRET, poll_seconds=0.1, **settings)  # type: ignore[arg-type]


def _wait_status(log: WebhookLog, delivery_id: str, status: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        delivery = log.get(delivery_id)
        if delivery is not None and delivery.status == status:
            return delivery
        time.sleep(0.05)
    raise AssertionError(f"delivery {delivery_id} is {log.get(delivery_id)}, not {status}")


# -- signatures ------------------------------------------------------------------------------
def test_a_signature_verifies_only_the_body_and_time_it_was_made_for():
    body = b'{"lead_id":7}'
    now = 1_800_000_000
    signature = sign(SECRET, now, body)
    assert signature.startswith("sha256=") and len(signature) == 7 + 64
    ok = {"timestamp": str(now), "signature": signature, "now": now + 10}
    assert verify_signature(SECRET, body=body, **ok)
    assert not verify_signature(SECRET, body=b'{"lead_id":8}', **ok)
    assert not verify_signature("another secret", body=body, **ok)
    assert not verify_signature(SECRET, body=body, timestamp=str(now + 1), signature=signature)
    # a replay long after the fact is refused
    late = {**ok, "now": now + 3600}
    assert not verify_signature(SECRET, body=body, **late)
    assert not verify_signature(SECRET, body=body, timestamp=None, signature=signature)
    assert not verify_signature(SECRET, body=body, timestamp="soon", signature=signature)


def test_settings_refuse_a_webhook_url_without_a_secret_or_not_http():
    with pytest.raises(ValueError, match=r"webhooks\.secret is required"):
        WebhookSettings(url="https://crm.example.com/hook")
    with pytest.raises(ValueError, match=r"webhooks\.url must be an http\(s\) URL"):
        WebhookSettings(url="ftp://crm.example.com/hook", secret="x")
    assert "x-secret" not in repr(WebhookSettings(url="http://crm/h", secret="x-secret"))


# -- the sender ------------------------------------------------------------------------------
def test_a_delivery_is_signed_and_sent_once(tmp_path, receiver):
    sender = _sender(tmp_path, receiver.url)
    sender.start()
    try:
        delivery_id = sender.notify(event=HOT_LEAD_EVENT, lead_id=7, payload={"lead_id": 7})
        (headers, body), *_ = receiver.wait_for(1)
        delivered = _wait_status(sender.log, delivery_id, "delivered")
    finally:
        sender.stop()
    assert json.loads(body) == {"lead_id": 7}
    assert headers[DELIVERY_HEADER] == delivery_id
    assert verify_signature(
        SECRET, body=body, timestamp=headers[TIMESTAMP_HEADER], signature=headers[SIGNATURE_HEADER]
    )
    assert delivered.attempts == 1 and delivered.response_status == 200
    assert delivered.delivered_at is not None and delivered.last_error is None
    assert len(receiver.requests) == 1


def test_server_errors_are_retried_with_growing_waits_until_delivered(tmp_path, receiver):
    receiver.statuses = [503, 500]
    sender = _sender(tmp_path, receiver.url, backoff_seconds=0.2)
    sender.start()
    try:
        delivery_id = sender.notify(event=HOT_LEAD_EVENT, lead_id=8, payload={"lead_id": 8})
        delivered = _wait_status(sender.log, delivery_id, "delivered")
    finally:
        sender.stop()
    assert delivered.attempts == 3
    assert [json.loads(b) for _, b in receiver.requests] == [{"lead_id": 8}] * 3
    # each attempt carries the same delivery id, so the CRM can de-duplicate
    assert {h[DELIVERY_HEADER] for h, _ in receiver.requests} == {delivery_id}
    assert sender.backoff(1) == pytest.approx(0.2) and sender.backoff(2) == pytest.approx(0.4)
    assert sender.backoff(30) == sender.max_backoff_seconds


def test_a_refused_delivery_fails_at_once_and_can_be_sent_again(tmp_path, receiver):
    receiver.statuses = [400]
    sender = _sender(tmp_path, receiver.url)
    sender.start()
    try:
        delivery_id = sender.notify(event=HOT_LEAD_EVENT, lead_id=9, payload={"lead_id": 9})
        failed = _wait_status(sender.log, delivery_id, "failed")
        assert failed.attempts == 1 and failed.response_status == 400
        assert "HTTP 400" in (failed.last_error or "")
        assert [d.delivery_id for d in sender.log.list(status="failed")] == [delivery_id]
        # when: the CRM is fixed and the delivery is sent again
        assert sender.log.retry(delivery_id)
        sender.wake()
        delivered = _wait_status(sender.log, delivery_id, "delivered")
    finally:
        sender.stop()
    assert delivered.attempts == 1  # a fresh budget of attempts
    assert not sender.log.retry(delivery_id)  # delivered: nothing to retry
    assert sender.log.counts() == {"pending": 0, "delivered": 1, "failed": 0}


def test_an_unreachable_crm_fails_after_the_last_attempt_with_the_error(tmp_path):
    closed = Receiver()
    url = closed.url
    closed.close()  # nothing listens there any more
    sender = _sender(tmp_path, url, max_attempts=2)
    sender.start()
    try:
        delivery_id = sender.notify(event=HOT_LEAD_EVENT, lead_id=10, payload={"lead_id": 10})
        failed = _wait_status(sender.log, delivery_id, "failed")
    finally:
        sender.stop()
    assert failed.attempts == 2 and failed.response_status is None
    assert "refused" in (failed.last_error or "").lower()


def test_deliveries_pending_at_shutdown_are_sent_by_the_next_start(tmp_path, receiver):
    first = _sender(tmp_path, receiver.url)  # never started: the process stopped first
    delivery_id = first.notify(event=HOT_LEAD_EVENT, lead_id=11, payload={"lead_id": 11})
    assert first.log.get(delivery_id).status == "pending"
    second = _sender(tmp_path, receiver.url)
    second.start()
    try:
        _wait_status(second.log, delivery_id, "delivered")
    finally:
        second.stop()
    assert len(receiver.wait_for(1)) == 1


# -- through the API -------------------------------------------------------------------------
def _event(event_id: str, lead_id: int, event_type: str, minutes_ago: int) -> dict:
    moment = datetime.now(UTC) - timedelta(minutes=minutes_ago)
    return {
        "event_id": event_id,
        "lead_id": lead_id,
        "occurred_at": moment.isoformat(),
        "event_type": event_type,
        "channel": "web",
    }


@pytest.fixture(scope="module")
def fresh_stack(tmp_path_factory):
    """A stack whose newest leads arrived yesterday: fresh leads a demo request can still wake
    (the session stack's leads are weeks old, past the 30-day snapshots the model learns from).
    """
    return build_stack(
        tmp_path_factory.mktemp("fresh"),
        n_leads=4000,
        bad_row_share=0.0,
        end_date=datetime.now(UTC).date() - timedelta(days=1),
    )


# A burst of strong intent: pricing views, a webinar, demo requests, trial sign-ups.
BURST = (
    "pricing_page_view",
    "pricing_page_view",
    "webinar_attended",
    "demo_request",
    "demo_request",
    "trial_signup",
    "trial_signup",
    "form_submit",
)


@pytest.mark.slow
def test_a_cold_lead_turns_hot_after_a_demo_request_and_the_crm_is_told(fresh_stack, receiver):
    # given: a service with webhooks to the receiver, hot from 12% (sales' cut-off), and the
    # open cold leads of the last weeks, those closest to warm first
    settings = fresh_stack.settings.model_copy(
        update={"webhooks": WebhookSettings(url=receiver.url, secret=SECRET)}
    )
    frame = current_features(settings)
    frame["p"] = load_champion(settings).predict_proba_frame(frame)
    open_leads = frame[frame["lifecycle_stage"].isin(["lead", "MQL"]) & (frame["p"] < 0.07)]
    candidates = open_leads.sort_values("p", ascending=False)["lead_id"].astype(int).tolist()
    with api_client(settings) as client:
        client.app.state.service.scorer.set_bands({"hot_min": 0.12, "warm_min": 0.07})
        # when: a cold lead requests a demo (after looking at pricing and a webinar) ...
        # (the offline features are as of the build, the API's as of now: a lead near warm
        # offline may be warm by now, and is not a cold lead to try)
        cold = [
            lead
            for lead in candidates[:120]
            if client.post("/v1/score", json={"lead_id": lead}).json()["band"] == "cold"
        ]
        assert len(cold) >= 20, f"only {len(cold)} of the candidates are cold"
        for lead in cold[:60]:
            burst = [
                _event(f"hot-{lead}-{i}", lead, kind, 60 - 5 * i) for i, kind in enumerate(BURST)
            ]
            answer = client.post("/v1/events", json={"events": burst}).json()
            (fresh,) = answer["scores"]
            if fresh["band"] == "hot":
                break
            # ... a lead that stays below hot is not announced
            assert answer["turned_hot"] == []
        # then: the answer says the lead turned hot, and the CRM receives a signed webhook
        assert fresh["band"] == "hot", "no cold lead turned hot after a demo request"
        assert answer["turned_hot"] == [lead]
        (headers, body), *_ = receiver.wait_for(1)
        assert verify_signature(
            SECRET,
            body=body,
            timestamp=headers[TIMESTAMP_HEADER],
            signature=headers[SIGNATURE_HEADER],
        )
        payload = json.loads(body)
        assert payload["event"] == HOT_LEAD_EVENT and headers["X-Leadscore-Event"] == "lead.hot"
        assert payload["lead_id"] == lead and payload["band"] == "hot"
        assert payload["previous_band"] == "cold"
        assert payload["probability"] == pytest.approx(fresh["probability"])
        assert payload["model_version"] == fresh["model_version"]
        assert payload["reasons"] == [
            {k: r[k] for k in ("feature", "label", "contribution")} for r in fresh["reasons"]
        ]
        # the delivery is visible to admins, delivered at the first attempt
        deadline = time.monotonic() + 10
        while True:
            listed = client.get("/v1/admin/webhooks", params={"lead_id": lead}).json()
            (delivery,) = listed["deliveries"]
            if delivery["status"] == "delivered" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert listed["configured"] is True
        assert delivery["delivery_id"] == headers[DELIVERY_HEADER]
        assert delivery["status"] == "delivered" and delivery["attempts"] == 1
        # a retrying client sends the same events again: still hot, no second webhook
        again = client.post("/v1/events", json={"events": burst}).json()
        assert again["duplicates"] == len(BURST) and again["turned_hot"] == []
        time.sleep(0.3)
        assert len(receiver.requests) == 1
        # the rescoring of both requests is in the audit log, after the score before them
        client.app.state.score_recorder.flush()
        history = client.get(f"/v1/leads/{lead}/scores").json()["scores"]
        assert [s["band"] for s in history[:3]] == ["hot", "hot", "cold"]


def test_webhook_routes_need_the_admin_scope_and_name_unknown_deliveries(stack):
    with api_client(stack.settings) as client:
        reader = key_headers(stack.settings, SCORE_READ)
        assert client.get("/v1/admin/webhooks", headers=reader).status_code == 403
        assert client.get("/v1/admin/webhooks", headers={"authorization": ""}).status_code == 401
        listed = client.get("/v1/admin/webhooks", params={"status": "failed"})
        assert listed.status_code == 200 and listed.json()["configured"] is False
        bad = client.get("/v1/admin/webhooks", params={"status": "lost"})
        assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "query.status"
        missing = client.post("/v1/admin/webhooks/nope/retry")
        assert missing.status_code == 404 and "nope" in missing.json()["detail"]
