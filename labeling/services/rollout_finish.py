"""How a generated rollout ended, and what that allows: read from `Rollout.generation["finish_reason"]`.

Generation records "stop" when a sample emitted a stop token (it ended) and "length" when it was cut off at
`max_new_tokens`. A cut-off answer is not an answer that ended: TRL appends EOS to every standard completion, so a
cut-off `chosen` would teach the model to stop mid-sentence. By default such a rollout never becomes the chosen
side of an exported pair (it may still be the rejected one: "worse than a complete answer" is true of it).

Imported rollouts and rollouts generated before finish reasons were recorded have none: unknown, never held against
them. Pure functions (and one query expression for filtering in the database); no other app's code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.db.models import Q

FINISH_REASON = "finish_reason"
STOP = "stop"
LENGTH = "length"


def finish_reason(generation: Mapping[str, Any] | None) -> str | None:
    """ "stop", "length", or None when the rollout's generation record does not say."""
    reason = (generation or {}).get(FINISH_REASON)
    return reason if isinstance(reason, str) else None


def is_cut_off(generation: Mapping[str, Any] | None) -> bool:
    """Whether the rollout was cut off at max_new_tokens."""
    return finish_reason(generation) == LENGTH


def may_be_chosen(generation: Mapping[str, Any] | None, *, allow_cut_off: bool = False) -> bool:
    """Whether a rollout with this generation record may be the `chosen` answer of an exported pair.

    The export calls this per pair (or filters with `cut_off_q`); `allow_cut_off=True` is the explicit opt-out.
    """
    return allow_cut_off or not is_cut_off(generation)


def cut_off_q(prefix: str = "") -> Q:
    """A filter for cut-off rollouts; `prefix` reaches the rollout through a relation, e.g. "rollouts__"."""
    return Q(**{f"{prefix}generation__{FINISH_REASON}": LENGTH})
