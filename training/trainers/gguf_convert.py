"""A GGUF file → a plain safetensors checkpoint folder that every trainer and generator here loads. No Django.

transformers reads GGUF (with the `gguf` package) but dequantises into a model it refuses to save ("quantized with
gguf, not serializable"). The weights it holds are ordinary fp32 tensors, though, so we build the same architecture
from the config without the quantization marker, copy the state dict across (every key matches) and save that.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Read in 4 MiB pieces: the GGUF is ~100 MB and must not be held in memory just to be hashed.
_HASH_CHUNK = 4 * 1024 * 1024

Progress = Callable[[str, float], None]


def sha256_of_file(path: Path, on_progress: Progress | None = None) -> str:
    """The file's sha256 (hex); reports the share hashed so far as the "checksum" stage."""
    digest = hashlib.sha256()
    size = max(1, path.stat().st_size)
    done = 0
    with path.open("rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
            done += len(chunk)
            if on_progress:
                on_progress("checksum", done / size)
    return digest.hexdigest()


def convert_gguf(gguf_file: Path, output_dir: Path, *, on_progress: Progress | None = None) -> Path:
    """Write `gguf_file` as a safetensors model + tokenizer into `output_dir` (which must not exist yet).

    The folder is written beside its final place and renamed into it, so a reader never sees half a model and a
    crash leaves only a `.partial` folder that the next attempt removes.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def report(stage: str, share: float) -> None:
        if on_progress:
            on_progress(stage, share)

    gguf_file = Path(gguf_file)
    partial = output_dir.with_name(output_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    report("tokenizer", 0.0)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    report("dequantise", 0.1)
    quantised = AutoModelForCausalLM.from_pretrained(str(gguf_file.parent), gguf_file=gguf_file.name)
    config = quantised.config
    # The marker that makes save_pretrained refuse; the tensors themselves are already dequantised fp32.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    report("rebuild", 0.6)
    # Built on the meta device, then handed the loaded tensors: initialising 135M random weights first only to
    # overwrite them took ~30 s on a busy 2-core box.
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantised.state_dict(), assign=True, strict=True)
    plain.tie_weights()
    del quantised
    plain.generation_config = _plain_generation_config(plain.generation_config, tokenizer)
    report("save", 0.8)
    partial.mkdir(parents=True)
    plain.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    os.replace(partial, output_dir)
    report("done", 1.0)
    return output_dir


def _plain_generation_config(generation_config: Any, tokenizer: Any) -> Any:
    """The ids generation stops and pads on, taken from the tokenizer the GGUF carries."""
    if tokenizer.eos_token_id is not None:
        generation_config.eos_token_id = tokenizer.eos_token_id
    if tokenizer.bos_token_id is not None:
        generation_config.bos_token_id = tokenizer.bos_token_id
    return generation_config
