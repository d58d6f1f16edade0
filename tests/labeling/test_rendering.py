"""Model text rendered as Markdown: useful formatting kept, every way to run script or fetch something removed.

`unsafe_parts` is the detector: it parses the rendered HTML and lists anything outside the allow-list (a tag, an
event handler, a style, a URL with a scheme other than http/https/mailto, an <img>). The negative controls feed it
markdown-it's own output with raw HTML on and no sanitiser, and show it fires on each payload.
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from pygments.formatters import HtmlFormatter

from labeling.rendering import (
    ALLOWED_TAGS,
    MAX_HIGHLIGHT_CHARS,
    MAX_MARKDOWN_CHARS,
    conversation,
    render_markdown,
    sanitize_html,
)

PAYLOADS = {
    "script tag": "<script>window.__pwned = 1</script>",
    "img onerror": '<img src=x onerror="window.__pwned = 2">',
    "svg onload": "<svg onload=alert(3)></svg>",
    "iframe": '<iframe src="javascript:alert(4)"></iframe>',
    "raw html block": '<div style="position:fixed;inset:0" onclick="alert(5)">click</div>',
    "markdown javascript link": "[click me](javascript:alert(6))",
    "uppercase scheme": "[x](JAVASCRIPT:alert(7))",
    "entity-encoded scheme": "[x](jav&#x61;script:alert(8))",
    "tab in scheme": "[x](java\tscript:alert(9))",
    "autolink javascript": "<javascript:alert(10)>",
    "reference link": "[x][ref]\n\n[ref]: javascript:alert(11)",
    "data link": "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxMik8L3NjcmlwdD4=)",
    "data image": "![pixel](data:image/png;base64,iVBORw0KGgo=)",
    "svg data image": "![x](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+)",
    "remote image": "![tracker](https://evil.example/pixel.png)",
    "vbscript link": "[x](vbscript:msgbox(13))",
    "link title breakout": '[x](https://ok.example "a\\" onmouseover=\\"alert(14))',
    "html in link text": "[<img src=x onerror=alert(15)>](https://ok.example)",
    "image alt breakout": '![" onerror="alert(16)](https://ok.example/a.png)',
    "relative link to our site": "[sign in again](/accounts/logout/)",
    "protocol-relative link": "[x](//evil.example/)",
    "html comment": "<!-- <script>alert(17)</script> -->",
    "code fence lang injection": '```python" onclick="alert(18)\nprint(1)\n```',
    "style tag": "<style>body{display:none}</style>",
    "form": '<form action="https://evil.example"><input name=password></form>',
}


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED_TAGS:
            self.problems.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on") or name in {"style", "src", "srcset", "action", "formaction"}:
                self.problems.append(f"{tag} {name}={value!r}")
            if name == "href" and not (value or "").lower().startswith(("http://", "https://", "mailto:")):
                self.problems.append(f"{tag} href={value!r}")
            if name == "class" and any(c.startswith("language-") for c in (value or "").split()):
                self.problems.append(f"{tag} class={value!r}")  # attacker-chosen class names


def unsafe_parts(html: str) -> list[str]:
    """Everything in `html` outside the allow-list; [] for a safe render."""
    collector = _Collector()
    collector.feed(html)
    collector.close()
    return collector.problems


_UNSANITISED = MarkdownIt("commonmark", {"html": True})


@pytest.mark.parametrize("payload", PAYLOADS.values(), ids=PAYLOADS.keys())
def test_no_payload_survives_rendering(payload):
    """Each payload renders to HTML holding nothing outside the allow-list."""
    assert unsafe_parts(render_markdown(payload)) == []


@pytest.mark.parametrize(
    "name",
    [
        "script tag",
        "img onerror",
        "svg onload",
        "iframe",
        "raw html block",
        "data image",
        "remote image",
        "relative link to our site",
        "protocol-relative link",
        "html in link text",
        "style tag",
        "form",
        "code fence lang injection",
    ],
)
def test_negative_control_the_detector_fires_on_an_unsanitised_render(name):
    """Markdown with raw HTML on and no sanitiser: the same detector flags the payload."""
    assert unsafe_parts(_UNSANITISED.render(PAYLOADS[name])) != []


def test_negative_control_the_detector_fires_on_a_javascript_link():
    """markdown-it itself refuses `javascript:` (and svg data:) links, so the control is the HTML a naive renderer
    would write; the sanitiser alone removes it."""
    assert unsafe_parts('<a href="javascript:alert(6)">click me</a>') != []
    assert unsafe_parts(sanitize_html('<a href="javascript:alert(6)">click me</a>')) == []


def test_raw_html_is_shown_as_text_not_dropped():
    """The annotator judges what the model wrote: its markup stays visible, escaped."""
    html = render_markdown('Try <b>this</b> and <img src=x onerror="alert(1)">')
    assert "&lt;b&gt;this&lt;/b&gt;" in html
    assert '&lt;img src=x onerror="alert(1)"&gt;' in html


def test_markdown_formatting_is_rendered():
    """Emphasis, lists, headings, quotes, tables and safe links come out as their elements."""
    text = (
        "# Title\n\nSome **bold**, *italic*, ~~gone~~ and `code`.\n\n- one\n- two\n\n3. three\n\n> quoted\n\n"
        "| a | b |\n|:-:|--:|\n| 1 | 2 |\n\n[docs](https://example.org/x?a=1&b=2) <https://example.org>\n"
        "line one\nline two"
    )
    html = render_markdown(text)
    for fragment in [
        "<h1>Title</h1>",
        "<strong>bold</strong>",
        "<em>italic</em>",
        "<s>gone</s>",
        "<code>code</code>",
        "<li>one</li>",
        '<ol start="3">',
        "<blockquote>",
        '<th class="align-center">a</th>',
        '<td class="align-right">2</td>',
        '<a href="https://example.org/x?a=1&amp;b=2" rel="noopener noreferrer nofollow">docs</a>',
        "line one<br>",
    ]:
        assert fragment in html, fragment
    assert unsafe_parts(html) == []


def test_table_alignment_is_a_class_never_a_style_attribute():
    """The CSP refuses style attributes; markdown-it's own table output uses them, ours must not."""
    text = "| a |\n|--:|\n| 1 |"
    assert 'style="text-align:right"' in MarkdownIt("commonmark").enable("table").render(text)  # the control
    assert "style=" not in render_markdown(text)


def test_images_become_links_and_are_never_loaded():
    """No <img> at all: a remote image keeps its URL as a link, a data: image loses it."""
    remote = render_markdown("![a chart](https://example.org/chart.png)")
    assert "<img" not in remote
    assert '<a class="md-image" href="https://example.org/chart.png"' in remote and "image: a chart" in remote
    inline = render_markdown("![pixel](data:image/png;base64,iVBORw0KGgo=)")
    assert "<img" not in inline and "data:" not in inline


def test_fenced_code_is_highlighted_on_the_server():
    """A known language gets Pygments' token spans; an unknown one is escaped plain; markup in code stays text."""
    html = render_markdown("```python\ndef f():\n    return '<script>'\n```")
    assert '<span class="k">def</span>' in html and '<span class="nf">f</span>' in html
    assert "&lt;script&gt;" in html and "<script>" not in html
    plain = render_markdown("```no-such-language\n<b>x</b>\n```")
    assert plain == "<pre><code>&lt;b&gt;x&lt;/b&gt;\n</code></pre>\n"


def test_a_long_code_block_is_shown_without_highlighting():
    """Past MAX_HIGHLIGHT_CHARS, Pygments is not run (its regexes are the slow part)."""
    code = "x = 1\n" * (MAX_HIGHLIGHT_CHARS // 6 + 1)
    html = render_markdown(f"```python\n{code}```")
    assert "<span" not in html and html.count("x = 1") == code.count("x = 1")


def test_text_over_the_markdown_bound_is_shown_escaped_as_is():
    """A huge text is not parsed as Markdown: it appears whole, escaped, in a <pre>."""
    text = "*a* <script>alert(1)</script>\n" * (MAX_MARKDOWN_CHARS // 30 + 1)
    html = render_markdown(text)
    assert html.startswith('<pre class="plain">') and "<em>" not in html and "<script>" not in html
    assert html.count("&lt;script&gt;") == text.count("<script>")


def test_empty_text_renders_nothing():
    assert render_markdown("") == ""


def test_a_long_conversation_keeps_its_last_turns_in_view():
    """35 messages: the last 2 shown, 33 folded, in order, with a per-role count for the expander."""
    messages = [{"role": "system", "content": "be brief"}] + [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i}"} for i in range(34)
    ]
    convo = conversation(messages)
    assert [t.content for t in convo.recent] == ["message 32", "message 33"]
    assert [t.content for t in convo.earlier + convo.recent] == [m["content"] for m in messages]
    assert convo.earlier_roles == "1 system, 16 user, 16 assistant"


def test_a_short_conversation_is_not_folded():
    messages = [{"role": r, "content": r} for r in ("system", "user", "assistant", "user")]
    convo = conversation(messages)
    assert convo.earlier == [] and len(convo.recent) == 4


def test_a_role_outside_the_known_ones_gets_no_class_of_its_own():
    """The role is untrusted text too: it is shown, but only a known role becomes a CSS class."""
    turns = conversation([{"role": 'user" onclick="x', "content": "hi"}, {"role": "Assistant", "content": "yo"}]).recent
    assert [t.role_class for t in turns] == ["other", "assistant"]
    assert turns[0].role == 'user" onclick="x'


def test_the_highlighting_stylesheet_matches_the_installed_pygments():
    """static/labeling/pygments.css is generated; a Pygments upgrade that renames token classes shows up here."""
    css = Path(__file__).resolve().parents[2] / "static" / "labeling" / "pygments.css"
    rules = [line for line in css.read_text().splitlines() if line.startswith(".md pre")]
    assert rules == HtmlFormatter(style="default").get_token_style_defs(".md pre")
