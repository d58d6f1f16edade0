"""Model text (prompts, responses, guidelines) as safe HTML: the one place it is rendered.

Every page that shows text a model or an importer wrote goes through `render_markdown` (the `markdown` template
filter in `labeling.templatetags.model_text`), so there is one policy to read and to test:

- **Raw HTML is never markup.** markdown-it runs with `html=False`: `<script>`, `<img onerror>`, `<iframe>` and
  comments in the text come out as visible text, which is also what the annotator should judge — the model
  wrote markup, not a picture.
- **Links go only where a link may go**: `http`, `https` and `mailto`. `javascript:`, `data:`, `vbscript:` and
  relative URLs lose their `href` (markdown-it refuses the first three, nh3 all four): a model's
  `[sign in again](/accounts/logout/)` must not act on our own site. Links open nothing by themselves and
  carry `rel="noopener noreferrer nofollow"`.
- **Images are never loaded**: `![alt](url)` becomes a link labelled "image: alt". Loading a model's image would
  tell any host who is annotating, and `data:` images are allowed by the CSP for Swagger UI's icons.
- **No `style` attributes** (the Content-Security-Policy refuses them): table alignment becomes a class.
- **Code is highlighted on the server** by Pygments into `<span class="…">` tokens, styled by
  `static/labeling/pygments.css`: no script, nothing from a CDN.
- **nh3 has the last word**: whatever markdown-it and Pygments produced passes an allow-list of tags,
  attributes, classes and URL schemes, so a bug in either cannot put a script on the page.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import nh3
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.renderer import RendererHTML
from markdown_it.rules_core import StateCore
from markdown_it.token import Token
from markdown_it.utils import OptionsDict
from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name
from pygments.token import STANDARD_TYPES
from pygments.util import ClassNotFound

# Pygments' lexers are regular expressions, some with known super-linear cases, and cost ~10 ms per 1,000
# characters of Python (2 shared cores): a longer block is shown unhighlighted.
MAX_HIGHLIGHT_CHARS = 10_000
# markdown-it-py is pure Python: ~2 ms per 1,000 characters of prose, ~15 ms for adversarial input, and worse
# than linear (30,000 characters of `[` took 1 s; benchmarks/markdown_render.py). Imports allow 100,000 characters
# (PREFLOOP_MAX_TEXT_CHARS), so above this bound the text is shown as it is, escaped and wrapped, unparsed.
MAX_MARKDOWN_CHARS = 20_000
# Rendered texts kept in memory per process, by content: the same prompt and rollouts are shown to every annotator
# of a task, and a page re-drawn after an error renders them again. Only texts up to _CACHE_MAX_CHARS (most
# responses) are kept, so the cache stays under ~1,024 × (5 kB + its HTML, a few times that): tens of MB at most.
_CACHE_ENTRIES = 1024
_CACHE_MAX_CHARS = 5_000

ALIGN_CLASSES = {"left": "align-left", "center": "align-center", "right": "align-right"}

ALLOWED_TAGS = {
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "s", "code", "pre", "blockquote",
    "ul", "ol", "li", "a", "table", "thead", "tbody", "tr", "th", "td", "span",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "ol": {"start"}}
URL_SCHEMES = {"http", "https", "mailto"}
_TOKEN_CLASSES = {name for name in STANDARD_TYPES.values() if name}
ALLOWED_CLASSES = {
    "span": _TOKEN_CLASSES,
    "a": {"md-image"},
    "pre": {"plain"},
    "th": set(ALIGN_CLASSES.values()),
    "td": set(ALIGN_CLASSES.values()),
}

_CLEANER = nh3.Cleaner(
    tags=ALLOWED_TAGS,
    attributes=ALLOWED_ATTRIBUTES,
    url_schemes=URL_SCHEMES,
    url_relative="deny",
    allowed_classes=ALLOWED_CLASSES,
    link_rel="noopener noreferrer nofollow",
    strip_comments=True,
)

_FORMATTER = HtmlFormatter(nowrap=True)


def _highlight(code: str, language: str, _attrs: str) -> str:
    """Pygments tokens for a fenced block with a known language; "" lets markdown-it escape it plainly."""
    if not language or len(code) > MAX_HIGHLIGHT_CHARS:
        return ""
    try:
        lexer = get_lexer_by_name(language.strip().lower())
    except ClassNotFound:
        return ""
    return highlight(code, lexer, _FORMATTER)


def _image_as_link(renderer: RendererHTML, tokens: Sequence[Token], index: int, options: OptionsDict, env: dict) -> str:
    """`![alt](url)` → a link to the image, never an <img>: nothing is fetched while the annotator reads."""
    token = tokens[index]
    alt = renderer.renderInlineAsText(token.children or [], options, env)
    label = escapeHtml(f"image: {alt}" if alt else "image")
    src = escapeHtml(str(token.attrGet("src") or ""))
    return f'<a class="md-image" href="{src}">{label}</a>'


def _alignment_as_class(state: StateCore) -> None:
    """Table cells: markdown-it writes `style="text-align:…"`, which the CSP refuses; a class does the same."""
    for token in state.tokens:
        if token.type in {"th_open", "td_open"} and token.attrs.get("style"):
            align = str(token.attrs.pop("style")).removeprefix("text-align:")
            if align in ALIGN_CLASSES:
                token.attrSet("class", ALIGN_CLASSES[align])


def _build() -> MarkdownIt:
    # CommonMark plus GitHub's tables and strikethrough. `breaks`: a single newline is a line break, as models
    # (and chat UIs) mean it; `html` off: raw HTML is text (see the module docstring).
    md = MarkdownIt("commonmark", {"html": False, "breaks": True, "highlight": _highlight})
    md.enable(["table", "strikethrough"])
    md.add_render_rule("image", _image_as_link)
    md.core.ruler.push("alignment_as_class", _alignment_as_class)
    return md


_MD = _build()


def render_markdown(text: str) -> str:
    """Untrusted Markdown → sanitised HTML, safe to mark safe in a template."""
    if not text:
        return ""
    if len(text) <= _CACHE_MAX_CHARS:
        return _render_cached(text)
    return _render(text)


@lru_cache(maxsize=_CACHE_ENTRIES)
def _render_cached(text: str) -> str:
    return _render(text)


def _render(text: str) -> str:
    if len(text) > MAX_MARKDOWN_CHARS:
        return _CLEANER.clean(f'<pre class="plain">{escapeHtml(text)}</pre>')
    return _CLEANER.clean(_MD.render(text))


def sanitize_html(html: str) -> str:
    """The allow-list alone, for HTML built elsewhere (tests use it to show what it removes)."""
    return _CLEANER.clean(html)


# --- Chat prompts -------------------------------------------------------------------------------------------

# Roles get a class of their own only from this list: the role string is untrusted text too.
KNOWN_ROLES = ("system", "user", "assistant", "tool")
# A conversation longer than COLLAPSE_ABOVE messages shows its last KEEP_LAST and folds the rest away, so the
# responses start above the fold: the final user turn (and the answer it follows) is what is being judged.
COLLAPSE_ABOVE = 4
KEEP_LAST = 2


@dataclass(frozen=True)
class Turn:
    role: str  # as imported, shown escaped
    role_class: str  # one of KNOWN_ROLES, or "other"
    content: str


@dataclass(frozen=True)
class Conversation:
    earlier: list[Turn]  # folded behind an expander; empty for a short conversation
    recent: list[Turn]

    @property
    def earlier_roles(self) -> str:
        """A summary for the expander: how many turns of each role are folded, roles in a fixed order."""
        counts = Counter(turn.role_class for turn in self.earlier)
        return ", ".join(f"{counts[role]} {role}" for role in (*KNOWN_ROLES, "other") if counts[role])


def conversation(
    messages: Sequence[Mapping], *, collapse_above: int = COLLAPSE_ABOVE, keep_last: int = KEEP_LAST
) -> Conversation:
    """A chat prompt's turns, the older ones set apart when there are many."""
    turns = [_turn(message) for message in messages]
    if len(turns) <= collapse_above:
        return Conversation(earlier=[], recent=turns)
    return Conversation(earlier=turns[:-keep_last], recent=turns[-keep_last:])


def _turn(message: Mapping) -> Turn:
    role = str(message.get("role", ""))
    role_class = role.strip().lower() if role.strip().lower() in KNOWN_ROLES else "other"
    content = message.get("content", "")
    return Turn(role=role, role_class=role_class, content=content if isinstance(content, str) else str(content))
