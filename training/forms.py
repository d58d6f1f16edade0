"""Forms for the training admin: export a dataset version, start a run, register a base model, auto-train.

Validation rules live in the services and config dataclasses (`ExportOptions`, `validate_run_request`,
`validate_base_model_path`, `validate_auto_train_policy`, `RUN_CONFIGS[kind]`); these forms only turn
inputs into their arguments and put the errors they raise next to the right input.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.auth import get_user_model
from django.http import QueryDict

from labeling.models import PromptSet
from training.config_form_fields import config_fields_of, config_form_field, unwrap_optional
from training.models import AutoTrainPolicy, DatasetVersion, ModelVersion, TrainingRun
from training.services.autotrain import validate_auto_train_policy
from training.services.base_models import generating_models, hub_model_unavailable_reason, starting_models
from training.services.export import RULE_FIELDS, ExportError, ExportOptions
from training.services.registry import RegistrationError, validate_base_model_path
from training.services.runs import RunRejected, validate_run_request
from training.trainers import generation as sampling
from training.trainers.config import RUN_CONFIGS
from training.trainers.length_estimate import CONFIRM_SHARE, LengthEstimate, estimate_run_lengths

# --- export ---------------------------------------------------------------------------------------------------------

TIES_CHOICES = [("drop", "drop — tied rollouts give no pair"), ("mark", "mark — keep them as rows with tie=true")]
ALL_BAD_CHOICES = [("skip", "skip — 'all bad' rankings give no pairs"), ("keep", "keep — use their order as given")]
FLAGGED_CHOICES = [
    ("never_chosen", "never chosen — a flagged rollout may lose, never win"),
    ("exclude", "exclude — remove flagged rollouts before pairing"),
    ("ignore", "ignore — treat flagged rollouts like any other"),
]
AGGREGATION_CHOICES = [
    ("per_annotator", "per annotator — one row per annotator's pair"),
    ("majority", "majority — one row per pair, weight = vote margin"),
    ("bradley_terry", "Bradley–Terry — one row per pair, ordered by fitted strength"),
]
CUT_OFF_CHOICES = [
    ("never_chosen", "never chosen — a rollout cut off at max_new_tokens may lose, never win"),
    ("allow", "allow — treat cut-off rollouts like any other"),
]
SOURCE_CHOICES = [
    ("human", "people — annotators' rankings"),
    ("judge", "judges — rankings by auto-rank (tool feedback, reward models)"),
    ("all", "all — people's and judges'"),
]
GOLD_CHOICES = [
    ("exclude", "exclude — gold tasks check known answers, they are not new labels"),
    ("include", "include — export gold tasks' rankings too"),
]
GOLD_PAUSED_CHOICES = [
    ("keep", "keep — paused annotators' earlier rankings stay"),
    ("exclude", "exclude — leave out rankings of annotators paused by their gold accuracy"),
]
RATIONALE_CHOICES = [
    ("omit", "omit — no rationale column"),
    ("include", "include — each pair carries its ranking's rationale (per-annotator rows only)"),
]
FORMAT_CHOICES = [
    ("standard", "standard — prompt/chosen/rejected as strings"),
    ("conversational", "conversational — lists of chat messages"),
]


# What a browser's datetime-local input sends and expects back.
_DATETIME_LOCAL = "%Y-%m-%dT%H:%M"


class AnnotatorChoiceField(forms.ModelMultipleChoiceField):
    def label_from_instance(self, user: Any) -> str:
        return user.get_username()


class ExportForm(forms.Form):
    """Everything `ExportOptions` takes, plus a name; `options()` builds the validated options."""

    prompt_sets = forms.ModelMultipleChoiceField(
        queryset=PromptSet.objects.order_by("name"), widget=forms.CheckboxSelectMultiple
    )
    since = forms.DateTimeField(
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format=_DATETIME_LOCAL),
        help_text="Only rankings submitted at or after this time (UTC).",
    )
    until = forms.DateTimeField(
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format=_DATETIME_LOCAL),
        help_text="Only rankings submitted before this time (UTC).",
    )
    annotators = AnnotatorChoiceField(
        queryset=get_user_model().objects.none(),
        required=False,
        widget=forms.SelectMultiple(attrs={"size": 6}),
        help_text="Only these annotators' rankings; none selected means everyone's.",
    )
    ties = forms.ChoiceField(choices=TIES_CHOICES, initial="drop")
    all_bad = forms.ChoiceField(choices=ALL_BAD_CHOICES, initial="skip", label="All-bad rankings")
    flagged = forms.ChoiceField(choices=FLAGGED_CHOICES, initial="never_chosen", label="Flagged rollouts")
    cut_off = forms.ChoiceField(
        choices=CUT_OFF_CHOICES, initial="never_chosen", required=False, label="Cut-off rollouts"
    )
    sources = forms.ChoiceField(choices=SOURCE_CHOICES, initial="human", required=False, label="Rankings by")
    gold = forms.ChoiceField(choices=GOLD_CHOICES, initial="exclude", required=False, label="Gold tasks")
    gold_paused = forms.ChoiceField(
        choices=GOLD_PAUSED_CHOICES, initial="keep", required=False, label="Paused annotators"
    )
    rationale = forms.ChoiceField(choices=RATIONALE_CHOICES, initial="omit", required=False, label="Rationales")
    aggregation = forms.ChoiceField(choices=AGGREGATION_CHOICES, initial="per_annotator")
    format = forms.ChoiceField(choices=FORMAT_CHOICES, initial="standard")
    test_fraction = forms.FloatField(
        initial=0.1, help_text="Share of prompts held out for evaluation, in [0, 1). The split is by prompt."
    )
    seed = forms.IntegerField(initial=0, help_text="Decides which prompts land in the test split.")
    name = forms.CharField(max_length=200, required=False, help_text="Optional; defaults to pairs-<hash prefix>.")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Only people who ranked something are worth offering; evaluated per request, not at import.
        self.fields["annotators"].queryset = (
            get_user_model().objects.filter(rankings__isnull=False).distinct().order_by("username")
        )

    def _rule(self, cleaned: dict[str, Any], name: str) -> Any:
        value = cleaned.get(name)
        return self.fields[name].initial if value in (None, "") else value

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        try:
            self._options = ExportOptions(
                prompt_set_ids=tuple(prompt_set.pk for prompt_set in cleaned["prompt_sets"]),
                since=cleaned.get("since"),
                until=cleaned.get("until"),
                annotator_ids=tuple(user.pk for user in cleaned.get("annotators") or ()),
                # A rule left out of the request keeps its default (the later rules are optional inputs).
                **{name: self._rule(cleaned, name) for name in RULE_FIELDS},
            )
        except ExportError as error:
            raise forms.ValidationError(str(error)) from None
        return cleaned

    def options(self) -> ExportOptions:
        """The validated export options (after `is_valid()`)."""
        return self._options


# --- runs -----------------------------------------------------------------------------------------------------------

#: Config keys shown as their own inputs; every other key is set through the advanced JSON.
COMMON_CONFIG_FIELDS = (
    "learning_rate",
    "max_steps",
    "num_train_epochs",
    "per_device_batch_size",
    "max_length",
    "seed",
    "beta",
    "lora",
)
#: Fields of the run form that are not config keys.
_RUN_FIELDS = ("kind", "dataset_version", "base_model", "parent_model", "advanced_config", "config_kind")


class ModelVersionChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, model_version: ModelVersion) -> str:
        return f"{model_version.name} ({model_version.get_kind_display()})"


class DatasetVersionChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, version: DatasetVersion) -> str:
        return f"{version} — {version.n_train} train / {version.n_test} test pairs"


OFFLINE_KIND_CHOICES = [(k.value, k.label) for k in TrainingRun.Kind if k not in TrainingRun.ONLINE_KINDS]


class RunForm(forms.Form):
    """Start a training run: what to train on and from, plus the chosen kind's hyper-parameters.

    The hyper-parameter inputs belong to one kind (`config_kind`, a hidden field), because the
    defaults differ (e.g. the learning rate). When the kind select changes without JavaScript, the
    posted numbers are the other kind's; `kind_switched` then tells the view to show fresh inputs
    instead of silently training with the wrong defaults.
    """

    # GRPO and RLOO train on a prompt set with judges: their own form (forms_online.OnlineRunForm).
    kind = forms.ChoiceField(choices=OFFLINE_KIND_CHOICES, initial=TrainingRun.Kind.DPO)
    dataset_version = DatasetVersionChoiceField(queryset=DatasetVersion.objects.all())
    parent_model = ModelVersionChoiceField(
        queryset=ModelVersion.objects.none(),  # set per form: registered models, base models first
        required=False,
        label="Starting model",
        help_text="A registered model: a base model, or a trained policy to continue from (DPO needs one of those).",
    )
    base_model = forms.CharField(
        max_length=500,
        required=False,
        label="Or a path / hub id",
        help_text="Local path or cached hub id of other starting weights; used only when no model is chosen above.",
    )
    advanced_config = forms.CharField(
        required=False,
        label="Advanced config (JSON)",
        widget=forms.Textarea(attrs={"rows": 4, "cols": 60, "spellcheck": "false", "class": "vLargeTextField"}),
        help_text='A JSON object merged on top of the fields above, e.g. {"logging_steps": 5, "eval": false}.',
    )
    config_kind = forms.ChoiceField(choices=OFFLINE_KIND_CHOICES, widget=forms.HiddenInput)
    confirm_length = forms.BooleanField(
        required=False,
        label="Train anyway",
        help_text=f"Queue the run although more than {CONFIRM_SHARE:.0%} of a split's pairs exceed max_length.",
    )

    def __init__(self, data: QueryDict | None = None, *, kind: str | None = None, **kwargs: Any) -> None:
        super().__init__(data, **kwargs)
        #: What max_length would do to the chosen dataset (set by `clean`; None when there is nothing to estimate).
        self.length_estimate: LengthEstimate | None = None
        self.fields["base_model"].initial = settings.PREFLOOP_DEFAULT_BASE_MODEL
        self.fields["parent_model"].queryset = starting_models()
        if data is None and not settings.PREFLOOP_DEFAULT_BASE_MODEL and "parent_model" not in self.initial:
            # Without a configured path, the run starts from the first registered model (SmolLM2 after `make run`).
            first_base = starting_models().filter(kind=ModelVersion.Kind.BASE).first()
            self.initial["parent_model"] = first_base.pk if first_base else None
        if data is not None:
            posted_kind = data.get("kind", "")
            kind = data.get("config_kind") or posted_kind
            self.kind_switched = posted_kind in RUN_CONFIGS and kind in RUN_CONFIGS and posted_kind != kind
            self.new_kind = posted_kind
        else:
            kind = kind or self.initial.get("kind")
            self.kind_switched = False
        self.config_kind = kind if kind in RUN_CONFIGS else TrainingRun.Kind.DPO
        self.fields["config_kind"].initial = self.config_kind
        if data is None:
            self.initial["kind"] = self.config_kind
        self.config_field_names: list[str] = []
        self.other_config_fields: list[dict[str, str]] = []
        for config_field, hint in config_fields_of(self.config_kind):
            if config_field.name in COMMON_CONFIG_FIELDS:
                self.fields[config_field.name] = config_form_field(config_field, hint)
                self.config_field_names.append(config_field.name)
            else:
                default = config_field.default if config_field.default is not dataclasses.MISSING else None
                self.other_config_fields.append(
                    {
                        "name": config_field.name,
                        "default": json.dumps(default),
                        "help": config_field.metadata.get("help", ""),
                    }
                )

    @classmethod
    def initial_from_query(cls, query: QueryDict) -> dict[str, str]:
        """Initial values carried in a query string (a kind switch, or a "train on this dataset" link)."""
        return {
            name: query[name]
            for name in ("kind", "dataset_version", "base_model", "parent_model", "advanced_config")
            if query.get(name)
        }

    def carried_over(self) -> dict[str, str]:
        """The non-hyper-parameter inputs as posted, to pre-fill a fresh form for another kind."""
        return {name: self.data[name] for name in _RUN_FIELDS if name != "config_kind" and self.data.get(name)}

    def clean_advanced_config(self) -> dict[str, Any]:
        text = self.cleaned_data["advanced_config"].strip()
        if not text:
            return {}
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise forms.ValidationError(
                f"Not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})."
            ) from None
        except RecursionError:
            raise forms.ValidationError("Not usable JSON: nested too deeply.") from None
        except ValueError:  # Python refuses to read an integer of over 4,300 digits
            raise forms.ValidationError("Not usable JSON: a number is too long.") from None
        if not isinstance(value, dict):
            raise forms.ValidationError(f"Expected a JSON object ({{...}}), got {type(value).__name__}.")
        return value

    def clean(self) -> dict[str, Any]:
        """Say before queueing what max_length would drop or truncate; above CONFIRM_SHARE, ask to confirm."""
        cleaned = super().clean()
        if self.errors:
            return cleaned
        parent_model, version = cleaned.get("parent_model"), cleaned["dataset_version"]
        # The service's checks first, on their inputs: the estimate reads the model's files, which only a request
        # the service accepts may point it at (a 300-character name is refused, not passed to the file system).
        try:
            config = validate_run_request(
                kind=cleaned["kind"],
                dataset_version=version,
                base_model=cleaned.get("base_model", "").strip(),
                parent_model=parent_model,
                config=self.config(),
            )
        except RunRejected as error:
            self.add_rejection(error)
            return cleaned
        self.length_estimate = estimate_run_lengths(
            kind=self.config_kind,
            config=config,
            dataset_path=version.path,
            pairs={"train": version.n_train, "test": version.n_test},
            model_path=parent_model.path if parent_model else cleaned.get("base_model", "").strip(),
        )
        if self.length_estimate and self.length_estimate.needs_confirmation and not cleaned.get("confirm_length"):
            self.add_error(
                "confirm_length",
                f"{self.length_estimate.describe()} Raise max_length, or tick “Train anyway” to queue it as it is.",
            )
        return cleaned

    def config(self) -> dict[str, Any]:
        """The config dict for `start_run`: the inputs (blank non-optional ones left to their defaults) + the JSON."""
        hints = {f.name: hint for f, hint in config_fields_of(self.config_kind)}
        config: dict[str, Any] = {}
        for name in self.config_field_names:
            value = self.cleaned_data.get(name)
            if value is None and not unwrap_optional(hints[name])[1]:
                continue
            config[name] = value
        config.update(self.cleaned_data.get("advanced_config") or {})
        return config

    def add_rejection(self, error: RunRejected) -> None:
        """Put a service's refusal next to the input it is about."""
        target = error.field
        if target == "config" or (target and target not in self.fields):
            # A config key without its own input (or a problem spanning keys) belongs to the JSON box.
            target = "advanced_config"
        self.add_error(target, str(error))


# --- model registry -------------------------------------------------------------------------------------------------


class BaseModelRegistrationForm(forms.ModelForm):
    """A hand-registered starting model (no run, no dataset): name, kind and where its weights are."""

    class Meta:
        model = ModelVersion
        fields = ["name", "kind", "path"]

    def clean_path(self) -> str:
        try:
            path = validate_base_model_path(self.cleaned_data["path"])
        except RegistrationError as error:
            raise forms.ValidationError(str(error)) from None
        if path.endswith(".gguf"):
            raise forms.ValidationError(
                "A GGUF file is converted by a worker first: run `manage.py register_base_model NAME FILE.gguf`."
            )
        if not (path.startswith(("/", ".", "~")) or path.count("/") > 1) and (
            reason := hub_model_unavailable_reason(path)
        ):
            raise forms.ValidationError(reason)
        return path


# --- auto-train -----------------------------------------------------------------------------------------------------


class AutoTrainPolicyForm(forms.ModelForm):
    """A scheduled run's settings, checked by `validate_auto_train_policy` so a bad policy fails here, not at 3 a.m."""

    class Meta:
        model = AutoTrainPolicy
        fields = ["prompt_set", "enabled", "min_new_rankings", "kind", "base_model", "config", "refresh_after_dpo"]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        prompt_set, kind, config = cleaned.get("prompt_set"), cleaned.get("kind"), cleaned.get("config")
        if prompt_set is None or kind is None or config is None:
            return cleaned  # the missing input already carries its own error
        try:
            validate_auto_train_policy(
                prompt_set=prompt_set, kind=kind, base_model=cleaned.get("base_model") or "", config=config
            )
        except RunRejected as error:
            self.add_error(error.field if error.field in self.fields else None, str(error))
        return cleaned


class GenerationForm(forms.Form):
    """Refresh a prompt set by hand: a policy samples new rollouts that enter the queue beside the old ones."""

    policy = ModelVersionChoiceField(
        queryset=ModelVersion.objects.none(),  # set per form: base models first, then trained policies
        help_text="A base model or a trained policy.",
    )
    prompt_set = forms.ModelChoiceField(queryset=PromptSet.objects.all())
    # Bounds from the sampling config (`GenerationConfig` checks them again); every setting is passed to the engine,
    # none is left to the model's generation_config.json or the library's defaults.
    n_samples = forms.IntegerField(
        min_value=1, max_value=sampling.MAX_SAMPLES, initial=4, help_text="Samples per prompt."
    )
    temperature = forms.FloatField(
        min_value=0, max_value=sampling.MAX_TEMPERATURE, initial=1.0, help_text="0 is greedy decoding."
    )
    top_p = forms.FloatField(min_value=0.01, max_value=1.0, initial=1.0, help_text="1 is off.")
    top_k = forms.IntegerField(min_value=0, max_value=sampling.MAX_TOP_K, initial=0, help_text="0 is off.")
    repetition_penalty = forms.FloatField(
        min_value=sampling.MIN_REPETITION_PENALTY,
        max_value=sampling.MAX_REPETITION_PENALTY,
        initial=1.0,
        help_text="1 is off.",
    )
    max_new_tokens = forms.IntegerField(
        min_value=1,
        max_value=sampling.MAX_NEW_TOKENS,
        initial=256,
        help_text="A sample still running at this length is cut off and marked so (never a chosen answer).",
    )
    seed = forms.IntegerField(min_value=0, max_value=sampling.MAX_SEED, initial=0)
    compare_with = forms.CharField(
        required=False,
        help_text="Policy whose rollouts the new tasks mix in (blank: the policy's parent, if it has rollouts here).",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["policy"].queryset = generating_models()
        if not self.is_bound and "policy" not in self.initial:
            first = generating_models().first()
            self.initial["policy"] = first.pk if first else None

    def settings(self) -> dict:
        return {k: self.cleaned_data[k] for k in ("n_samples", *sampling.SAMPLING_KEYS)}
