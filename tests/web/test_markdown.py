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
TABLES_AND_QUOTES = {
    "| a | b |\n|---|:-:|\n| 1 | **2** |\n| x |": (
        "<table><thead><tr><th>a</th><th>b</th></tr></thead>"
        "<tbody><tr><td>1</td><td><strong>2</strong></td></tr><tr><td>x</td><td></td></tr></tbody></table>"
    ),
    "name | qty\n--- | ---": "<table><thead><tr><th>name</th><th>qty</th></tr></thead></table>",
    "| a \\| b | `x|y` |\n| --- | --- |": (
        "<table><thead><tr><th>a | b</th><th><code>x|y</code></th></tr></thead></table>"
    ),
    "| <img src=x onerror=alert(1)> | [y](javascript:alert(1)) |\n|-|-|\n| [ok](https://o.example) | c |": (
        "<table><thead><tr><th>&lt;img src=x onerror=alert(1)&gt;</th><th>[y](javascript:alert(1))</th></tr>"
        f'</thead><tbody><tr><td><a href="https://o.example" {A}>ok</a></td><td>c</td></tr></tbody></table>'
    ),
    "a | b": "<p>a | b</p>",  # no delimiter row: not a table
    "a | b\n--- | --- | ---": "<p>a | b<br>--- | --- | ---</p>",  # cells do not match
    "text\n| a |\n|---|\nafter": ("<p>text</p><table><thead><tr><th>a</th></tr></thead></table><p>after</p>"),
    "> quoted **text**\n> more": "<blockquote><p>quoted <strong>text</strong><br>more</p></blockquote>",
    "> > inner\n> outer\n\nafter": (
        "<blockquote><blockquote><p>inner</p></blockquote><p>outer</p></blockquote><p>after</p>"
    ),
    "> ```\n> <script>alert(1)</script>\n> ```": (
        "<blockquote><pre><code>&lt;script&gt;alert(1)&lt;/script&gt;</code></pre></blockquote>"
    ),
    "> - one\n> - two": "<blockquote><ul><li>one</li><li>two</li></ul></blockquote>",
    "><img src=x onerror=alert(1)>": "<blockquote><p>&lt;img src=x onerror=alert(1)&gt;</p></blockquote>",
    "> | a |\n> |---|": "<blockquote><table><thead><tr><th>a</th></tr></thead></table></blockquote>",
    ">" * 12 + " deep": "<blockquote>" * 8 + "<p>&gt;&gt;&gt;&gt; deep</p>" + "</blockquote>" * 8,
}
ALLOWED_TAG = re.compile(
    rf'</?(p|code|strong|em|a|br|pre|ul|ol|li|blockquote|table|thead|tbody|tr|th|td)>|<a href="[^"]*" {A}>'
)
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


def check_rendered(cases: dict[str, str]) -> None:
    inputs = list(cases)
    outputs = dict(zip(inputs, render_with_node(inputs), strict=True))
    for text, expected in cases.items():
        html = outputs[text]
        assert "\u0000" not in html, (text, html)
        for href in re.findall(r'href="([^"]*)"', html):
            assert re.fullmatch(r"https?://[^\s<>\"'`]+", href), (text, href)
        for tag in re.findall(r"<[^>]*>", html):  # only plain tags, and links with the fixed attributes
            assert ALLOWED_TAG.fullmatch(tag), (text, tag)
        assert html == expected, (text, html)


def test_markdown_nested_slots_and_inert_markup() -> None:
    check_rendered(CASES)


def test_markdown_tables_and_blockquotes_render_and_stay_inert() -> None:
    check_rendered(TABLES_AND_QUOTES)


def test_a_flood_of_quote_markers_or_pipes_renders_quickly() -> None:
    import time

    started = time.monotonic()
    (quotes, pipes, delimiter) = render_with_node(
        [">" * 20_000 + " x", "|" * 20_000, "| a |\n|" + "-|" * 10_000 + "x"]
    )
    assert quotes.count("<blockquote>") == 8 and "x" in quotes
    assert pipes.startswith("<p>|||") and delimiter.startswith("<p>| a |<br>|-|")
    assert time.monotonic() - started < 10  # node start included; a backtracking regex takes minutes
