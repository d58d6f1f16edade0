"""Small pieces every training admin page shares: its stylesheet, links to other admin pages, JSON blocks."""

from __future__ import annotations

import json

from django.urls import reverse
from django.utils.html import format_html

ADMIN_CSS = {"all": ("training/admin.css",)}


def admin_link(url_name: str, pk: int, text: object) -> str:
    """An escaped link to the admin page `admin:<url_name>` of one object."""
    return format_html('<a href="{}">{}</a>', reverse(f"admin:{url_name}", args=[pk]), text)


def pretty_json(value: object) -> str:
    """A read-only JSON field as an indented, escaped block."""
    return format_html(
        '<pre class="json-block">{}</pre>', json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    )
