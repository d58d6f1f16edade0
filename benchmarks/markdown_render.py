#!/usr/bin/env python
"""Rendering benchmark: labeling.rendering.render_markdown on typical and adversarial model text.

    python benchmarks/markdown_render.py [--repeat 5]

For each text: its length, the median milliseconds of an uncached render (markdown-it-py + Pygments + nh3) and of
a cached one (the same text again: every annotator of a task is shown the same prompt and rollouts), then the
time to render one ranking page's model text — a 35-message chat and four Markdown responses — cold and warm.
Adversarial texts above MAX_MARKDOWN_CHARS are shown escaped without parsing; the figures show what that bound
buys. It prints figures and asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROSE = (
    "Rayleigh scattering makes **short wavelengths** scatter more. See [the article](https://example.org/sky) "
    "and note that `λ⁻⁴` dominates.\n\n- blue scatters most\n- red least\n\n"
)
CODE = "```python\n" + "def f(x: int) -> int:\n    return x * 2  # doubled\n\n" * 40 + "```\n"
TABLE = "| model | score |\n|:--|--:|\n" + "| gpt | 0.5 |\n" * 50


def texts() -> dict[str, str]:
    return {
        "short answer (200 chars)": PROSE[:200],
        "prose (2,000 chars)": (PROSE * 20)[:2000],
        "prose (10,000 chars)": (PROSE * 100)[:10000],
        "code block (python, 2,100 chars)": CODE,
        "table (50 rows)": TABLE,
        "adversarial `*_` (20,000 chars, at the bound)": "*_" * 10000,
        "adversarial `[` (20,000 chars, at the bound)": "[" * 10000 + "]" * 10000,
        "adversarial `*_` (100,000 chars, over the bound)": "*_" * 50000,
    }


def median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")
    os.environ.setdefault("DJANGO_DEBUG", "1")
    from labeling import rendering

    print(f"load average {os.getloadavg()[0]:.2f} (1 min), {os.cpu_count()} CPUs")
    print(f"{'text':52s} {'chars':>8s} {'uncached ms':>12s} {'cached ms':>10s}")
    for name, text in texts().items():

        def cold(text: str = text) -> None:
            rendering._render_cached.cache_clear()
            rendering.render_markdown(text)

        rendering.render_markdown(text)
        warm = median_ms(lambda text=text: rendering.render_markdown(text), args.repeat)
        print(f"{name:52s} {len(text):8,d} {median_ms(cold, args.repeat):12.2f} {warm:10.3f}")

    chat = [{"role": "system", "content": "Be precise."}] + [
        {"role": "user" if i % 2 else "assistant", "content": f"({i}) " + PROSE * 2} for i in range(34)
    ]
    responses = [PROSE * 5, CODE, TABLE, PROSE[:300]]

    def page() -> None:
        for turn in rendering.conversation(chat).earlier + rendering.conversation(chat).recent:
            rendering.render_markdown(turn.content)
        for response in responses:
            rendering.render_markdown(response)

    def page_cold() -> None:
        rendering._render_cached.cache_clear()
        page()

    print(
        f"ranking page (35-message chat + 4 responses): uncached {median_ms(page_cold, args.repeat):.1f} ms, "
        f"cached {median_ms(page, args.repeat):.2f} ms"
    )


if __name__ == "__main__":
    main()
