"""Generation runs: a policy samples rollouts for a prompt set; they enter the queue all at once.

Sampling happens outside any transaction (it can take minutes). At the end, one transaction locks
the run, asks labeling to add the samples as a new round (`labeling.services.rounds`: new rollouts,
then the tasks that mix them with the previous policy's, duplicates collapsed) and records the
outcome on the run, so the queue never holds half a generation and a run never claims one it did
not write. Training reads and writes labeling's tables only through labeling's selectors and services.

Every rollout records what decided it: each sampling setting, written out even where it was left at its default
(`_generation_record`), the engine and stop ids, and its own finish reason ("stop", or "length" when cut off at
max_new_tokens; `labeling.services.rollout_finish` reads it, e.g. so a cut-off rollout is never chosen in an export).
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

from django.conf import settings
from django.db import transaction

from labeling.selectors import policy_has_rollouts, prompt_inputs_of_set
from labeling.services.rollout_finish import FINISH_REASON
from labeling.services.rounds import add_generated_round
from training.models import GenerationRun, ModelVersion
from training.services.dispatch import choose_queue, send_generation_run_on_commit
from training.services.lifecycle import Heartbeat, RunRejected
from training.services.rollout_quality import screen_if_enabled
from training.trainers.generation import GenerationConfig, GenerationResult, generate, resolved_backend
from webapp import clock

if TYPE_CHECKING:
    from labeling.models import PromptSet


def _generation_config(settings: dict) -> GenerationConfig:
    try:
        return GenerationConfig(**settings)
    except TypeError as error:
        raise RunRejected(f"Unknown generation setting: {error}", field="settings") from None
    except ValueError as error:
        raise RunRejected(str(error), field="settings") from None


def default_comparison(policy: ModelVersion, prompt_set: PromptSet) -> str:
    """The policy this one is compared with: its parent, if the parent has rollouts in the set."""
    parent = policy.parent
    if parent is not None and policy_has_rollouts(prompt_set_id=prompt_set.pk, policy=parent.name):
        return parent.name
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
    if policy.kind not in (ModelVersion.Kind.POLICY, ModelVersion.Kind.BASE):
        raise RunRejected(
            f"{policy} is a {policy.kind} model; only policies and base models generate rollouts.", field="policy"
        )
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
        send_generation_run_on_commit(run)
    return run


def execute_generation(run_id: int, *, screen: bool = True) -> GenerationRun:
    """Sample, then write rollouts and tasks in one transaction. Called by the Celery task."""
    now = clock.now()
    if not GenerationRun.objects.filter(pk=run_id, status=GenerationRun.Status.QUEUED).update(
        status=GenerationRun.Status.RUNNING, started_at=now, heartbeat_at=now
    ):
        return GenerationRun.objects.get(pk=run_id)
    run = GenerationRun.objects.select_related("policy", "prompt_set").get(pk=run_id)
    heartbeat = Heartbeat(GenerationRun, run.pk)
    heartbeat.start()
    try:
        prompts = prompt_inputs_of_set(prompt_set_id=run.prompt_set_id)
        GenerationRun.objects.filter(pk=run.pk).update(prompts_total=len(prompts))

        def progress(done: int, total: int) -> None:
            GenerationRun.objects.filter(pk=run.pk).update(prompts_done=done, heartbeat_at=clock.now())

        result = _sample(run.policy.path, list(prompts.values()), _generation_config(run.settings), progress)
        _write(run, list(prompts), result, screen=screen)
    except Exception as error:
        GenerationRun.objects.filter(pk=run.pk, status=GenerationRun.Status.RUNNING).update(
            status=GenerationRun.Status.FAILED,
            finished_at=clock.now(),
            error=f"{error.__class__.__name__}: {error}\n\n{traceback.format_exc()[-4000:]}",
        )
    finally:
        heartbeat.stop()
    return GenerationRun.objects.get(pk=run.pk)


def _sample(
    model_path: str, prompts: list, config: GenerationConfig, progress: Callable[[int, int], None]
) -> GenerationResult:
    """Sample in this worker process, or in a process of its own: always for vLLM (it may not start inside a Celery
    prefork child and frees its GPU memory only when its process exits), and for every engine where the
    PREFLOOP_GENERATION_PROCESS setting says "always"."""
    own_process = settings.PREFLOOP_GENERATION_PROCESS == "always" or resolved_backend(config) == "vllm"
    if not own_process:
        return generate(model_path=model_path, prompts=prompts, config=config, on_progress=progress)
    from training.trainers.generation_process import generate_in_subprocess

    engine_options = {
        "gpu_memory_utilization": settings.PREFLOOP_VLLM_GPU_MEMORY_UTILIZATION,
        "dtype": settings.PREFLOOP_VLLM_DTYPE,
    }
    return generate_in_subprocess(
        model_path=model_path, prompts=prompts, config=config, on_progress=progress, engine_options=engine_options
    )


def _generation_record(run: GenerationRun, result: GenerationResult) -> dict:
    """What every rollout of the run records: each sampling setting (defaults written out, so a run queued before a
    setting existed records the value it sampled with), the engine, the ids that ended samples, and the run."""
    config = _generation_config(run.settings)
    return {
        **config.to_dict(),
        **config.sampling(),
        "backend": result.backend,
        "stop_token_ids": result.stop_token_ids,
        "generation_run": run.pk,
    }


def _with_finish(
    samples: list[list[str]], finish_reasons: list[list[str | None]] | None
) -> list[list[str | tuple[str, dict]]]:
    """Each sample with its own finish reason ("stop"/"length"), for the round to store on its rollout."""
    if not finish_reasons:
        return [list(texts) for texts in samples]
    return [
        [(text, {FINISH_REASON: reason}) if reason else text for text, reason in zip(texts, reasons, strict=True)]
        for texts, reasons in zip(samples, finish_reasons, strict=True)
    ]


def _write(run: GenerationRun, prompt_ids: list[int], result: GenerationResult, *, screen: bool = True) -> None:
    with transaction.atomic():
        locked = GenerationRun.objects.select_for_update().get(pk=run.pk)
        if locked.status != GenerationRun.Status.RUNNING:
            return  # the reaper gave up on us meanwhile; write nothing
        # Degenerate samples never reach annotators; they are counted on the run instead. Audits pass screen=False:
        # the policy's own samples go to them unscreened, so screening only the parent's would bias the comparison.
        finishes = getattr(result, "finish_reasons", None)
        screened = screen_if_enabled(result.samples, finishes, enabled=screen)
        added = add_generated_round(
            prompt_set=run.prompt_set,
            policy=run.policy.name,
            samples=zip(prompt_ids, _with_finish(screened.kept, screened.kept_finish_reasons), strict=True),
            generation=_generation_record(run, result),
            compare_with=run.compare_with,
        )
        GenerationRun.objects.filter(pk=run.pk).update(
            status=GenerationRun.Status.SUCCEEDED,
            finished_at=clock.now(),
            prompts_done=len(prompt_ids),
            rollouts_created=added.rollouts_created,
            duplicates_collapsed=added.duplicates_collapsed,
            rollouts_rejected=screened.rejected_total,
            rejected_reasons=dict(screened.rejected),
            tasks_created=added.tasks_created,
            round=added.round_number,
            backend=result.backend,
            device=result.device,
            tokens_per_second=round(result.tokens_per_second, 1),
        )
