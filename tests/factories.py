"""factory_boy factories for the labeling models."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from labeling import roles
from labeling.models import Prompt, PromptSet, Rollout
from labeling.services.parsing import PromptRecord, sha256_text
from labeling.services.task_builder import build_tasks


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("pw")


class AnnotatorFactory(UserFactory):
    username = factory.Sequence(lambda n: f"annotator{n}")

    @factory.post_generation
    def in_group(self, create, extracted, **kwargs):
        if create:
            self.groups.add(Group.objects.get_or_create(name=roles.ANNOTATORS)[0])


class ResearcherFactory(UserFactory):
    """As seed_demo makes one: staff (to enter the admin), with the rights of the researchers group."""

    username = factory.Sequence(lambda n: f"researcher{n}")
    is_staff = True

    @factory.post_generation
    def in_group(self, create, extracted, **kwargs):
        if create:
            self.groups.add(Group.objects.get_or_create(name=roles.RESEARCHERS)[0])


class AdminFactory(UserFactory):
    username = factory.Sequence(lambda n: f"admin{n}")
    is_staff = True
    is_superuser = True


class PromptSetFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = PromptSet

    name = factory.Sequence(lambda n: f"set {n}")
    rollouts_per_task = 3
    overlap = 2


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prompt

    prompt_set = factory.SubFactory(PromptSetFactory)
    text = factory.Sequence(lambda n: f"Prompt number {n}?")
    content_hash = factory.LazyAttribute(lambda o: PromptRecord(line=0, text=o.text).content_hash)


class RolloutFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Rollout

    prompt = factory.SubFactory(PromptFactory)
    text = factory.Sequence(lambda n: f"Response number {n}.")
    policy = "policy-a"
    content_hash = factory.LazyAttribute(lambda o: sha256_text(o.text))


def prompt_set_with_tasks(*, n_prompts: int = 5, rollouts_per_task: int = 3, overlap: int = 2, **kwargs) -> PromptSet:
    """A prompt set whose prompts each have exactly one task of `rollouts_per_task` rollouts."""
    prompt_set = PromptSetFactory(rollouts_per_task=rollouts_per_task, overlap=overlap, **kwargs)
    for _ in range(n_prompts):
        prompt = PromptFactory(prompt_set=prompt_set)
        RolloutFactory.create_batch(rollouts_per_task, prompt=prompt)
    build_tasks(prompt_set)
    return prompt_set
