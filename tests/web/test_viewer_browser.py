"""The conversation viewer and the operator view in a real browser (Debian's chromium via Playwright)
against the real host, the mock agent in a real Docker container.

The viewer shows a turn live while it runs (``[slow]`` holds the mock's turn open until a
follow-up, so the live state is observable without timing tricks), then from the archive: the
reasoning, the command with its collapsed output, the small diff shown open, the reply, model,
tokens and duration. Search, a permalink opened in a fresh page, the archive download, a 375 px
wide phone viewport, and the operator view's snapshot and restart buttons. Screenshots go to the
test output directory (``NANOHOST_TEST_OUTPUT``, default ``test-output/`` in the checkout) under
``viewer/``. Every wait is one of Playwright's auto-waiting checks.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.support.host import add_group, bind, make_settings
from tests.web.conftest import PASSWORD, set_web_password
from tests.web.test_webchat_browser import WAIT, browser, chromium, read  # noqa: F401  (fixtures)

pytestmark = pytest.mark.docker
ROOT = Path(__file__).resolve().parents[2]
PHONE = {"width": 375, "height": 812}


def output_dir() -> Path:
    path = Path(os.environ.get("NANOHOST_TEST_OUTPUT", ROOT / "test-output")) / "viewer"
    path.mkdir(parents=True, exist_ok=True)
    return path


async def shoot(page: Any, name: str) -> Path:
    shot = output_dir() / name
    await page.screenshot(path=shot, full_page=True)
    assert shot.is_file() and shot.stat().st_size > 0
    return shot


async def log_in(page: Any, url: str) -> None:
    from playwright.async_api import expect

    await page.goto(url)
    await page.fill("#password", PASSWORD)
    await page.click("#login button")
    await expect(page.locator("#groups button.active")).to_have_text("team", timeout=WAIT)


def watch(page: Any, problems: list[str]) -> None:
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)


async def test_the_viewer_and_operator_view_in_a_browser(
    start_host: Any,
    browser: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    from playwright.async_api import expect

    settings = make_settings(tmp_path)
    add_group(settings, "team")
    add_group(settings, "hidden")  # no web binding: never shown to a web user
    bind(settings, "web", "team", "team")
    set_web_password(settings, PASSWORD)
    host = await start_host(settings)
    base = str(host.client.make_url("/")).rstrip("/")
    context = await browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 860})
    page = await context.new_page()
    problems: list[str] = []
    watch(page, problems)
    frames: list[dict[str, Any]] = []
    page.on(
        "websocket",
        lambda ws: ws.on("framereceived", lambda payload: frames.append(json.loads(payload))),
    )

    await log_in(page, base + "/")
    # beside the chat, the steps of its latest turn (open on a wide screen), live while it runs
    await expect(page.locator("#steps-panel")).to_be_visible()
    await expect(page.locator("#steps-empty")).to_be_visible()
    await host.send("team", "[slow] warm up")
    await expect(page.locator("#steps-turn .step.reasoning")).to_contain_text(
        "Waiting for the rest of the message.", timeout=WAIT
    )
    await expect(page.locator("#steps-turn h3 .status")).to_have_text("running (live)")
    await page.fill("#text", "go on")
    await page.press("#text", "Enter")
    await expect(page.locator("#steps-turn h3")).to_contain_text("Latest turn", timeout=WAIT)
    await expect(page.locator("#steps-turn .step.command summary")).to_contain_text("exit 0")
    await expect(page.locator("#steps-turn .step.file_change .add")).to_have_text("+[slow] warm up | go on")
    await shoot(page, "chat-with-steps.png")
    await page.click("#to-viewer")  # the panel links to the group's turns
    await expect(page).to_have_url(f"{base}/viewer?group=team", timeout=WAIT)
    await expect(page.locator(".turn-entry")).to_have_count(1, timeout=WAIT)  # the warm-up

    # the page's turn renderer on what an agent may write: text stays text; diffs line by line
    rendered = await page.evaluate(
        """() => {
          const article = document.createElement("article");
          Turns.render(article, {
            turn: "x", started_at: "", status: "completed", reply: "<b>bold?</b>",
            items: [
              {id: "f", type: "file_change", changes: [
                {path: "new.txt", kind: "add", diff: "one\\ntwo\\n"},
                {path: "old.txt", kind: "update", diff: "@@ -1 +1 @@\\n-a\\n+b"}]},
              {id: "c", type: "command", command: "<img src=x onerror=alert(1)>",
               output: "<script>x()</script>"},
            ],
          }, {permalink: "/viewer"});
          return {
            diffs: [...article.querySelectorAll("pre.diff")].map(
              (pre) => [...pre.children].map((line) => `${line.className}:${line.textContent}`)),
            injected: article.querySelectorAll("img, script, b").length,
            command: article.querySelector(".step.command summary").textContent,
          };
        }"""
    )
    assert rendered["diffs"] == [
        ["add:+one\n", "add:+two\n"],
        ["hunk:@@ -1 +1 @@\n", "del:-a\n", "add:+b\n"],
    ]
    assert rendered["injected"] == 0 and rendered["command"].startswith("$ <img src=x onerror=alert(1)>")
    await expect(page.locator("#connection")).to_have_text("live", timeout=WAIT)
    await expect(page.locator("#groups button")).to_have_count(1)

    # a turn under way shows live: the mock holds a [slow] turn open until a follow-up comes
    await host.send("team", "[slow] list the files")
    live = page.locator(".turn-entry.live")
    await expect(live.locator(".status")).to_have_text("running", timeout=WAIT)
    await expect(page.locator("#turn-detail h3 .status")).to_have_text("running (live)", timeout=WAIT)
    await expect(live.locator(".prompt")).to_have_text("[slow] list the files")
    # a step streamed while the turn runs (the archive has nothing of this turn yet)
    await expect(page.locator("#turn-detail .step.reasoning")).to_contain_text(
        "Waiting for the rest of the message.", timeout=WAIT
    )
    await expect(live.locator(".facts")).to_have_text("1 step so far")
    await shoot(page, "viewer-live.png")
    await host.send("team", "and count them")
    entry = page.locator(".turn-entry", has_text="[slow] list the files")
    await expect(entry.locator(".status")).to_have_text("completed", timeout=WAIT)
    assert any(f.get("type") == "item" and f.get("phase") == "item" for f in frames), frames
    assert any(f.get("type") == "item" and f.get("phase") == "end" for f in frames)

    # the archived turn: prompts, reasoning, the command (collapsed), the small diff (open), reply
    detail = page.locator("#turn-detail")
    await expect(detail.locator(".step.user").first).to_contain_text("[slow] list the files", timeout=WAIT)
    await expect(detail.locator(".step.reasoning")).to_have_count(2)  # the live one is archived too
    await expect(detail.locator(".step.reasoning").nth(1)).to_contain_text("The user wants their words back.")
    command = detail.locator(".step.command details")
    await expect(command.locator("summary")).to_contain_text("exit 0")
    output = command.locator("pre.output")
    await expect(output).to_be_hidden()  # collapsed until asked for
    await command.locator("summary").click()
    await expect(output).to_contain_text("[slow] list the files | and count them")
    await expect(detail.locator(".step.file_change pre.diff .add")).to_contain_text("+[slow] list the files")
    await expect(detail.locator(".step.reply")).to_contain_text(
        "echo: [slow] list the files | and count them"
    )
    meta = detail.locator(".turn-meta")
    await expect(meta).to_contain_text("model mock-echo")
    await expect(meta).to_contain_text("tokens")
    await expect(meta).to_contain_text("took ")
    await shoot(page, "viewer-turn.png")

    # a second turn, then search finds only the one that matches
    await host.send("team", "what is the weather")
    await expect(page.locator(".turn-entry")).to_have_count(3, timeout=WAIT)
    await page.fill("#query", "WEATHER")
    await page.press("#query", "Enter")
    await expect(page.locator("#list-note")).to_have_text("1 turn found for “WEATHER”", timeout=WAIT)
    await expect(page.locator(".turn-entry")).to_have_count(1)
    await page.locator(".turn-entry a").click()
    await expect(detail.locator(".step.reply")).to_contain_text("echo: what is the weather", timeout=WAIT)
    permalink = await detail.locator("a.permalink").get_attribute("href")
    assert permalink is not None and permalink.startswith("/viewer?group=team&turn=")
    await shoot(page, "viewer-search.png")

    # the archive downloads as a zip with the JSON lines and the Markdown
    async with page.expect_download() as downloading:
        await page.click("#download")
    download = await downloading.value
    archive = zipfile.ZipFile(io.BytesIO(read(await download.path())))
    names = archive.namelist()
    assert any(n.startswith("conversations/turns/") and n.endswith(".jsonl") for n in names), names
    assert sum(n.endswith(".md") for n in names) == 3, names

    # the permalink opens that turn in a fresh page, here on a 375 px wide phone
    phone = await browser.new_context(viewport=PHONE, storage_state=await context.storage_state())
    small = await phone.new_page()
    watch(small, problems)
    await small.goto(base + permalink)
    await expect(small.locator("#turn-detail .step.reply")).to_contain_text(
        "echo: what is the weather", timeout=WAIT
    )
    await expect(small.locator("#turn-list")).to_be_hidden()  # one column: the turn, with a way back
    assert await small.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    await shoot(small, "viewer-turn-375.png")
    await small.click("#turn-detail .back")
    await expect(small.locator(".turn-entry")).to_have_count(3, timeout=WAIT)
    assert await small.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    await shoot(small, "viewer-list-375.png")

    # on the phone the chat's steps panel starts closed and takes the screen when opened
    await small.goto(base + "/")
    await expect(small.locator(".message.out").first).to_be_visible(timeout=WAIT)
    await expect(small.locator("#steps-panel")).to_be_hidden()
    await small.click("#toggle-steps")
    await expect(small.locator("#steps-turn .step.command")).to_be_visible(timeout=WAIT)
    await expect(small.locator("#conversation")).to_be_hidden()
    assert await small.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    await shoot(small, "chat-steps-375.png")
    await small.click("#close-steps")
    await expect(small.locator("#conversation")).to_be_visible()

    # the operator view: the web chat's groups with their state; snapshot and restart buttons
    await page.goto(base + "/operator")
    row = page.locator("#group-rows tr")
    await expect(row).to_have_count(1, timeout=WAIT)  # `hidden` has no web binding
    await expect(row.locator(".state")).to_have_text("running", timeout=WAIT)
    await row.locator("button", has_text="Snapshot").click()
    await expect(page.locator("#notice")).to_contain_text("team: snapshot 1:", timeout=WAIT)
    await row.locator("button", has_text="Restart").click()
    await expect(page.locator("#notice")).to_have_text("restarting team", timeout=WAIT)
    await expect(row.locator(".state")).to_have_text("idle", timeout=WAIT)  # its container stopped
    await shoot(page, "operator.png")
    await small.goto(base + "/operator")
    await expect(small.locator("#group-rows tr .state")).to_have_text("idle", timeout=WAIT)
    assert await small.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    await shoot(small, "operator-375.png")
    await phone.close()
    await context.close()
    assert problems == []
