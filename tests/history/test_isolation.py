"""One principal never sees, continues, renames or deletes another's conversation (§6, §7): 404, as if absent."""

from __future__ import annotations

import httpx

from tests.fake_upstream import FakeUpstream
from tests.history.conftest import StartHistory
from tests.history.helpers import chat, conversation, meta_of


async def test_every_conversation_route_is_404_for_another_principal(
    start_history: StartHistory, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    service = await start_history()
    _, lines, _ = await chat(client, service.url, {"message": "alice's secret"}, principal="alice")
    cid = meta_of(lines)["conversation_id"]
    bob = {"X-Test-Principal": "bob"}
    url = f"{service.url}/conversations/{cid}"

    answers = [
        await client.get(url, headers=bob),
        await client.patch(url, json={"title": "mine now"}, headers=bob),
        await client.delete(url, headers=bob),
    ]
    for response in answers:
        assert response.status_code == 404, (response.request.method, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == "not_found"
        assert "secret" not in response.text
    requests_before = len(upstream.requests)
    for body in (
        {"message": "continue it", "conversation_id": cid},
        {"message": "read it", "conversation_id": cid, "store": False},
    ):
        status, problem, _ = await chat(client, service.url, body, principal="bob")
        assert status == 404 and problem[0]["code"] == "not_found"
    assert len(upstream.requests) == requests_before  # bob's chats never reached the LLM

    listed = await client.get(f"{service.url}/conversations", headers=bob)
    assert listed.status_code == 200 and listed.json() == {"data": [], "next_cursor": None}

    # A real unknown id answers the same, so ids cannot be probed.
    unknown = await client.get(f"{service.url}/conversations/00000000-0000-4000-8000-000000000000", headers=bob)
    assert unknown.status_code == 404 and unknown.json()["detail"] == answers[0].json()["detail"]

    # Alice's conversation is untouched.
    mine = await conversation(client, service.url, cid, principal="alice")
    assert mine["title"] == "alice's secret"
    assert [m["role"] for m in mine["messages"]] == ["user", "assistant"]
    alice_list = (await client.get(f"{service.url}/conversations", headers={"X-Test-Principal": "alice"})).json()
    assert [c["id"] for c in alice_list["data"]] == [cid]
