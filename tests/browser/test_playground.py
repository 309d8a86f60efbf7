"""The playground at ``/`` in a real browser (CONTRACT §11), against the app under uvicorn and the fake upstream.

Every claim about timing is checked against the fake upstream's record of what it has written
and when its client left, never against sleeps.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from app.auth import key_hash, new_api_key
from app.sections import AuthSettings, DatabaseSettings, PlaygroundSettings
from tests.browser.pages import watch
from tests.browser.services import LiveFactory
from tests.fake_upstream import FakeUpstream, Recorded, Reply, sse_chunks

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page, Response

ANSWER = "#transcript .assistant .text"
TIMEOUT_MS = 10_000


def sqlite(tmp_path: Path) -> DatabaseSettings:
    return DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'history.db'}")


async def open_playground(browser: Browser, **context: Any) -> Page:
    return await (await browser.new_context(**context)).new_page()


async def send(page: Page, text: str) -> None:
    await page.fill("#message", text)
    await page.press("#message", "Enter")


async def answer_text(page: Page) -> str:
    return await page.locator(ANSWER).last.text_content() or ""


async def wait_for_answer(page: Page, text: str) -> None:
    await page.wait_for_function(
        "([selector, text]) => [...document.querySelectorAll(selector)].some((e) => e.textContent === text)",
        arg=[ANSWER, text],
        timeout=TIMEOUT_MS,
    )


async def test_the_page_loads_with_no_console_errors_and_offers_what_the_service_has(
    browser: Browser, live: LiveFactory, upstream: FakeUpstream, tmp_path: Path
) -> None:
    service = await live(database=sqlite(tmp_path))
    page = await open_playground(browser)
    seen = watch(page)
    response = await page.goto(service.url + "/")
    assert response is not None and response.status == 200
    assert "default-src 'self'" in (await response.header_value("content-security-policy") or "")
    await page.wait_for_selector("#model option", state="attached", timeout=TIMEOUT_MS)
    assert await page.locator("#model").input_value() == "local/fake-model"  # the default, selected
    await page.wait_for_selector("#conversations", state="visible", timeout=TIMEOUT_MS)
    assert await page.is_hidden("#key-panel")  # auth is off: no key field
    upstream.default = Reply.sse(["Hello", " there"])
    await send(page, "hi")
    await wait_for_answer(page, "Hello there")
    await page.wait_for_selector("#conversation-list .open", timeout=TIMEOUT_MS)
    assert seen.problems == []


async def test_without_persistence_the_conversation_list_is_hidden_and_turns_go_along(
    browser: Browser, live: LiveFactory, upstream: FakeUpstream
) -> None:
    service = await live()  # database.enabled = false: /conversations is 404
    page = await open_playground(browser)
    seen = watch(page)
    await page.goto(service.url + "/")
    await page.wait_for_selector("#model option", state="attached", timeout=TIMEOUT_MS)
    upstream.default = Reply.sse(["First", " answer"])
    await send(page, "one")
    await wait_for_answer(page, "First answer")
    assert await page.is_hidden("#conversations")
    upstream.default = Reply.sse(["Second"])
    await send(page, "two")
    await wait_for_answer(page, "Second")
    # A service that stores nothing hears the page's earlier turns with the new message.
    assert upstream.requests[-1].body["messages"][-3:] == [
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "First answer"},
        {"role": "user", "content": "two"},
    ]
    assert all("404" in problem for problem in seen.problems), seen.problems  # only the /conversations probe


async def test_the_first_delta_shows_before_the_upstream_has_finished(
    browser: Browser, live: LiveFactory, upstream: FakeUpstream, tmp_path: Path
) -> None:
    service = await live(database=sqlite(tmp_path))
    tokens = ["Streaming", " arrives", " piece", " by", " piece", " while", " the", " model", " writes."]
    upstream.default = Reply.sse(tokens, delay=0.4)
    page = await open_playground(browser, viewport={"width": 900, "height": 560})
    await page.goto(service.url + "/")
    await page.wait_for_selector("#model option", state="attached", timeout=TIMEOUT_MS)
    await send(page, "How does streaming look?")
    await wait_for_answer(page, "Streaming")
    record = upstream.requests[-1]
    total_writes = len(sse_chunks(tokens))
    assert record.finished_at is None, "the first delta showed only after the upstream had finished"
    assert record.writes_done < total_writes
    await page.screenshot(path=str(tmp_path / "playground-mid-stream.png"))
    assert (tmp_path / "playground-mid-stream.png").stat().st_size > 0
    assert await page.is_enabled("#stop")
    await wait_for_answer(page, "".join(tokens))
    await page.wait_for_function("() => document.querySelector('#status').textContent === 'Done.'", timeout=TIMEOUT_MS)
    assert record.finished_at is not None  # done only once the upstream said so


async def test_stop_aborts_the_fetch_and_the_upstream_sees_the_disconnect(
    browser: Browser, live: LiveFactory, upstream: FakeUpstream
) -> None:
    service = await live()
    upstream.default = Reply(writes=sse_chunks(["first words"], finish_reason=None, done=False), hold_open=True)
    page = await open_playground(browser)
    await page.goto(service.url + "/")
    await page.wait_for_selector("#model option", state="attached", timeout=TIMEOUT_MS)
    await send(page, "talk forever")
    await wait_for_answer(page, "first words")
    record = upstream.requests[-1]
    assert record.disconnected_at is None
    await page.click("#stop")
    await asyncio.wait_for(record.disconnected.wait(), 2.0)
    await page.wait_for_selector("#transcript .assistant .turn-note:text('Stopped.')", timeout=TIMEOUT_MS)
    assert await page.is_enabled("#send") and await page.is_disabled("#stop")
    upstream.default = Reply.sse(["Fine."])
    await send(page, "stop there")
    await wait_for_answer(page, "Fine.")
    # Without storage, the next chat carries the stopped answer as far as the page showed it.
    assert upstream.requests[-1].body["messages"][-3:] == [
        {"role": "user", "content": "talk forever"},
        {"role": "assistant", "content": "first words"},
        {"role": "user", "content": "stop there"},
    ]


async def test_model_output_is_text_and_runs_nothing(
    browser: Browser, live: LiveFactory, upstream: FakeUpstream
) -> None:
    service = await live()
    hostile = ["<img src=x onerror=alert(1)>", " <script>window.__injected = 1; alert(2)</script>", " <b>bold?</b>"]
    upstream.default = Reply(
        writes=[
            *sse_chunks([], finish_reason=None, done=False),
            b'data: {"choices":[{"index":0,"delta":{"reasoning_content":"<img src=y onerror=alert(3)>"}}]}\n\n',
            *sse_chunks(hostile)[1:],
        ]
    )
    page = await open_playground(browser)
    seen = watch(page)
    await page.goto(service.url + "/")
    await page.wait_for_selector("#model option", state="attached", timeout=TIMEOUT_MS)
    await send(page, "<i>my own markup</i>")
    await wait_for_answer(page, "".join(hostile))
    transcript = page.locator("#transcript")
    assert await transcript.locator("img, script, b, i").count() == 0
    assert await page.locator("#transcript .user .text").last.text_content() == "<i>my own markup</i>"
    reasoning = page.locator("#transcript .assistant details.reasoning")
    assert await reasoning.is_visible() and await reasoning.get_attribute("open") is None  # collapsed
    assert await reasoning.text_content() == "Reasoning<img src=y onerror=alert(3)>"
    assert await page.evaluate("window.__injected") is None
    assert seen.dialogs == []


async def test_a_retryable_error_offers_retry_and_retry_works(
    browser: Browser, live: LiveFactory, upstream: FakeUpstream
) -> None:
    service = await live()
    attempts: list[Recorded] = []

    def reply(request: Recorded) -> Reply:
        attempts.append(request)
        if len(attempts) == 1:
            return Reply.json({"error": {"message": "model is loading", "type": "server_error"}}, 503)
        return Reply.sse(["Second", " time", " lucky"])

    upstream.default = reply
    page = await open_playground(browser)
    await page.goto(service.url + "/")
    await page.wait_for_selector("#model option", state="attached", timeout=TIMEOUT_MS)
    await send(page, "please answer")
    await page.wait_for_selector("#problem", state="visible", timeout=TIMEOUT_MS)
    problem = await page.text_content("#problem-text") or ""
    assert "The LLM server could not be reached" in problem and "upstream_unavailable" in problem
    assert await page.is_visible("#retry")
    await page.click("#retry")
    await wait_for_answer(page, "Second time lucky")
    assert len(attempts) == 2 and attempts[1].body["messages"][-1] == {"role": "user", "content": "please answer"}
    assert await page.is_hidden("#problem")
    assert await page.locator("#transcript .user").count() == 1  # the failed attempt's turns made way for the retry


async def test_an_error_that_is_not_retryable_has_no_retry(
    browser: Browser, live: LiveFactory, upstream: FakeUpstream
) -> None:
    service = await live()
    upstream.default = Reply.json({"error": {"message": "context length exceeded", "type": "invalid_request"}}, 400)
    page = await open_playground(browser)
    await page.goto(service.url + "/")
    await page.wait_for_selector("#model option", state="attached", timeout=TIMEOUT_MS)
    await send(page, "too long")
    await page.wait_for_selector("#problem", state="visible", timeout=TIMEOUT_MS)
    problem = await page.text_content("#problem-text") or ""
    assert "The LLM server refused the request" in problem and "context length exceeded" in problem
    assert await page.is_hidden("#retry")


async def test_a_conversation_survives_a_reload_and_can_be_renamed_and_deleted(
    browser: Browser, live: LiveFactory, upstream: FakeUpstream, tmp_path: Path
) -> None:
    service = await live(database=sqlite(tmp_path))
    upstream.default = Reply.sse(["Blue", " it", " is"])
    page = await open_playground(browser)
    seen = watch(page)
    await page.goto(service.url + "/")
    await page.wait_for_selector("#model option", state="attached", timeout=TIMEOUT_MS)
    await send(page, "Remember the blue door")
    await wait_for_answer(page, "Blue it is")
    await page.wait_for_selector("#conversation-list .open:text('Remember the blue door')", timeout=TIMEOUT_MS)

    await page.reload()
    item = page.locator("#conversation-list .conversation", has_text="Remember the blue door")
    await item.wait_for(timeout=TIMEOUT_MS)
    assert await page.locator("#transcript .turn").count() == 0
    await item.locator(".open").click()
    await wait_for_answer(page, "Blue it is")
    assert await page.locator("#transcript .user .text").text_content() == "Remember the blue door"

    upstream.default = Reply.sse(["Still", " blue"])
    await send(page, "And now?")
    await wait_for_answer(page, "Still blue")
    continued = upstream.requests[-1].body["messages"]
    assert [turn["content"] for turn in continued] == ["Remember the blue door", "Blue it is", "And now?"]

    await item.locator(".rename").click()
    await item.locator("input[name=title]").fill("Doors")
    await item.locator("input[name=title]").press("Enter")
    await page.wait_for_selector("#conversation-list .open:text-is('Doors')", timeout=TIMEOUT_MS)
    doors = page.locator("#conversation-list .conversation", has_text="Doors")
    await doors.locator(".delete").click()
    await doors.locator(".really-delete").click()
    await page.wait_for_selector("#conversations-note:text('No conversations yet.')", timeout=TIMEOUT_MS)
    async with httpx.AsyncClient() as client:
        assert (await client.get(service.url + "/conversations")).json()["data"] == []
    assert seen.problems == []


async def test_with_auth_on_the_key_field_appears_the_key_is_kept_and_no_login_dialog_is_offered(
    browser: Browser, live: LiveFactory, upstream: FakeUpstream
) -> None:
    key = new_api_key()
    # Basic configured too: a Basic challenge to the page's fetch() would make the browser ask for a login.
    auth = AuthSettings(enabled=True, api_keys={"alice": key_hash(key)}, username="bob", password="a plain one")
    service = await live(auth=auth)
    page = await open_playground(browser)
    challenges: list[str] = []

    def note(response: Response) -> None:
        if response.status == 401:
            challenges.append(response.headers.get("www-authenticate", ""))

    page.on("response", note)
    first = await page.goto(service.url + "/")
    assert first is not None and first.status == 200  # the page itself is public
    await page.wait_for_selector("#key-panel", state="visible", timeout=TIMEOUT_MS)
    assert await page.is_hidden("#conversations")
    assert challenges and all(c.startswith("Bearer") and "Basic" not in c for c in challenges), challenges

    await page.fill("#api-key", "agb_wrong")
    await page.press("#api-key", "Enter")
    await page.wait_for_selector("#key-reason:text('That API key was refused')", timeout=TIMEOUT_MS)
    await page.fill("#api-key", key)
    await page.click("#key-form button[type=submit]")
    await page.wait_for_selector("#model option", state="attached", timeout=TIMEOUT_MS)
    assert await page.evaluate("localStorage.getItem('agent-backend.api-key')") == key
    assert all("Basic" not in c for c in challenges), challenges

    await page.reload()
    await page.wait_for_selector("#model option", state="attached", timeout=TIMEOUT_MS)
    await page.wait_for_selector("#key-reason:text('Using the API key kept')", timeout=TIMEOUT_MS)
    upstream.default = Reply.sse(["Welcome", " back"])
    await send(page, "hello again")
    await wait_for_answer(page, "Welcome back")
    assert upstream.requests[-1].model == "fake-model"


async def test_the_playground_is_off_when_disabled(live: LiveFactory, client: httpx.AsyncClient) -> None:
    service = await live(playground=PlaygroundSettings(enabled=False))
    assert (await client.get(service.url + "/")).status_code == 404
    assert (await client.get(service.url + "/playground/app.js")).status_code == 404


async def test_keyboard_only_labels_and_a_phone_wide_layout(
    browser: Browser, live: LiveFactory, upstream: FakeUpstream, tmp_path: Path
) -> None:
    service = await live(database=sqlite(tmp_path))
    page = await open_playground(browser, viewport={"width": 375, "height": 740}, is_mobile=True)
    await page.goto(service.url + "/")
    await page.wait_for_selector("#model option", state="attached", timeout=TIMEOUT_MS)
    unlabelled = await page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea, button')]
            .filter((e) => !e.closest('[hidden]') && !e.closest('template'))
            .filter((e) => !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())
            .map((e) => e.id || e.outerHTML)"""
    )
    assert unlabelled == []
    upstream.default = Reply.sse(["A long answer without spaces: " + "x" * 300])
    # Keyboard only: Tab from the top of the page until the message box has the focus.
    await page.evaluate("document.activeElement.blur()")
    for _ in range(20):
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.id") == "message":
            break
    assert await page.evaluate("document.activeElement.id") == "message"
    await page.keyboard.type("first line")
    await page.keyboard.press("Shift+Enter")
    await page.keyboard.type("second line")
    assert await page.input_value("#message") == "first line\nsecond line"
    await page.keyboard.press("Enter")
    await wait_for_answer(page, "A long answer without spaces: " + "x" * 300)
    assert await page.locator("#transcript .user .text").text_content() == "first line\nsecond line"
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"the page is {width}px wide at a 375px viewport"


async def test_an_answer_that_breaks_off_keeps_its_text_and_offers_retry(
    browser: Browser, live: LiveFactory, upstream: FakeUpstream
) -> None:
    service = await live()
    upstream.default = Reply(writes=sse_chunks(["half an"], finish_reason=None, done=False), close_abruptly=True)
    page = await open_playground(browser)
    await page.goto(service.url + "/")
    await page.wait_for_selector("#model option", state="attached", timeout=TIMEOUT_MS)
    await send(page, "tell me")
    await page.wait_for_selector("#problem", state="visible", timeout=TIMEOUT_MS)
    assert "The answer broke off before it was finished" in (await page.text_content("#problem-text") or "")
    assert await answer_text(page) == "half an"
    assert await page.locator("#transcript .assistant .turn-note").text_content() == "The answer broke off here."
    upstream.default = Reply.sse(["a whole", " answer"])
    await page.click("#retry")
    await wait_for_answer(page, "a whole answer")
    assert await page.locator("#transcript .assistant").count() == 1


async def test_a_tool_call_shows_as_text_and_comes_back_after_a_reload(
    browser: Browser, live: LiveFactory, upstream: FakeUpstream, tmp_path: Path
) -> None:
    service = await live(database=sqlite(tmp_path))
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    upstream.default = Reply(
        writes=[
            b'data: {"choices":[{"index":0,"delta":{"tool_calls":[' + json.dumps(call).encode() + b"]}}]}\n\n",
            b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":'
            b'{"arguments":"{\\"city\\": \\"<b>Oslo</b>\\"}"}}]}}]}\n\n',
            b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}\n\n',
            b"data: [DONE]\n\n",
        ]
    )
    page = await open_playground(browser)
    seen = watch(page)
    await page.goto(service.url + "/")
    await page.wait_for_selector("#model option", state="attached", timeout=TIMEOUT_MS)
    await send(page, "Weather in Oslo?")
    shown = 'Tool call: get_weather({"city": "<b>Oslo</b>"})'
    tool_call = page.locator("#transcript .assistant .tool-call")
    await tool_call.wait_for(timeout=TIMEOUT_MS)
    assert await tool_call.text_content() == shown
    assert await page.locator("#transcript b").count() == 0  # the arguments are text, not markup
    note = page.locator("#transcript .assistant .turn-note")
    assert "runs none" in (await note.text_content() or "")

    await page.reload()
    item = page.locator("#conversation-list .conversation", has_text="Weather in Oslo?")
    await item.locator(".open").click()
    await page.locator("#transcript .assistant .tool-call").wait_for(timeout=TIMEOUT_MS)
    assert await page.locator("#transcript .assistant .tool-call").text_content() == shown
    assert seen.problems == []
