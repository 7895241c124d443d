"""The ``minilm`` text encoder: all-MiniLM-L6-v2 run through plain ``transformers``, offline.

`text.py` resolves which encoder runs and builds it; this module loads the model and embeds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from alsoview.data.text import _INSTALL_HINT, MINILM_PACKAGE, _check_positive
from alsoview.errors import UserError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def _resolve_device(device: str) -> str:
    """Map "auto" to cuda when available; reject cuda when it is not (a clear config error)."""
    import torch

    if device not in DEVICE_CHOICES:
        raise UserError(f"unknown device {device!r}; choose one of: {', '.join(DEVICE_CHOICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("the text encoder was asked for device 'cuda' but CUDA is not available")
    return device


class TransformerTextEncoder:
    """A sentence embedding model (all-MiniLM-L6-v2) run through plain ``transformers``.

    Mean pooling over real (non-padding) tokens followed by L2 normalisation reproduces
    sentence-transformers' output for this model without depending on that library. Loading is
    strictly offline (``local_files_only`` plus the HF offline environment variables), so a
    missing file fails loudly instead of trying the network.

    Empty or whitespace-only texts get the zero vector rather than the embedding of "", so
    "no text" is an unambiguous signal identical to the hashing encoder's.
    """

    def __init__(
        self,
        model_path: str,
        max_length: int = 128,
        batch_size: int = 64,
        device: str = "auto",
    ) -> None:
        _check_positive("max_length", max_length)
        _check_positive("batch_size", batch_size)
        self.model_path = str(model_path)
        self.max_length = max_length
        self.batch_size = batch_size
        self.device = _resolve_device(device)
        self._tokenizer, self._model = self._load(Path(model_path).expanduser())

    def _load(self, path: Path) -> tuple[Any, Any]:
        """Load tokenizer and model from ``path`` only, turning any failure into a UserError."""
        if not path.is_dir():
            raise UserError(f"text model path {path} does not exist or is not a directory; {_INSTALL_HINT}")
        # Set before importing transformers/huggingface_hub: they read these at import time.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        from transformers import AutoModel, AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            model = AutoModel.from_pretrained(str(path), local_files_only=True)
        except Exception as exc:  # transformers raises OSError/ValueError/KeyError/... here
            detail = " ".join(str(exc).split())[:300] or type(exc).__name__  # one line for the CLI
            raise UserError(
                f"cannot load a transformers model from {path} (expected config.json, tokenizer "
                f"files and weights, e.g. the {MINILM_PACKAGE} model directory): {detail}"
            ) from exc
        model.eval()
        model.to(self.device)
        return tokenizer, model

    @property
    def dim(self) -> int:
        """Length of each output vector (the model's hidden size, 384 for MiniLM-L6)."""
        return int(self._model.config.hidden_size)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` into a float32 array of shape ``[len(texts), dim]``.

        Texts are processed in length-sorted batches, which cuts padding (and time) a lot on
        catalog text of mixed length; results are put back in the input order.
        """
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        nonempty = [i for i, t in enumerate(texts) if t and t.strip()]
        order = sorted(nonempty, key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            out[rows] = self._encode_batch([texts[i] for i in rows])
        return out

    def _encode_batch(self, batch: list[str]) -> np.ndarray:
        """Tokenize, run the model, mean-pool over the attention mask and L2-normalise."""
        import torch
        import torch.nn.functional as F

        encoded = self._tokenizer(
            batch,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        ).to(self.device)
        with torch.inference_mode():
            hidden = self._model(**encoded).last_hidden_state
            mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            summed = (hidden * mask).sum(dim=1)
            pooled = summed / mask.sum(dim=1).clamp(min=1e-9)
            normed = F.normalize(pooled, p=2, dim=1)
        return normed.float().cpu().numpy()
