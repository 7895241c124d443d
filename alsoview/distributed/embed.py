"""Ray glue: every catalog item's text embedded once, by a Ray Data actor pool of the encoders
`text.py` builds (on a GPU when the encoder is MiniLM and the cluster has one).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pandas as pd

from alsoview.config import Config
from alsoview.distributed.stall import stalled_line, watched
from alsoview.logs import Progress

log = logging.getLogger("alsoview")

# What Ray Data asks for each map actor when not told (a GPU one too): a stalled pool names it
EMBED_ACTOR_CPU = 1.0


class _TextEmbedder:
    """Ray Data actor: loads the encoder once, embeds batches of item texts."""

    def __init__(self, spec: Any, batch_size: int, device: str):
        from alsoview.data.text import build_text_encoder

        self.encoder = build_text_encoder(spec, batch_size=batch_size, device=device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = self.encoder.encode([str(t) for t in batch["text"]])
        return {"item_idx": batch["item_idx"], "text_vector": vectors.astype(np.float32)}


def item_texts(items: pd.DataFrame) -> list[str]:
    """The text embedded per item: title then description (either may be empty)."""
    return [". ".join(p for p in (t, d) if p) for t, d in zip(items["title"], items["description"])]


def embed_items(items: pd.DataFrame, config: Config) -> tuple[np.ndarray, dict[str, Any]]:
    """Embed every catalog item's text once; returns vectors aligned with `items` and the encoder info."""
    import ray.data

    from alsoview.data.text import resolve_text_encoder
    from alsoview.distributed.runtime import cluster_has_gpus

    spec, reason = resolve_text_encoder(
        config.text.encoder, config.text.model_path, config.text.dim, config.text.max_length
    )
    log.info("text encoder: %s", reason)
    use_gpu = spec.name == "minilm" and cluster_has_gpus()
    frame = pd.DataFrame({"item_idx": items["item_idx"].to_numpy(), "text": item_texts(items)})
    start = time.perf_counter()

    def embedded() -> Any:  # building the dataset already waits for tasks (from_pandas's metadata)
        pool = ray.data.from_pandas(frame).map_batches(
            _TextEmbedder,
            fn_constructor_args=(spec, config.text.batch_size, "cuda" if use_gpu else "cpu"),
            compute=ray.data.ActorPoolStrategy(size=config.text.actors),
            batch_size=config.text.batch_size,
            batch_format="numpy",
            num_gpus=1 if use_gpu else 0,  # and Ray Data's default EMBED_ACTOR_CPU
        )
        return pool.iter_batches(batch_format="numpy", batch_size=None)

    order, vectors = [], []
    progress = Progress("embedding item texts", len(frame), "items")
    timeout = config.train.stall_timeout

    def waited() -> str:
        each = f"{EMBED_ACTOR_CPU:g} CPU" + (" + 1 GPU" if use_gpu else "")
        return stalled_line(
            "prepare",
            "no item text embedded",
            timeout,
            f"{progress.done} of {len(frame)} items embedded by a pool of {config.text.actors} Ray Data "
            f"text-embedding actors ({each} each)",
            f"free {each} for at least one of them (text.actors says how many start)",
            use_gpu,
        )

    for batch in watched(embedded, timeout, waited):
        order.append(batch["item_idx"])
        vectors.append(batch["text_vector"])
        progress.advance(len(batch["item_idx"]))
    progress.finish()
    seconds = time.perf_counter() - start
    item_idx = np.concatenate(order) if order else np.array([], np.int64)
    matrix = np.concatenate(vectors) if vectors else np.zeros((0, spec.dim), np.float32)
    position = pd.Series(np.arange(len(item_idx)), index=item_idx).reindex(items["item_idx"].to_numpy()).to_numpy()
    info = {
        **spec.to_dict(),
        "reason": reason,
        "device": "cuda" if use_gpu else "cpu",
        "items": len(frame),
        "seconds": round(seconds, 2),
        "items_per_second": round(len(frame) / seconds, 1) if seconds > 0 else None,
    }
    return matrix[position], info
