"""The client side of the load benchmark: closed-loop annotators doing next → submit over HTTP."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Annotator:
    token: str
    seed: int
    cycles: list[tuple[float, float, float]] = field(default_factory=list)  # (end, next_ms, submit_ms)
    errors: Counter = field(default_factory=Counter)
    received: list[int] = field(default_factory=list)
    submitted_ok: list[int] = field(default_factory=list)
    retried_200: int = 0
    drained: bool = False


def annotate(
    annotator: Annotator,
    base_url: str,
    prompt_set: int | None,
    start: threading.Event,
    stop_at: list[float],
    think: float,
) -> None:
    import httpx

    rng = random.Random(annotator.seed)
    headers = {"Authorization": f"Token {annotator.token}"}
    asked = {} if prompt_set is None else {"prompt_set": prompt_set}  # none: the queue across all sets
    # One client and at most one connection per annotator, like one browser tab; it is reused while
    # the server keeps it alive and re-opened transparently when the server closes it.
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    with httpx.Client(base_url=base_url, headers=headers, timeout=30, limits=limits) as client:
        start.wait()
        while time.perf_counter() < stop_at[0]:
            t0 = time.perf_counter()
            try:
                got = client.post("/api/tasks/next/", json=asked)
            except httpx.HTTPError as exc:
                annotator.errors[f"next {type(exc).__name__}"] += 1
                time.sleep(0.05)
                continue
            t1 = time.perf_counter()
            if got.status_code == 204:
                annotator.drained = True
                return
            if got.status_code != 200:
                annotator.errors[f"next HTTP {got.status_code}"] += 1
                time.sleep(0.05)
                continue
            body = got.json()
            annotator.received.append(body["assignment"])
            ranking = [rollout["id"] for rollout in body["rollouts"]]
            rng.shuffle(ranking)
            if think:
                time.sleep(think)
            t2 = time.perf_counter()
            try:
                sent = client.post("/api/rankings/", json={"assignment": body["assignment"], "ranking": ranking})
            except httpx.HTTPError as exc:
                annotator.errors[f"submit {type(exc).__name__}"] += 1
                continue
            t3 = time.perf_counter()
            if sent.status_code not in (200, 201):
                annotator.errors[f"submit HTTP {sent.status_code}"] += 1
                continue
            if sent.status_code == 200:
                annotator.retried_200 += 1  # a first submit answered as a retry: should never happen
            annotator.submitted_ok.append(body["assignment"])
            annotator.cycles.append((t3, (t1 - t0) * 1000, (t3 - t2) * 1000))
