"""The fake Slack is faithful where the adapter depends on it: proven with slack_sdk itself."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack import FakeSlack, sign


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with FakeSlack(echo_bot_events=False) as fake:
        yield fake


def client(slack: FakeSlack, token: str | None = None, **kwargs: Any) -> AsyncWebClient:
    return AsyncWebClient(token=token or slack.bot_token, base_url=slack.api_url, **kwargs)


async def test_tokens_are_checked_like_slack(slack: FakeSlack) -> None:
    me = await client(slack).auth_test()
    assert (me["user_id"], me["bot_id"], me["team_id"]) == (
        slack.bot_user_id,
        slack.bot_id,
        slack.team_id,
    )
    with pytest.raises(SlackApiError) as wrong:
        await client(slack, "xoxb-wrong").auth_test()
    assert wrong.value.response["error"] == "invalid_auth"
    with pytest.raises(SlackApiError) as app_token:
        await client(slack, slack.app_token).chat_postMessage(channel="C1", text="hi")
    assert app_token.value.response["error"] == "not_allowed_token_type"
    opened = await client(slack).apps_connections_open(app_token=slack.app_token)
    assert opened["url"].startswith(f"ws://127.0.0.1:{slack.port}/link/?ticket=")


async def test_threads_edits_and_blocks_are_kept_as_users_see_them(slack: FakeSlack) -> None:
    web = client(slack)
    root = await slack.user_posts("question", channel="C1")
    posted = await web.chat_postMessage(channel="C1", thread_ts=root.ts, text="draft")
    buttons = [{"type": "actions", "elements": [{"type": "button", "action_id": "a", "value": "1",
                "text": {"type": "plain_text", "text": "👍"}}]}]  # fmt: skip
    await web.chat_update(channel="C1", ts=posted["ts"], text="final &lt;b&gt;", blocks=buttons)
    await web.chat_update(channel="C1", ts=posted["ts"], text="final again")  # keeps blocks

    (reply,) = slack.bot_replies("C1", root.ts)
    assert [m.ts for m in slack.thread("C1", root.ts)] == [root.ts, reply.ts]
    assert reply.edits == ["final &lt;b&gt;", "final again"]
    assert reply.shown == "final again" and reply.buttons[0]["action_id"] == "a"
    assert slack.calls_to("chat.postMessage")[0].content_type == "application/json"
    assert slack.calls_to("auth.test") == []

    with pytest.raises(SlackApiError) as not_ours:
        await web.chat_update(channel="C1", ts=root.ts, text="hijack")
    assert not_ours.value.response["error"] == "cant_update_message"
    too_long = [{"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}]
    with pytest.raises(SlackApiError) as invalid:
        await web.chat_postMessage(channel="C1", text="x", blocks=too_long)
    assert invalid.value.response["error"] == "invalid_blocks"
    with pytest.raises(SlackApiError) as empty, pytest.warns(UserWarning, match="`text`"):
        await web.chat_postMessage(channel="C1", text="")
    assert empty.value.response["error"] == "no_text"


async def test_rate_limit_answers_429_with_an_integer_retry_after(slack: FakeSlack) -> None:
    root = await slack.user_posts("q", channel="C1")
    posted = await client(slack).chat_postMessage(channel="C1", thread_ts=root.ts, text="a")
    slack.rate_limit("chat.update", times=1, retry_after=0)

    with pytest.raises(SlackApiError) as limited:
        await client(slack).chat_update(channel="C1", ts=posted["ts"], text="b")
    assert limited.value.response.status_code == 429
    assert limited.value.response["error"] == "ratelimited"
    assert int(limited.value.response.headers["Retry-After"]) == 0

    slack.rate_limit("chat.update", times=1, retry_after=0)
    patient = client(slack, retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)])
    await patient.chat_update(channel="C1", ts=posted["ts"], text="c")
    assert [c.status for c in slack.calls_to("chat.update")] == [429, 429, 200]
    assert slack.bot_replies("C1", root.ts)[0].shown == "c"


async def test_socket_mode_says_hello_delivers_envelopes_and_records_acks(
    slack: FakeSlack,
) -> None:
    received: list[SocketModeRequest] = []

    async def listener(sm: Any, req: SocketModeRequest) -> None:
        received.append(req)
        await sm.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))

    sm = SocketModeClient(app_token=slack.app_token, web_client=client(slack))
    sm.socket_mode_request_listeners.append(listener)
    await sm.connect()  # type: ignore[no-untyped-call]
    try:
        await slack.wait_for(lambda: slack.socket_connections == 1)
        msg = await slack.user_posts("hello", channel="D0ALICE", retry_num=2)
    finally:
        await sm.close()  # type: ignore[no-untyped-call]

    (request,) = received
    assert request.type == "events_api"
    assert request.retry_attempt == 2 and request.retry_reason == "http_timeout"
    assert request.payload["event"]["ts"] == msg.ts
    assert request.payload["event"]["channel_type"] == "im"
    assert slack.acks == [{"envelope_id": request.envelope_id}]
    assert slack.deliveries[0][1].ack == {"envelope_id": request.envelope_id}


async def test_socket_mode_rejects_an_unknown_ticket(slack: FakeSlack) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await http.ws_connect(f"ws://127.0.0.1:{slack.port}/link/?ticket=forged")


def test_signatures_verify_with_slack_sdk() -> None:
    body = json.dumps({"type": "event_callback"}).encode()
    now, old = str(int(time.time())), str(int(time.time()) - 301)
    verifier = SignatureVerifier("s3cret")
    assert verifier.is_valid(body, now, sign("s3cret", now, body))
    assert not verifier.is_valid(body, now, sign("other", now, body))
    assert not verifier.is_valid(body, old, sign("s3cret", old, body))


async def test_mentions_arrive_as_two_events_for_one_post(slack: FakeSlack) -> None:
    seen: list[dict[str, Any]] = []

    async def listener(sm: Any, req: SocketModeRequest) -> None:
        seen.append(req.payload)
        await sm.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))

    sm = SocketModeClient(app_token=slack.app_token, web_client=client(slack))
    sm.socket_mode_request_listeners.append(listener)
    await sm.connect()  # type: ignore[no-untyped-call]
    try:
        await slack.wait_for(lambda: slack.socket_connections == 1)
        msg = await slack.user_posts(f"<@{slack.bot_user_id}> hi", channel="C1")
    finally:
        await sm.close()  # type: ignore[no-untyped-call]

    assert sorted(p["event"]["type"] for p in seen) == ["app_mention", "message"]
    assert {p["event"]["ts"] for p in seen} == {msg.ts}
    assert len({p["event_id"] for p in seen}) == 2
