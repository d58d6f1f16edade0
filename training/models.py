"""Dataset versions, training runs and the model registry.

Lineage: DatasetVersion → TrainingRun → ModelVersion (→ parent ModelVersion). A ModelVersion exists
only for a run that finished: the registry inserts it in the same transaction that marks the run
SUCCEEDED, after its files were moved into place with an atomic rename.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from labeling.models import PromptSet


class DatasetVersion(models.Model):
    """An immutable export of pairwise comparisons, identified by the hash of its content."""

    name = models.CharField(max_length=200)
    content_hash = models.CharField(max_length=64, unique=True)
    prompt_sets = models.ManyToManyField(PromptSet, related_name="dataset_versions")
    options = models.JSONField(help_text="Everything it was built from: sets, window, annotators, rules, format.")
    path = models.CharField(max_length=500, help_text="Directory with train/test as Parquet and JSONL.")
    n_rankings = models.PositiveIntegerField()
    n_train = models.PositiveIntegerField()
    n_test = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.content_hash[:10]})"

    @property
    def n_pairs(self) -> int:
        return self.n_train + self.n_test


class DatasetExport(models.Model):
    """A request to build a DatasetVersion, carried out by a worker.

    The version itself only exists once complete: a failed or crashed export leaves this row FAILED
    with its reason, and no DatasetVersion row and no directory. Identical content found by a later
    export points at the existing version (`reused`).
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Building"
        SUCCEEDED = "succeeded", "Ready"
        FAILED = "failed", "Failed"

    name = models.CharField(max_length=200, blank=True)
    options = models.JSONField(help_text="The selection and rules, as ExportOptions.to_dict() writes them.")
    fingerprint = models.CharField(
        max_length=64, db_index=True, help_text="Hash of the options and the selected rankings' count and newest id."
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    rankings_total = models.PositiveIntegerField(default=0)
    rankings_done = models.PositiveIntegerField(default=0)
    pairs_written = models.PositiveBigIntegerField(default=0)
    dataset_version = models.ForeignKey(
        DatasetVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="exports"
    )
    reused = models.BooleanField(default=False, help_text="The content already existed as this version.")
    then_run = models.JSONField(
        null=True, blank=True, help_text="A training run to start once the version is ready (auto-train)."
    )
    error = models.TextField(blank=True)
    celery_task_id = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Export #{self.pk} ({self.get_status_display()})"

    @property
    def percent(self) -> float | None:
        if self.status == self.Status.SUCCEEDED:
            return 100.0
        if not self.rankings_total:
            return None
        return min(100.0, 100.0 * self.rankings_done / self.rankings_total)


class ModelVersion(models.Model):
    """Weights the registry knows: a base model registered by hand or on first start, or a run's result."""

    class Kind(models.TextChoices):
        POLICY = "policy", "Policy"
        REWARD = "reward", "Reward model"
        # A pretrained starting point (a local folder, a converted GGUF file, or a cached hub id); it trains and
        # generates like a policy but was made by no run of ours.
        BASE = "base", "Base model"

    name = models.CharField(max_length=200, unique=True)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    path = models.CharField(max_length=500, help_text="Local path or hub id of the weights.")
    source = models.CharField(
        max_length=500,
        blank=True,
        help_text="Where a base model came from: 'gguf:<file> sha256:<hex>', 'hub:<id>' or 'dir:<folder>'.",
    )
    parent = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="children")
    dataset_version = models.ForeignKey(
        DatasetVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="models"
    )
    run = models.OneToOneField(
        "TrainingRun",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="model_version",
        help_text="The run that produced it (empty for base models registered by hand).",
    )
    metrics = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name


class RunTrigger(models.TextChoices):
    """What started a training or generation run; the admin filters on it, auto-train follow-ups key on it."""

    MANUAL = "manual", "Manual (admin)"
    SCHEDULE = "schedule", "Schedule (auto-train)"
    API = "api", "API"


class TrainingRun(models.Model):
    Trigger = RunTrigger

    class Kind(models.TextChoices):
        REWARD = "reward", "Reward model (Bradley–Terry)"
        DPO = "dpo", "DPO"
        # Online RL: trained on a prompt set's prompts, rewarded by judges (not on a dataset version).
        GRPO = "grpo", "GRPO (online RL, judges)"
        RLOO = "rloo", "RLOO (online RL, judges)"

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    ACTIVE = (Status.QUEUED, Status.RUNNING)
    ONLINE_KINDS = (Kind.GRPO, Kind.RLOO)
    POLICY_KINDS = (Kind.DPO, Kind.GRPO, Kind.RLOO)

    kind = models.CharField(max_length=8, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    dataset_version = models.ForeignKey(
        DatasetVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="runs"
    )
    prompt_set = models.ForeignKey(
        PromptSet,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="online_runs",
        help_text="Online RL runs (GRPO, RLOO): the prompts the policy answers during training.",
    )
    judges: models.ManyToManyField = models.ManyToManyField(
        "Judge", through="RunJudge", related_name="runs", blank=True
    )
    base_model = models.CharField(max_length=500, blank=True, help_text="Local path or hub id (when no parent model).")
    parent_model = models.ForeignKey(ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="runs")
    config = models.JSONField(default=dict, help_text="Trainer config (validated before queueing).")
    queue = models.CharField(max_length=8, default="cpu")
    celery_task_id = models.CharField(max_length=64, blank=True)
    device = models.CharField(max_length=200, blank=True)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(default=0)
    metrics = models.JSONField(default=dict, blank=True)
    history = models.JSONField(default=list, blank=True, help_text="Logged points: {step, loss, eval_*...}.")
    log_tail = models.TextField(blank=True)
    failure_reason = models.TextField(blank=True, help_text="Why the run failed, in plain words (shown first).")
    error = models.TextField(blank=True, help_text="The whole error with its traceback.")
    cancel_requested = models.BooleanField(default=False)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    trigger = models.CharField(max_length=20, choices=RunTrigger.choices, default=RunTrigger.MANUAL)
    audit_size = models.PositiveIntegerField(
        default=0, help_text="Online runs: rollout groups humans audit once the run succeeds (0: no audit)."
    )

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(base_model="") | Q(parent_model__isnull=False), name="run_has_a_starting_model"
            ),
            # Offline runs train on a dataset version; online runs on a prompt set, never both.
            models.CheckConstraint(
                condition=(
                    Q(kind__in=["grpo", "rloo"], prompt_set__isnull=False, dataset_version__isnull=True)
                    | (~Q(kind__in=["grpo", "rloo"]) & Q(prompt_set__isnull=True, dataset_version__isnull=False))
                ),
                name="run_trains_on_a_dataset_or_a_prompt_set",
            ),
        ]
        indexes = [models.Index(fields=["status", "heartbeat_at"], name="run_status_heartbeat_idx")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} run #{self.pk} ({self.status})"

    @property
    def starting_model_path(self) -> str:
        return self.parent_model.path if self.parent_model is not None else self.base_model

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def is_online(self) -> bool:
        return self.kind in self.ONLINE_KINDS

    @property
    def makes_policy(self) -> bool:
        """Whether the registered result is a policy (DPO, GRPO, RLOO) rather than a reward model."""
        return self.kind in self.POLICY_KINDS


class RunJudge(models.Model):
    """A judge of an online run with its weight; weight 0 makes it a monitor (logged, never trained on)."""

    run = models.ForeignKey(TrainingRun, on_delete=models.CASCADE, related_name="run_judges")
    judge = models.ForeignKey("Judge", on_delete=models.PROTECT, related_name="run_judges")
    weight = models.FloatField(default=1.0)

    class Meta:
        ordering = ["pk"]
        constraints = [models.UniqueConstraint(fields=["run", "judge"], name="one_weight_per_run_and_judge")]

    def __str__(self) -> str:
        return f"{self.judge} x {self.weight:g} in run #{self.run_id}"


class AutoTrainPolicy(models.Model):
    """Per prompt set: export + train on a schedule once enough new comparisons arrived (off by default)."""

    prompt_set = models.OneToOneField(PromptSet, on_delete=models.CASCADE, related_name="auto_train")
    enabled = models.BooleanField(default=False)
    min_new_rankings = models.PositiveIntegerField(
        default=100, help_text="Rankings since the last version needed to train."
    )
    kind = models.CharField(max_length=8, choices=TrainingRun.Kind.choices, default=TrainingRun.Kind.DPO)
    base_model = models.CharField(max_length=500, blank=True)
    config = models.JSONField(default=dict, blank=True)
    refresh_after_dpo = models.BooleanField(default=True, help_text="Generate new rollouts after a scheduled DPO run.")
    last_dataset_version = models.ForeignKey(
        DatasetVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    last_ranking_id = models.PositiveBigIntegerField(
        default=0, help_text="Rankings up to this id were already considered (the high-water mark)."
    )

    class Meta:
        verbose_name = "auto-train policy"
        verbose_name_plural = "auto-train policies"

    def __str__(self) -> str:
        return f"Auto-train for {self.prompt_set}"


class GenerationRun(models.Model):
    """A policy sampling fresh rollouts for a prompt set; they land in one transaction, or not at all."""

    Trigger = RunTrigger

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    policy = models.ForeignKey(ModelVersion, on_delete=models.PROTECT, related_name="generation_runs")
    prompt_set = models.ForeignKey(PromptSet, on_delete=models.CASCADE, related_name="generation_runs")
    settings = models.JSONField(help_text="n_samples, temperature, top_p, max_new_tokens, seed, batch_size, backend.")
    compare_with = models.CharField(max_length=200, blank=True, help_text="Policy whose rollouts the new tasks mix in.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    queue = models.CharField(max_length=8, default="cpu")
    prompts_done = models.PositiveIntegerField(default=0)
    prompts_total = models.PositiveIntegerField(default=0)
    rollouts_created = models.PositiveIntegerField(default=0)
    duplicates_collapsed = models.PositiveIntegerField(default=0)
    rollouts_rejected = models.PositiveIntegerField(
        default=0, help_text="Samples the quality gate kept out of the queue (empty, broken, repetitive, cut off)."
    )
    rejected_reasons = models.JSONField(default=dict, blank=True, help_text="{reason: count} of the rejected samples.")
    tasks_created = models.PositiveIntegerField(default=0)
    round = models.PositiveIntegerField(default=0)
    backend = models.CharField(max_length=10, blank=True)
    device = models.CharField(max_length=200, blank=True)
    tokens_per_second = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)
    trigger = models.CharField(max_length=20, choices=RunTrigger.choices, default=RunTrigger.MANUAL)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Generation #{self.pk} {self.policy} → {self.prompt_set} ({self.status})"


class RolloutScore(models.Model):
    """A reward model's score of a rollout: the automatic judge beside the human one."""

    rollout = models.ForeignKey("labeling.Rollout", on_delete=models.CASCADE, related_name="+")
    reward_model = models.ForeignKey(ModelVersion, on_delete=models.CASCADE, related_name="scores")
    score = models.FloatField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["rollout", "reward_model"], name="one_score_per_rollout_and_model")
        ]

    def __str__(self) -> str:
        return f"{self.reward_model} scored rollout #{self.rollout_id}: {self.score:.4g}"


class Judge(models.Model):
    """A scorer of rollouts (`training.judges`): a registered reward model or a programmatic checker.

    Its auto-rank rankings are written under `user`, a login-less account of its own (no usable password, inactive),
    with `Ranking.source = "judge"`: they take no overlap slot and never count as human work.
    """

    class Kind(models.TextChoices):
        REWARD_MODEL = "reward_model", "Reward model"
        MATH = "math", "Math (final answer)"
        EXACT = "exact", "Exact answer"
        REGEX = "regex", "Regular expression"
        UNIT_TESTS = "unit_tests", "Unit tests (sandbox)"
        LENGTH = "length", "Length"
        FORMAT = "format", "Format"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices)
    config = models.JSONField(default=dict, blank=True, help_text="Kind-specific settings (validated on save).")
    reward_model = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.PROTECT, related_name="judges"
    )
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="judge"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(kind="reward_model", reward_model__isnull=False) | ~Q(kind="reward_model"),
                name="judge_reward_model_has_a_model",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.get_kind_display()})"


class JudgeScore(models.Model):
    """A judge's verdict on one rollout: a score, or None when the judge has no opinion, and why."""

    judge = models.ForeignKey(Judge, on_delete=models.CASCADE, related_name="scores")
    rollout = models.ForeignKey("labeling.Rollout", on_delete=models.CASCADE, related_name="+")
    score = models.FloatField(null=True, blank=True, help_text="Empty: not applicable (see details).")
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["judge", "rollout"], name="one_judge_score_per_rollout")]

    def __str__(self) -> str:
        return f"{self.judge.name} on rollout #{self.rollout_id}: {self.score}"


class AutoRankJob(models.Model):
    """A judge scoring a prompt set's rollouts and ranking its tasks, carried out by a worker."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"

    judge = models.ForeignKey(Judge, on_delete=models.CASCADE, related_name="auto_rank_jobs")
    prompt_set = models.ForeignKey(PromptSet, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    rollouts_scored = models.PositiveIntegerField(default=0)
    tasks_ranked = models.PositiveIntegerField(default=0)
    tasks_skipped = models.PositiveIntegerField(
        default=0, help_text="Tasks where the judge had no opinion on some rollout."
    )
    error = models.TextField(blank=True)
    celery_task_id = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Auto-rank #{self.pk}: {self.judge.name} on {self.prompt_set} ({self.get_status_display()})"


class BaseModelImport(models.Model):
    """Registering a base model from a GGUF file: checksum, convert to safetensors, register, in a worker.

    The ModelVersion exists only once its converted folder is in place (the folder is renamed into place, then the
    row inserted). The folder is named by the GGUF's sha256, so a second import of the same file reuses it.
    `then_generate` names a prompt set that gets rollouts from the new model once it is registered (`make run`'s
    demo set).
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Converting"
        SUCCEEDED = "succeeded", "Registered"
        FAILED = "failed", "Failed"

    ACTIVE = (Status.QUEUED, Status.RUNNING)

    name = models.CharField(max_length=200)
    gguf_file = models.CharField(max_length=500)
    sha256 = models.CharField(max_length=64, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    stage = models.CharField(max_length=40, blank=True)
    percent = models.FloatField(default=0.0)
    model_version = models.ForeignKey(
        ModelVersion, null=True, blank=True, on_delete=models.SET_NULL, related_name="imports"
    )
    then_generate = models.ForeignKey(PromptSet, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    error = models.TextField(blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"Base model import #{self.pk} {self.name} ({self.get_status_display()})"


class Audit(models.Model):
    """Humans auditing what an online run learned (`training.services.audits`).

    A sample of the run's rollout groups (best, worst, random by reward) sits in a prompt set of its own beside the
    parent policy's rollouts for the same prompts; each audited rollout keeps the run's judge scores (`JudgeScore`),
    so human rankings there give the new policy's win rate against its parent and each judge's agreement with humans.
    """

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Preparing"  # generating the parent's rollouts, scoring them with the judges
        READY = "ready", "In the queue"
        FAILED = "failed", "Failed"

    run = models.ForeignKey(TrainingRun, on_delete=models.PROTECT, related_name="audits")
    prompt_set = models.OneToOneField(PromptSet, on_delete=models.PROTECT, related_name="audit")
    policy = models.CharField(max_length=200, help_text="The audited policy's name, as its rollouts carry it.")
    parent = models.ForeignKey(
        ModelVersion, on_delete=models.PROTECT, related_name="+", help_text="The policy the run started from."
    )
    generation_run = models.ForeignKey(
        GenerationRun,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The parent's rollouts for the audited prompts (empty when they were reused).",
    )
    options = models.JSONField(default=dict, help_text="size, mix, seed, from_step, and the step the log reached.")
    groups = models.JSONField(default=list, help_text="The audited groups: prompt, step, why picked, mean reward.")
    rollouts_audited = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    error = models.TextField(blank=True)
    celery_task_id = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-created_at", "-pk"]

    def __str__(self) -> str:
        return f"Audit #{self.pk} of run #{self.run_id} ({self.get_status_display()})"
