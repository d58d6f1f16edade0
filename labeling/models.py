"""Prompt sets, rollouts and the ranking queue.

The queue's guarantees live in the schema: a task's `active_count` can never exceed its `overlap`
(a CHECK constraint, moved only by conditional UPDATEs), an annotator holds a task at most once
(UNIQUE task+annotator) and one lease at a time, and a ranking belongs to exactly one assignment
(so a retried submit cannot create a second one).
"""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q

MIN_ROLLOUTS_PER_TASK = 2
MAX_ROLLOUTS_PER_TASK = 9
# An annotator's optional note on a ranking: a few sentences, not an essay (a varchar, so the database holds it).
RATIONALE_MAX_CHARS = 2_000
# Above half, annotators would answer more known answers than new ones: the set would teach little per hour paid.
MAX_GOLD_RATE = 0.5


class PromptSet(models.Model):
    class Ordering(models.TextChoices):
        INSERTION = "insertion", "Insertion order"
        UNCERTAINTY = "uncertainty", "Most uncertain first"

    name = models.CharField(max_length=200, unique=True)
    description = models.TextField(blank=True)
    rollouts_per_task = models.PositiveSmallIntegerField(
        default=4,
        validators=[MinValueValidator(MIN_ROLLOUTS_PER_TASK), MaxValueValidator(MAX_ROLLOUTS_PER_TASK)],
        help_text="How many rollouts an annotator ranks at once (2–9).",
    )
    overlap = models.PositiveSmallIntegerField(
        default=1,
        validators=[MinValueValidator(1), MaxValueValidator(50)],
        help_text="How many different annotators rank each task.",
    )
    is_paused = models.BooleanField(default=False, help_text="Paused sets hand out no new tasks.")
    show_references = models.BooleanField(
        default=False,
        help_text="Show prompts' reference answers and tests to annotators (by default only judges see them).",
    )
    guidelines = models.TextField(
        blank=True,
        help_text="How to rank this set (Markdown): shown to annotators above its tasks.",
    )
    # Gold (known-answer) tasks, labeling.services.gold: how often one is mixed in, and when an annotator is paused.
    gold_rate = models.FloatField(
        default=0.0,
        validators=[MinValueValidator(0.0), MaxValueValidator(MAX_GOLD_RATE)],
        help_text="Share of each annotator's tasks drawn from the set's gold tasks (0–0.5).",
    )
    gold_threshold = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="Pause an annotator whose gold accuracy in this set falls below this (0–1; empty: never).",
    )
    gold_min_answers = models.PositiveSmallIntegerField(
        default=5,
        validators=[MinValueValidator(1)],
        help_text="Gold answers an annotator gives before the threshold applies to them.",
    )
    # Active learning (labeling.services.priorities): which open task the queue hands out first. The reward models
    # are named by string, so this app imports nothing of training (tests/test_import_graph.py).
    ordering = models.CharField(
        max_length=12,
        choices=Ordering.choices,
        default=Ordering.INSERTION,
        help_text="Insertion: tasks in the order they were built. Most uncertain first: the tasks whose rollouts "
        "the reward models below tell apart least (re-scored as rankings arrive).",
    )
    uncertainty_models = models.ManyToManyField(
        "training.ModelVersion",
        blank=True,
        related_name="+",
        limit_choices_to={"kind": "reward"},
        help_text="Registered reward models that score the open tasks: one gives its smallest score margin, "
        "several their disagreement.",
    )
    priority_refresh_rankings = models.PositiveIntegerField(
        default=20,
        validators=[MinValueValidator(1)],
        help_text="Re-score the open tasks once this many new rankings arrived (the beat schedule checks).",
    )
    priorities_ranking_mark = models.PositiveBigIntegerField(
        default=0, editable=False, help_text="The newest ranking id the last re-scoring had seen."
    )
    priorities_refreshed_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Disagreement (labeling.services.disagreement): a task whose rankings disagree gets one more annotator, up to
    # max_overlap; still disagreeing at that cap, it waits for an admin's adjudication.
    disagreement_threshold = models.FloatField(
        null=True,
        blank=True,
        validators=[MinValueValidator(0.0), MaxValueValidator(1.0)],
        help_text="A completed task whose rankings' pairwise agreement is below this (0–1) gets one more annotator, "
        "or, at the max overlap, goes to adjudication; empty: off.",
    )
    max_overlap = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(50)],
        help_text="Most annotators a disagreeing task may get (at least the overlap); "
        "empty: the overlap, so a disagreeing task goes straight to adjudication.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(rollouts_per_task__gte=MIN_ROLLOUTS_PER_TASK)
                & Q(rollouts_per_task__lte=MAX_ROLLOUTS_PER_TASK),
                name="promptset_rollouts_per_task_2_to_9",
            ),
            models.CheckConstraint(condition=Q(overlap__gte=1), name="promptset_overlap_positive"),
            models.CheckConstraint(
                condition=Q(gold_rate__gte=0) & Q(gold_rate__lte=MAX_GOLD_RATE), name="promptset_gold_rate_0_to_half"
            ),
            models.CheckConstraint(
                condition=Q(max_overlap__isnull=True) | Q(max_overlap__gte=F("overlap")),
                name="promptset_max_overlap_at_least_overlap",
                violation_error_message="The max overlap must be at least the overlap (or empty).",
            ),
            models.CheckConstraint(
                condition=Q(disagreement_threshold__isnull=True)
                | (Q(disagreement_threshold__gte=0) & Q(disagreement_threshold__lte=1)),
                name="promptset_disagreement_threshold_0_to_1",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class Prompt(models.Model):
    """One prompt: plain text, or a chat (`messages`, a list of {role, content})."""

    prompt_set = models.ForeignKey(PromptSet, on_delete=models.CASCADE, related_name="prompts")
    text = models.TextField(blank=True, help_text="Plain-text prompt (empty for chat prompts).")
    messages = models.JSONField(null=True, blank=True, help_text="Chat prompt: [{role, content}, ...].")
    content_hash = models.CharField(max_length=64, help_text="sha256 of the prompt's canonical JSON.")
    external_id = models.CharField(max_length=200, blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    # References for judges (imported as "answer" / "tests"); empty when the prompt has none.
    reference_answer = models.TextField(blank=True, help_text="Expected final answer (exact, regex, math judges).")
    reference_tests = models.TextField(blank=True, help_text="Python test script (unit-test judge).")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["prompt_set", "content_hash"], name="prompt_unique_in_set"),
        ]

    def __str__(self) -> str:
        return self.display_text[:80]

    @property
    def is_chat(self) -> bool:
        return self.messages is not None

    @property
    def display_text(self) -> str:
        return prompt_as_text(self.text, self.messages)


def prompt_as_text(text: str, messages: list[dict] | None) -> str:
    """A prompt as one string: the text, or the chat as "role: content" paragraphs."""
    if messages is None:
        return text
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


class Rollout(models.Model):
    """A model response to a prompt. Its text is untrusted: templates render it escaped."""

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="rollouts")
    text = models.TextField()
    policy = models.CharField(max_length=200, blank=True, help_text="Policy (model version) that wrote it.")
    content_hash = models.CharField(max_length=64, help_text="sha256 of the response text.")
    generation = models.JSONField(default=dict, blank=True, help_text="Sampling settings, seed, etc.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            # The same text from the same policy is one rollout: re-imports and duplicate samples collapse.
            models.UniqueConstraint(fields=["prompt", "policy", "content_hash"], name="rollout_unique_per_policy"),
        ]

    def __str__(self) -> str:
        return f"{self.policy or 'rollout'} #{self.pk}"


class RankingTask(models.Model):
    class Status(models.TextChoices):
        OPEN = "open", "Open"
        DONE = "done", "Done"

    prompt_set = models.ForeignKey(PromptSet, on_delete=models.CASCADE, related_name="tasks")
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="tasks")
    rollouts: models.ManyToManyField[Rollout, TaskRollout] = models.ManyToManyField(
        Rollout, through="TaskRollout", related_name="tasks"
    )
    rollout_key = models.CharField(max_length=64, help_text="Hash of the sorted rollout ids (dedupes tasks).")
    overlap = models.PositiveSmallIntegerField(help_text="Copied from the set when the task was built.")
    active_count = models.PositiveSmallIntegerField(default=0, help_text="Live leases + submitted rankings.")
    completed_count = models.PositiveSmallIntegerField(default=0, help_text="Submitted rankings.")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    round = models.PositiveIntegerField(default=0, help_text="Refresh round that built the task.")
    uncertainty = models.FloatField(
        null=True,
        blank=True,
        help_text="How little the set's reward models tell the rollouts apart (0–1; higher is leased first); "
        "empty: not scored.",
    )
    gold = models.JSONField(
        null=True,
        blank=True,
        help_text='Known answer: {"best": rollout id} or {"order": [[ids], ...]} best → worst; empty: none.',
    )
    # Written by labeling.services.disagreement in the submit that completes the task (sets with a threshold only).
    agreement = models.FloatField(
        null=True, blank=True, help_text="Pairwise agreement of its rankings when it last completed (0–1)."
    )
    needs_adjudication = models.BooleanField(
        default=False, help_text="Its rankings still disagree at the set's max overlap: an admin records the order."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["prompt", "rollout_key"], name="task_unique_rollout_group"),
            models.CheckConstraint(condition=Q(active_count__lte=F("overlap")), name="task_never_beyond_overlap"),
            models.CheckConstraint(
                condition=Q(completed_count__lte=F("active_count")), name="task_completed_within_active"
            ),
            models.CheckConstraint(
                condition=Q(uncertainty__isnull=True) | (Q(uncertainty__gte=0) & Q(uncertainty__lte=1)),
                name="task_uncertainty_0_to_1",
            ),
        ]
        indexes = [
            # The queue's hot path: open tasks of a set with free slots, most-started first.
            # Matches the ORDER BY (-active_count, id) so Postgres walks it and stops at the first free task.
            models.Index(fields=["prompt_set", "status", "-active_count", "id"], name="task_queue_idx"),
            # The queue's gold offer (labeling.services.gold): the few gold tasks, without walking the ordinary ones.
            models.Index(
                fields=["prompt_set", "status", "-active_count", "id"],
                condition=Q(gold__isnull=False),
                name="task_gold_queue_idx",
            ),
            # The queue's uncertainty offer (labeling.services.priorities): scored tasks, most-started then most
            # uncertain first. Partial, so tasks never scored (every insertion-order set's) cost it no writes.
            models.Index(
                fields=["prompt_set", "status", "-active_count", "-uncertainty", "id"],
                condition=Q(uncertainty__isnull=False),
                name="task_priority_queue_idx",
            ),
            # The adjudication list: the few flagged tasks of a set, without walking the others.
            models.Index(
                fields=["prompt_set", "id"], condition=Q(needs_adjudication=True), name="task_adjudication_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"Task #{self.pk} ({self.completed_count}/{self.overlap})"


class TaskRollout(models.Model):
    task = models.ForeignKey(RankingTask, on_delete=models.CASCADE, related_name="task_rollouts")
    rollout = models.ForeignKey(Rollout, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["task", "rollout"], name="task_rollout_unique")]

    def __str__(self) -> str:
        return f"Task #{self.task_id} ← rollout #{self.rollout_id}"


class Assignment(models.Model):
    """A task leased to one annotator. Leases expire; the slot then returns to the pool."""

    class Status(models.TextChoices):
        LEASED = "leased", "Leased"
        SUBMITTED = "submitted", "Submitted"
        EXPIRED = "expired", "Expired"
        SKIPPED = "skipped", "Skipped"

    task = models.ForeignKey(RankingTask, on_delete=models.CASCADE, related_name="assignments")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.LEASED)
    display_order = models.JSONField(help_text="Rollout ids in the (random) order this annotator saw them.")
    leased_at = models.DateTimeField()
    leased_until = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["task", "annotator"], name="assignment_once_per_annotator"),
            models.UniqueConstraint(
                fields=["annotator"], condition=Q(status="leased"), name="assignment_one_live_lease"
            ),
        ]
        indexes = [
            models.Index(fields=["status", "leased_until"], name="assignment_lease_idx"),
            # The lease statement's "not theirs already": an annotator's task ids read from the index alone, where
            # the annotator_id index fetched a heap page per assignment (most of the statement at 150 of them).
            models.Index(fields=["annotator", "status", "task"], name="assignment_history_idx"),
        ]

    def __str__(self) -> str:
        return f"Assignment #{self.pk} ({self.status})"


class Ranking(models.Model):
    """What the annotator said, stored as given: pairs are derived at export, not here.

    A ranking is a human's (`source="human"`, through an assignment of the queue) or a judge's (`source="judge"`,
    written by auto-rank under the judge's own login-less user, with no assignment): judge rankings take no overlap
    slot and no lease, so the queue never sees them, and human statistics filter them out by `source`.
    """

    class FlagReason(models.TextChoices):
        HARMFUL = "harmful", "Harmful"
        BROKEN = "broken", "Broken"

    class Source(models.TextChoices):
        HUMAN = "human", "Human"
        JUDGE = "judge", "Judge (auto-rank)"

    assignment = models.OneToOneField(
        Assignment, null=True, blank=True, on_delete=models.CASCADE, related_name="ranking"
    )
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.HUMAN, db_index=True)
    task = models.ForeignKey(RankingTask, on_delete=models.CASCADE, related_name="rankings")
    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="rankings")
    tiers = models.JSONField(help_text="Rollout ids best → worst; ids in one inner list are tied.")
    all_bad = models.BooleanField(default=False)
    flags = models.JSONField(default=dict, blank=True, help_text="{rollout_id: 'harmful'|'broken'}")
    display_order = models.JSONField(help_text="Order the rollouts were shown in.")
    time_spent_ms = models.PositiveIntegerField()
    rationale = models.CharField(
        max_length=RATIONALE_MAX_CHARS, blank=True, default="", help_text="The annotator's optional reason, as typed."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["task", "annotator"], name="ranking_once_per_annotator"),
            # Human rankings come through the queue (an assignment); judge rankings never do.
            models.CheckConstraint(
                condition=Q(source="human", assignment__isnull=False) | Q(source="judge", assignment__isnull=True),
                name="ranking_assignment_iff_human",
            ),
        ]
        indexes = [models.Index(fields=["created_at"], name="ranking_created_idx")]
        # The annotator's right (labeling.roles.ANNOTATE): distinct from add_ranking, which is the admin's.
        permissions = [("annotate", "Can take, rank and skip tasks")]

    def __str__(self) -> str:
        return f"Ranking #{self.pk}"

    @property
    def has_ties(self) -> bool:
        return any(len(tier) > 1 for tier in self.tiers)


class Invite(models.Model):
    """A one-time link by which a new account sets its own password (labeling.services.people).

    Only the SHA-256 of the link's secret is stored: the link itself is shown once, to the admin who made it, so
    the database alone cannot produce a working link. `used_at` is set by one conditional UPDATE (still NULL, not
    expired), so a link works once even when it is opened twice at the same moment.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="invites")
    token_hash = models.CharField(max_length=64, unique=True)
    role = models.CharField(max_length=16)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(condition=Q(expires_at__gt=F("created_at")), name="invite_expires_after_creation")
        ]

    def __str__(self) -> str:
        return f"Invite #{self.pk}"


class Adjudication(models.Model):
    """An admin's final order for a task, recorded after looking at every ranking of it side by side.

    One per task (recording again replaces it); the task then counts as resolved (labeling.services.disagreement).
    """

    task = models.OneToOneField(RankingTask, on_delete=models.CASCADE, related_name="adjudication")
    tiers = models.JSONField(help_text="Rollout ids best → worst; ids in one inner list are tied.")
    by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    at = models.DateTimeField()
    note = models.TextField(blank=True, help_text="Why this order (optional).")

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"Adjudication of task #{self.task_id}"


class PromptSetProgress(models.Model):
    """Changes to a prompt set's task and ranking counts; a set's progress is the sum of its rows (PostgreSQL).

    Written only by database triggers (migration 0010_scale_indexes) on every statement that inserts, updates or
    deletes tasks or human rankings, in the same transaction, so the sums are exact whichever code path wrote; the
    admin's list then reads a few rows per set instead of counting a million tasks. Rows are only ever appended
    (no hot row for concurrent leases to queue on or deadlock over); labeling.services.progress folds them into
    one row per set. No foreign key: a deleted set's rows sum to zero and are folded away.
    """

    prompt_set_id = models.BigIntegerField(db_index=True)
    tasks = models.IntegerField(default=0)
    done = models.IntegerField(default=0)
    in_progress = models.IntegerField(default=0, help_text="Open tasks with some slot taken.")
    full = models.IntegerField(default=0, help_text="Open tasks with every slot taken.")
    rankings = models.IntegerField(default=0, help_text="Human rankings (judge rankings are not progress).")

    def __str__(self) -> str:
        return f"Progress change of set #{self.prompt_set_id}"
