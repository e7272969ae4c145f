"""The web chat's Markdown renderer (``nanohost/web/markdown.js``), run as it is under node.

The browser test renders Markdown through the page as well; this one checks the tricky inputs
one by one: slots nested in slots (a code span in a link label, code right after a bare URL),
and that markup and non-http(s) links stay inert text.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from nanohost.channels.webchat import WEB_DIR

A = 'target="_blank" rel="noopener noreferrer"'
CASES = {
    "[`a`](http://b)": f'<p><a href="http://b" {A}><code>a</code></a></p>',
    "http://x`code`": f'<p><a href="http://x" {A}>http://x</a><code>code</code></p>',
    "[**b** `c`](https://d.example/p?q=1&r=2)": (
        f'<p><a href="https://d.example/p?q=1&amp;r=2" {A}><strong>b</strong> <code>c</code></a></p>'
    ),
    "[a](http://b`c`)": f'<p>[a](<a href="http://b" {A}>http://b</a><code>c</code>)</p>',  # code ends a URL
    "see https://e.example/`x` and `y`": (
        f'<p>see <a href="https://e.example/" {A}>https://e.example/</a><code>x</code> and <code>y</code></p>'
    ),
    "<script>alert(1)</script>": "<p>&lt;script&gt;alert(1)&lt;/script&gt;</p>",
    "[click](javascript:alert(1))": "<p>[click](javascript:alert(1))</p>",
    "javascript:alert(1) and [x](data:text/html,<b>)": (
        "<p>javascript:alert(1) and [x](data:text/html,&lt;b&gt;)</p>"
    ),
    '[x](http://a" onmouseover="alert(1))': (
        f'<p>[x](<a href="http://a" {A}>http://a</a>&quot; onmouseover=&quot;alert(1))</p>'
    ),
    "`<img src=x onerror=alert(1)>`": "<p><code>&lt;img src=x onerror=alert(1)&gt;</code></p>",
    "raw \u00000\u0000 marker": "<p>raw 0 marker</p>",
}
RUN = """
const fs = require("fs");
const vm = require("vm");
const context = {};
vm.runInNewContext(fs.readFileSync(process.argv[1], "utf8") + "\\nthis.render = renderMarkdown;", context);
const inputs = JSON.parse(fs.readFileSync(0, "utf8"));
process.stdout.write(JSON.stringify(inputs.map((text) => context.render(text))));
"""


def render_with_node(inputs: list[str]) -> list[str]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("NO NODE: markdown.js is not tested here (install nodejs to run it)")
    done = subprocess.run(
        [node, "-e", RUN, str(WEB_DIR / "markdown.js")],
        input=json.dumps(inputs),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return list(json.loads(done.stdout))


def test_markdown_nested_slots_and_inert_markup() -> None:
    inputs = list(CASES)
    outputs = dict(zip(inputs, render_with_node(inputs), strict=True))
    for text, expected in CASES.items():
        html = outputs[text]
        assert "\u0000" not in html, (text, html)
        for href in re.findall(r'href="([^"]*)"', html):
            assert re.fullmatch(r"https?://[^\s<>\"'`]+", href), (text, href)
        for tag in re.findall(r"<[^>]*>", html):  # only plain tags, and links with the fixed attributes
            assert re.fullmatch(rf'</?(p|code|strong|em|a)>|<a href="[^"]*" {A}>', tag), (text, tag)
        assert html == expected, (text, html)
