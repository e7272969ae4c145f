"""The web chat's conveniences in a real browser (Debian's chromium via Playwright) against the
real host with the mock echo agent in a real container: tables and quotes in replies, a copy
button on code blocks, removing a chosen file before sending, replies labelled with the group's
name, an error banner that clears once the host is back, and "New conversation" sending /new.
Every wait is one of Playwright's auto-waiting checks.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from nanohost.app import build_app
from tests.support.host import AUTH, add_group, bind, make_settings
from tests.web.conftest import PASSWORD, set_web_password
from tests.web.test_webchat_browser import WAIT, browser, chromium  # noqa: F401  (fixtures)

pytestmark = pytest.mark.docker

REPLY = "a table:\n\n| fruit | count |\n|---|---|\n| apple | 3 |\n\n> a quote\n\n```\nprint('hi') < 2\n```"


async def test_web_chat_conveniences(start_host: Any, browser: Any, tmp_path: Path) -> None:  # noqa: F811
    from playwright.async_api import expect

    settings = make_settings(tmp_path)
    add_group(settings, "team")
    bind(settings, "web", "team", "team")
    set_web_password(settings, PASSWORD)
    host = await start_host(settings)
    context = await browser.new_context(permissions=["clipboard-read", "clipboard-write"])
    page = await context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    console_errors: list[str] = []
    page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)

    await page.goto(str(host.client.make_url("/")))
    await page.fill("#password", PASSWORD)
    await page.click("#login button")
    await expect(page.locator("#groups button.active")).to_have_text("team", timeout=WAIT)

    # a reply with a table, a quote and a code block; labelled with the group's name
    await page.fill("#text", REPLY)
    await page.click("#send")
    reply = page.locator(".message.out", has_text="echo: a table:")
    await expect(reply.locator("table td").first).to_have_text("apple", timeout=WAIT)
    await expect(reply.locator("table th")).to_have_text(["fruit", "count"])
    await expect(reply.locator("blockquote")).to_have_text("a quote")
    await expect(reply.locator(".meta")).to_contain_text("team ·")
    await expect(page.locator(".message.in .meta").first).to_contain_text("you ·")

    # the copy button copies the code, not its own label
    copy = reply.locator("pre button.copy")
    await expect(copy).to_have_text("Copy")
    await copy.click()
    await expect(copy).to_have_text("Copied")
    assert await page.evaluate("navigator.clipboard.readText()") == "print('hi') < 2"

    # a chosen file can be removed before sending: the message goes without it
    await page.set_input_files(
        "#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not to be sent"}]
    )
    await expect(page.locator("#attachment")).to_be_visible()
    await expect(page.locator("#file-name")).to_have_text("notes.txt")
    await page.click("#file-clear")
    await expect(page.locator("#attachment")).to_be_hidden()
    await page.fill("#text", "without the file")
    await page.click("#send")
    echo = page.locator(".message.out", has_text="echo: without the file")
    await expect(echo).to_be_visible(timeout=WAIT)
    await expect(echo).not_to_contain_text("inbox")
    await expect(page.locator(".message.in", has_text="without the file").locator(".files")).to_have_count(0)
    assert not (settings.groups_dir / "team" / "inbox" / "notes.txt").exists()

    # the host goes away: sending fails with an error banner, which clears once it is back
    port = host.client.port
    await asyncio.wait_for(host.client.close(), 20)
    await expect(page.locator("#connection")).to_have_text("reconnecting…", timeout=WAIT)
    await page.fill("#text", "while the host is away")
    await page.click("#send")
    await expect(page.locator("#error")).to_have_text(
        "The host cannot be reached: not sent. Send it again once it is back.", timeout=WAIT
    )
    await expect(page.locator("#text")).to_have_value("while the host is away")  # kept to retry
    restarted = TestClient(TestServer(build_app(settings), host="127.0.0.1", port=port))
    await restarted.start_server()
    try:
        await expect(page.locator("#connection")).to_have_text("", timeout=WAIT)
        await expect(page.locator("#error")).to_be_hidden()

        # "New conversation" sends /new as a message
        await page.click("#new-conversation")
        await expect(page.locator(".message.in", has_text="/new")).to_be_visible(timeout=WAIT)
        response = await restarted.get("/api/groups/team/messages?after=0", headers=AUTH)
        texts = [m["text"] for m in (await response.json())["messages"] if m["direction"] == "in"]
        assert texts[-1] == "/new"
    finally:
        await restarted.close()
    assert problems == []
    # the only console errors: the failed send and the socket while the host was away
    assert all("Failed to load resource" in e or "WebSocket" in e for e in console_errors), console_errors
