"""The admin form that starts an online RL run (GRPO, RLOO): a prompt set, a starting model, weighted judges.

Like the other run forms it only turns inputs into the service's arguments; `validate_online_run_request` decides, and
its refusal is shown next to the input it names (a config key without an input goes to the JSON box).
"""

from __future__ import annotations

import json
from typing import Any

from django import forms

from labeling.models import PromptSet
from training.models import Judge, ModelVersion, TrainingRun
from training.services.audits import MAX_AUDIT_SIZE
from training.services.base_models import starting_models
from training.services.lifecycle import RunRejected
from training.services.online_runs import MAX_JUDGE_WEIGHT, validate_online_run_request

#: Config keys with their own input; blank means the kind's default (GRPO and RLOO differ in num_generations, beta).
ONLINE_CONFIG_FIELDS: tuple[tuple[str, type], ...] = (
    ("max_steps", int),
    ("learning_rate", float),
    ("per_device_batch_size", int),
    ("num_generations", int),
    ("max_completion_length", int),
    ("temperature", float),
    ("beta", float),
    ("heldout_fraction", float),
)


def _parse_weights(text: str) -> list[tuple[str, float]]:
    """ "name = weight" per line (weight defaults to 1) → [(name, weight)], with the line at fault in errors."""
    out: list[tuple[str, float]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, weight_text = line.rpartition("=")
        if not sep:
            name, weight_text = line, "1"
        try:
            weight = float(weight_text)
        except ValueError:
            raise forms.ValidationError(f"Line {number}: {weight_text.strip()!r} is not a number.") from None
        out.append((name.strip(), weight))
    if not out:
        raise forms.ValidationError("Name at least one judge, one per line: “math = 1”.")
    return out


class OnlineRunForm(forms.Form):
    kind = forms.ChoiceField(choices=[(kind.value, kind.label) for kind in TrainingRun.ONLINE_KINDS])
    prompt_set = forms.ModelChoiceField(
        queryset=PromptSet.objects.order_by("name"),
        help_text="Its prompts (and their references) are the training data.",
    )
    parent_model = forms.ModelChoiceField(
        queryset=ModelVersion.objects.none(),
        required=False,
        label="Starting model",
        help_text="A base model or a trained policy.",
    )
    base_model = forms.CharField(max_length=500, required=False, label="Or a path / hub id")
    judges = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4, "cols": 40, "spellcheck": "false"}),
        help_text=(
            "One judge per line as “name = weight” (weight between "
            f"-{MAX_JUDGE_WEIGHT:g} and {MAX_JUDGE_WEIGHT:g}; 1 when left out). Weight 0 makes a judge a monitor: its "
            "scores are logged and plotted, never trained on."
        ),
    )
    audit_size = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=MAX_AUDIT_SIZE,
        label="Audit after success",
        help_text="Rollout groups humans rank beside the starting policy's once the run succeeds (blank or 0: none).",
    )
    advanced_config = forms.CharField(
        required=False,
        label="Advanced config (JSON)",
        widget=forms.Textarea(attrs={"rows": 3, "cols": 60, "spellcheck": "false"}),
        help_text='Merged on top of the fields above, e.g. {"lora": true, "eval_steps": 20, "loss_type": "dr_grpo"}.',
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["parent_model"].queryset = starting_models().filter(
            kind__in=[ModelVersion.Kind.BASE, ModelVersion.Kind.POLICY]
        )
        for name, kind in ONLINE_CONFIG_FIELDS:
            field_class = forms.IntegerField if kind is int else forms.FloatField
            widget = forms.TextInput(attrs={"inputmode": "decimal", "size": 12})
            self.fields[name] = field_class(
                required=False,
                widget=widget,
                label=name.replace("_", " ").capitalize(),
                help_text="Blank: the kind's default.",
            )
        self.judge_weights: list[tuple[Judge, float]] = []

    def clean_judges(self) -> list[tuple[str, float]]:
        return _parse_weights(self.cleaned_data["judges"])

    def clean_advanced_config(self) -> dict[str, Any]:
        text = self.cleaned_data["advanced_config"].strip()
        if not text:
            return {}
        try:
            value = json.loads(text)
        except (ValueError, RecursionError) as error:
            raise forms.ValidationError(f"Not usable JSON: {error}.") from None
        if not isinstance(value, dict):
            raise forms.ValidationError(f"Expected a JSON object ({{...}}), got {type(value).__name__}.")
        return value

    def config(self) -> dict[str, Any]:
        config = {
            name: self.cleaned_data[name] for name, _ in ONLINE_CONFIG_FIELDS if self.cleaned_data.get(name) is not None
        }
        return {**config, **(self.cleaned_data.get("advanced_config") or {})}

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        by_name = {judge.name: judge for judge in Judge.objects.filter(name__in=[n for n, _ in cleaned["judges"]])}
        missing = [name for name, _ in cleaned["judges"] if name not in by_name]
        if missing:
            known = ", ".join(Judge.objects.order_by("name").values_list("name", flat=True)[:20]) or "none yet"
            self.add_error("judges", f"No judge named {missing[0]!r}. Judges: {known}.")
            return cleaned
        self.judge_weights = [(by_name[name], weight) for name, weight in cleaned["judges"]]
        try:
            validate_online_run_request(
                kind=cleaned["kind"],
                prompt_set=cleaned["prompt_set"],
                judges=self.judge_weights,
                base_model=cleaned.get("base_model", "").strip(),
                parent_model=cleaned.get("parent_model"),
                config=self.config(),
                audit_size=cleaned.get("audit_size") or 0,
            )
        except RunRejected as error:
            self.add_rejection(error)
        return cleaned

    def add_rejection(self, error: RunRejected) -> None:
        target = error.field if error.field in self.fields else "advanced_config"
        self.add_error(target, str(error))
