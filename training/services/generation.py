"""Generation runs: a policy samples rollouts for a prompt set; they enter the queue all at once.

Sampling happens outside any transaction (it can take minutes); the writes — new rollouts, then
the tasks that mix them with the previous policy's — happen in one transaction at the end, so the
queue never holds half a generation. Exact duplicates collapse: within a sample batch here, and
against stored rollouts by the UNIQUE(prompt, policy, content_hash) constraint.
"""

from __future__ import annotations

import traceback
from datetime import datetime

from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from labeling.models import Prompt, PromptSet, RankingTask, Rollout
from labeling.services.parsing import sha256_text
from labeling.services.task_builder import build_mixed_tasks, build_tasks
from training.models import GenerationRun, ModelVersion
from training.services.runs import Heartbeat, RunRejected, choose_queue


def _now() -> datetime:
    return timezone.now()


def _generation_config(settings: dict):
    from training.trainers.generation import GenerationConfig

    try:
        return GenerationConfig(**settings)
    except TypeError as error:
        raise RunRejected(f"Unknown generation setting: {error}", field="settings") from None
    except ValueError as error:
        raise RunRejected(str(error), field="settings") from None


def default_comparison(policy: ModelVersion, prompt_set: PromptSet) -> str:
    """The policy this one is compared with: its parent, if the parent has rollouts in the set."""
    if policy.parent_id and Rollout.objects.filter(prompt__prompt_set=prompt_set, policy=policy.parent.name).exists():
        return policy.parent.name
    return ""


def start_generation(
    *,
    policy: ModelVersion,
    prompt_set: PromptSet,
    settings: dict | None = None,
    compare_with: str | None = None,
    trigger: str = "manual",
    dispatch: bool = True,
) -> GenerationRun:
    """Validate and queue a generation run (sent to a worker on commit unless dispatch=False)."""
    if policy.kind != ModelVersion.Kind.POLICY:
        raise RunRejected(f"{policy} is a {policy.kind} model; only policies generate rollouts.", field="policy")
    config = _generation_config(settings or {})
    run = GenerationRun.objects.create(
        policy=policy,
        prompt_set=prompt_set,
        settings=config.to_dict(),
        compare_with=default_comparison(policy, prompt_set) if compare_with is None else compare_with,
        queue=choose_queue().queue if dispatch else "cpu",
        trigger=trigger,
    )
    if dispatch:
        transaction.on_commit(lambda: _send(run))
    return run


def _send(run: GenerationRun) -> None:
    from training.tasks import execute_generation_run

    try:
        execute_generation_run.apply_async(args=[run.pk], queue=run.queue)
    except Exception as error:
        GenerationRun.objects.filter(pk=run.pk, status=GenerationRun.Status.QUEUED).update(
            status=GenerationRun.Status.FAILED, finished_at=_now(), error=f"Could not queue the run: {error}"
        )


def execute_generation(run_id: int) -> GenerationRun:
    """Sample, then write rollouts and tasks in one transaction. Called by the Celery task."""
    from training.trainers.generation import generate

    now = _now()
    if not GenerationRun.objects.filter(pk=run_id, status=GenerationRun.Status.QUEUED).update(
        status=GenerationRun.Status.RUNNING, started_at=now, heartbeat_at=now
    ):
        return GenerationRun.objects.get(pk=run_id)
    run = GenerationRun.objects.select_related("policy", "prompt_set").get(pk=run_id)
    heartbeat = Heartbeat(GenerationRun, run.pk)
    heartbeat.start()
    try:
        prompts = list(Prompt.objects.filter(prompt_set=run.prompt_set).order_by("id").values("id", "text", "messages"))
        GenerationRun.objects.filter(pk=run.pk).update(prompts_total=len(prompts))

        def progress(done: int, total: int) -> None:
            GenerationRun.objects.filter(pk=run.pk).update(prompts_done=done, heartbeat_at=_now())

        result = generate(
            model_path=run.policy.path,
            prompts=[p["messages"] if p["messages"] is not None else p["text"] for p in prompts],
            config=_generation_config(run.settings),
            on_progress=progress,
        )
        _write(run, prompts, result)
    except Exception as error:
        GenerationRun.objects.filter(pk=run.pk, status=GenerationRun.Status.RUNNING).update(
            status=GenerationRun.Status.FAILED,
            finished_at=_now(),
            error=f"{error.__class__.__name__}: {error}\n\n{traceback.format_exc()[-4000:]}",
        )
    finally:
        heartbeat.stop()
    return GenerationRun.objects.get(pk=run.pk)


def _write(run: GenerationRun, prompts: list[dict], result) -> None:
    policy_name = run.policy.name
    with transaction.atomic():
        locked = GenerationRun.objects.select_for_update().get(pk=run.pk)
        if locked.status != GenerationRun.Status.RUNNING:
            return  # the reaper gave up on us meanwhile; write nothing
        round_number = (RankingTask.objects.filter(prompt_set=run.prompt_set).aggregate(r=Max("round"))["r"] or 0) + 1
        fresh: dict[tuple[int, str], str] = {}
        sampled = 0
        for prompt, samples in zip(prompts, result.samples, strict=True):
            for text in samples:
                if not text:
                    continue
                sampled += 1
                fresh.setdefault((prompt["id"], sha256_text(text)), text)
        before = Rollout.objects.filter(prompt__prompt_set=run.prompt_set, policy=policy_name).count()
        Rollout.objects.bulk_create(
            [
                Rollout(
                    prompt_id=prompt_id,
                    policy=policy_name,
                    content_hash=digest,
                    text=text,
                    generation={**run.settings, "round": round_number, "generation_run": run.pk},
                )
                for (prompt_id, digest), text in fresh.items()
            ],
            ignore_conflicts=True,
            batch_size=2000,
        )
        created = Rollout.objects.filter(prompt__prompt_set=run.prompt_set, policy=policy_name).count() - before
        if run.compare_with:
            tasks = build_mixed_tasks(
                run.prompt_set, new_policy=policy_name, old_policy=run.compare_with, round=round_number
            )
        else:
            tasks = build_tasks(run.prompt_set, round=round_number)
        GenerationRun.objects.filter(pk=run.pk).update(
            status=GenerationRun.Status.SUCCEEDED,
            finished_at=_now(),
            prompts_done=len(prompts),
            rollouts_created=created,
            duplicates_collapsed=sampled - created,
            tasks_created=tasks,
            round=round_number,
            backend=result.backend,
            device=result.device,
            tokens_per_second=round(result.tokens_per_second, 1),
        )
