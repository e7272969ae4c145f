"""The web chat in a real browser (Debian's chromium via Playwright) against the real host.

The host runs the mock echo agent in a real Docker container. The browser logs in (after a wrong
password), sends Markdown and sees it rendered, sees "thinking…" while the agent works (``[slow]``
holds the mock's turn open until a follow-up, so the wait is observable without timing tricks),
uploads a file and downloads the copy the agent sends back, reloads into the history (its own
file listed with its message), and keeps its conversation across a host restart, which closes
the page's socket at once (no wait for a shutdown timeout). Every wait is one of Playwright's
auto-waiting checks.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from nanohost.app import build_app
from tests.support.host import AUTH, add_group, bind, make_settings
from tests.web.conftest import PASSWORD, set_web_password

pytestmark = pytest.mark.docker
CHROMIUM = Path("/usr/bin/chromium")
WAIT = 60_000  # ms: a cold container start on a busy machine


def read(path: str | Path) -> bytes:
    return Path(path).read_bytes()


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"NO CHROMIUM at {CHROMIUM}: install it with `apt-get install -y chromium`")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Any]:
    playwright_api = pytest.importorskip(
        "playwright.async_api", reason="NO PLAYWRIGHT: pip install playwright"
    )
    async with playwright_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(chromium),
            headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-component-update"],
        )
        yield browser
        await browser.close()


async def test_web_chat_in_a_browser(start_host: Any, browser: Any, tmp_path: Path) -> None:
    from playwright.async_api import expect

    settings = make_settings(tmp_path)
    add_group(settings, "team")
    bind(settings, "web", "team", "team")
    set_web_password(settings, PASSWORD)
    host = await start_host(settings)
    context = await browser.new_context(accept_downloads=True)
    page = await context.new_page()
    problems: list[str] = []  # script errors and CSP violations would land here
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    expected = ("401", "ERR_CONNECTION_REFUSED")  # the wrong password; fetches while the host is
    # away (this test stops it, and checks below that the page reconnects and loses nothing)
    page.on(
        "console",
        lambda msg: problems.append(msg.text)
        if msg.type == "error" and not any(e in msg.text for e in expected)
        else None,
    )

    # log in: a wrong password first
    await page.goto(str(host.client.make_url("/")))
    await page.fill("#password", "not the password")
    await page.click("#login button")
    await expect(page.locator("#error")).to_have_text("wrong password", timeout=WAIT)
    await page.fill("#password", PASSWORD)
    await page.click("#login button")
    await expect(page.locator("#groups button.active")).to_have_text("team", timeout=WAIT)

    # the page's renderer on nested slots and hostile input (tests/web/test_markdown.py has more)
    rendered = await page.evaluate(
        "(texts) => texts.map(renderMarkdown)",
        ["[`a`](http://b)", "http://x`code`", "<script>x()</script> [y](javascript:alert(1))"],
    )
    attrs = 'target="_blank" rel="noopener noreferrer"'
    assert rendered == [
        f'<p><a href="http://b" {attrs}><code>a</code></a></p>',
        f'<p><a href="http://x" {attrs}>http://x</a><code>code</code></p>',
        "<p>&lt;script&gt;x()&lt;/script&gt; [y](javascript:alert(1))</p>",
    ]

    # "thinking…" while the agent works, then the reply with its Markdown rendered
    await page.fill("#text", "[slow] **bold** and `code`")
    await page.press("#text", "Enter")
    thinking = page.locator("#thinking")
    await expect(thinking).to_be_visible(timeout=WAIT)
    await expect(thinking).to_have_attribute("data-progress", "1", timeout=WAIT)  # a progress event
    await page.fill("#text", "done")
    await page.click("#send")
    reply = page.locator(".message.out", has_text="echo: [slow]")
    await expect(reply.locator("strong")).to_have_text("bold", timeout=WAIT)
    await expect(reply.locator("code")).to_have_text("code")
    await expect(thinking).to_be_hidden()

    # a file up to the agent, and the copy it sends back down
    data = b"line one\nline two\n\x00\xff binary tail"
    await page.set_input_files(
        "#file", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": data}]
    )
    await expect(page.locator("#file-name")).to_have_text("notes.txt")
    await page.fill("#text", "[sendback] please")
    await page.click("#send")
    echo = page.locator(".message.out", has_text="echo: [sendback] please")
    await expect(echo).to_contain_text("/workspace/agent/inbox/notes.txt", timeout=WAIT)
    assert read(settings.groups_dir / "team" / "inbox" / "notes.txt") == data
    link = page.locator(".message.out .files a", has_text="notes.txt")
    async with page.expect_download() as downloading:
        await link.click()
    download = await downloading.value
    assert read(await download.path()) == data

    # a reload shows the history, once
    await page.reload()
    await expect(page.locator(".message.out strong")).to_have_text("bold", timeout=WAIT)
    sent = page.locator(".message.in", has_text="[sendback] please")
    await expect(sent).to_be_visible()
    await expect(sent.locator(".files a")).to_have_text("notes.txt")  # the user's own file too
    await expect(page.locator(".message")).to_have_count(6)  # 3 in, 2 echoes, 1 file back
    await expect(thinking).to_be_hidden()

    # the host restarts: the page reconnects, resumes after its last id, and shows no duplicate
    port = host.client.port
    await asyncio.wait_for(host.client.close(), 20)  # an open chat must not hold the shutdown
    await expect(page.locator("#connection")).to_have_text("reconnecting…", timeout=WAIT)
    restarted = TestClient(TestServer(build_app(settings), host="127.0.0.1", port=port))
    await restarted.start_server()
    try:
        response = await restarted.post(
            "/api/groups/team/messages", json={"text": "after the restart", "sender": "bob"}, headers=AUTH
        )
        assert response.status == 201
        answer = page.locator(".message.out", has_text="echo: after the restart")
        await expect(answer).to_be_visible(timeout=WAIT)
        await expect(page.locator("#connection")).to_have_text("")
        await expect(page.locator(".message")).to_have_count(8)
        ids = await page.locator(".message").evaluate_all("items => items.map(item => item.dataset.id)")
        assert len(ids) == len(set(ids)) == 8
        assert ids == sorted(ids, key=int)
        shot = tmp_path / "webchat.png"
        await page.screenshot(path=shot)
        assert shot.is_file() and shot.stat().st_size > 0
        shutil.copy(shot, Path("/tmp/webchat-latest.png"))
    finally:
        await restarted.close()
    assert problems == []
