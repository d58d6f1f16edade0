"""Template side of `labeling.rendering`: `{% load model_text %}`, then `{{ text|markdown }}` for any model or
imported text, and `{{ prompt.messages|conversation }}` for a chat's turns (templates/labeling/partials/prompt.html).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from django import template
from django.utils.safestring import SafeString, mark_safe

from labeling.rendering import Conversation, conversation, render_markdown

register = template.Library()


@register.filter(name="markdown")
def markdown(text: object) -> SafeString:
    """Untrusted text as sanitised HTML; marking it safe is sound only because nh3 cleaned it (rendering.py)."""
    return mark_safe(render_markdown("" if text is None else str(text)))


@register.filter(name="conversation")
def conversation_filter(messages: Sequence[Mapping] | None) -> Conversation:
    return conversation(messages or [])
