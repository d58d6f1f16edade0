"""Form fields generated from a run config dataclass: one input per config key, typed by its annotation."""

from __future__ import annotations

import dataclasses
import typing
from typing import Any

from django import forms

from training.trainers.config import RUN_CONFIGS


def unwrap_optional(hint: Any) -> tuple[Any, bool]:
    """`int | None` → (int, True); `float` → (float, False)."""
    args = typing.get_args(hint)
    if type(None) in args:
        rest = [arg for arg in args if arg is not type(None)]
        return (rest[0] if len(rest) == 1 else Any), True
    return hint, False


def config_form_field(config_field: dataclasses.Field, hint: Any) -> forms.Field:
    """A form field for one config dataclass field: its default as initial, its metadata help as help text.

    Range checks are left to the dataclass, so the form says exactly what a worker would have said.
    """
    base, optional = unwrap_optional(hint)
    help_text = config_field.metadata.get("help", "")
    label = config_field.name.replace("_", " ").capitalize()
    default = config_field.default if config_field.default is not dataclasses.MISSING else None
    if base is bool and optional:
        # Unset means "decide automatically" (see the help text): a checkbox could only say yes or no.
        widget = forms.Select(choices=[("unknown", "Automatic"), ("true", "Yes"), ("false", "No")])
        return forms.NullBooleanField(required=False, initial=default, help_text=help_text, label=label, widget=widget)
    if base is bool:
        return forms.BooleanField(required=False, initial=default, help_text=help_text, label=label)
    if optional:
        help_text = f"{help_text} Leave blank for none.".strip()
    else:
        help_text = f"{help_text} Leave blank for the default ({default}).".strip()
    if base is int:
        return forms.IntegerField(required=False, initial=default, help_text=help_text, label=label)
    if base is float:
        # Text input: a number input would reject "1e-5" in some browsers and round tiny rates.
        widget = forms.TextInput(attrs={"inputmode": "decimal", "size": 12})
        return forms.FloatField(required=False, initial=default, help_text=help_text, label=label, widget=widget)
    return forms.CharField(required=False, initial=default, help_text=help_text, label=label)


def config_fields_of(kind: str) -> list[tuple[dataclasses.Field, Any]]:
    """(dataclass field, resolved type hint) for every key of the config class of `kind`."""
    config_class = RUN_CONFIGS[kind]
    hints = typing.get_type_hints(config_class)
    return [(config_field, hints[config_field.name]) for config_field in dataclasses.fields(config_class)]
