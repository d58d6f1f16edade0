"""Admin for judges: create one (config validated, naming the key), auto-rank a prompt set with the selected
judges (an action with a page to pick the set), read each judge's agreement with humans, and the scores and jobs.

Scoring happens in a worker (`request_auto_rank`); nothing here imports torch or math-verify.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.html import format_html, format_html_join

from labeling.models import PromptSet
from training.admin._common import ADMIN_CSS, admin_link, pretty_json
from training.judges.config import ConfigError
from training.models import AutoRankJob, Judge, JudgeScore
from training.services.judging import judge_agreement, judge_create, request_auto_rank, validate_judge


class JudgeAddForm(forms.ModelForm):
    class Meta:
        model = Judge
        fields = ["name", "kind", "config", "reward_model"]
        help_texts = {
            "config": 'Kind settings as JSON, e.g. {"pattern": "answer is {answer}"} for regex, '
            '{"unit": "words", "max": 200} for length, {"wall_seconds": 10} for unit tests. {} takes the defaults.',
        }

    def clean(self) -> dict:
        cleaned = super().clean() or {}
        kind = cleaned.get("kind")
        if kind:
            try:
                validate_judge(kind=kind, config=cleaned.get("config") or {}, reward_model=cleaned.get("reward_model"))
            except ConfigError as error:
                self.add_error("reward_model" if error.field == "reward_model" else "config", str(error))
        return cleaned


class AutoRankForm(forms.Form):
    prompt_set = forms.ModelChoiceField(queryset=PromptSet.objects.order_by("name"))


@admin.register(Judge)
class JudgeAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "reward_model", "created_at"]
    list_filter = ["kind"]
    search_fields = ["name"]
    actions = ["auto_rank_action"]
    form = JudgeAddForm

    class Media:
        css = ADMIN_CSS

    def get_readonly_fields(self, request: HttpRequest, obj: Judge | None = None) -> list[str]:
        # A judge's scores and rankings were made under its config: changing it would mislabel them.
        if obj is None:
            return []
        return ["name", "kind", "config_json", "reward_model", "user", "agreement", "recent_jobs", "created_at"]

    def get_fields(self, request: HttpRequest, obj: Judge | None = None) -> list[str]:
        if obj is None:
            return ["name", "kind", "config", "reward_model"]
        return self.get_readonly_fields(request, obj)

    def save_model(self, request: HttpRequest, obj: Judge, form, change: bool) -> None:
        if change:
            return  # everything is read-only once created
        created = judge_create(
            name=obj.name,
            kind=obj.kind,
            config=obj.config,
            reward_model=obj.reward_model,
            created_by=request.user,
        )
        obj.pk, obj.user_id, obj.config = created.pk, created.user_id, created.config
        obj._state.adding = False

    @admin.display(description="config")
    def config_json(self, judge: Judge) -> str:
        return pretty_json(judge.config)

    @admin.display(description="agreement with humans")
    def agreement(self, judge: Judge) -> str:
        """Per prompt set the judge ranked: pairwise agreement with human rankings of the same tasks."""
        set_ids = sorted(set(judge.auto_rank_jobs.values_list("prompt_set_id", flat=True)))
        names = dict(PromptSet.objects.filter(pk__in=set_ids).values_list("pk", "name"))
        rows = []
        for set_id in set_ids:
            result = judge_agreement(judge=judge, prompt_set_ids=[set_id])
            rate = "—" if result.rate is None else f"{result.rate:.1%}"
            rows.append(
                (
                    names.get(set_id, set_id),
                    result.tasks,
                    result.pairs,
                    result.agree,
                    result.disagree,
                    result.judge_ties,
                    rate,
                )
            )
        if not rows:
            return "Not auto-ranked yet."
        body = format_html_join(
            "", "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>", rows
        )
        return format_html(
            "<table><thead><tr><th>prompt set</th><th>tasks ranked by both</th><th>human pairs</th><th>agree</th>"
            "<th>disagree</th><th>judge tie</th><th>agreement</th></tr></thead><tbody>{}</tbody></table>"
            "<p class='help'>Agreement = (agree + ½ judge ties) / pairs the humans ordered; pairs humans tied are "
            "left out.</p>",
            body,
        )

    @admin.display(description="auto-rank jobs")
    def recent_jobs(self, judge: Judge) -> str:
        jobs = judge.auto_rank_jobs.select_related("prompt_set")[:10]
        if not jobs:
            return "None."
        rows = [
            (admin_link("training_autorankjob_change", job.pk, f"#{job.pk}"), job.prompt_set, job.get_status_display())
            for job in jobs
        ]
        return format_html_join("", "<div>{} — {}: {}</div>", rows)

    @admin.action(description="Auto-rank a prompt set with the selected judges")
    def auto_rank_action(self, request: HttpRequest, queryset: QuerySet[Judge]) -> HttpResponse | None:
        if not request.user.has_perm("training.add_autorankjob"):
            raise PermissionDenied
        form = AutoRankForm(request.POST if "apply" in request.POST else None)
        if form.is_valid():
            prompt_set = form.cleaned_data["prompt_set"]
            jobs = [
                request_auto_rank(judge=judge, prompt_set=prompt_set, created_by=request.user) for judge in queryset
            ]
            self.message_user(
                request,
                f"Queued {len(jobs)} auto-rank job(s) on {prompt_set}: see Auto-rank jobs for their progress.",
                messages.SUCCESS,
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "form": form,
            "judges": queryset,
            "action_name": "auto_rank_action",
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
        }
        return TemplateResponse(request, "admin/training/judge/auto_rank.html", context)


@admin.register(AutoRankJob)
class AutoRankJobAdmin(admin.ModelAdmin):
    list_display = ["id", "judge", "prompt_set", "status", "rollouts_scored", "tasks_ranked", "tasks_skipped"]
    list_filter = ["status", "judge"]
    readonly_fields = [f.name for f in AutoRankJob._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # jobs start from the judges' action, the API or the command

    def has_change_permission(self, request: HttpRequest, obj: AutoRankJob | None = None) -> bool:
        return False


@admin.register(JudgeScore)
class JudgeScoreAdmin(admin.ModelAdmin):
    list_display = ["id", "judge", "rollout_id", "score", "reason"]
    list_filter = ["judge"]
    readonly_fields = ["judge", "rollout", "score", "details_json", "created_at"]
    fields = readonly_fields
    list_select_related = ["judge"]

    @admin.display(description="reason")
    def reason(self, score: JudgeScore) -> str:
        return str(score.details.get("reason", ""))

    @admin.display(description="details")
    def details_json(self, score: JudgeScore) -> str:
        return pretty_json(score.details)  # escaped: stderr of model-written code is untrusted text

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: JudgeScore | None = None) -> bool:
        return False
