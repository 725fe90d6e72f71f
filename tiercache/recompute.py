"""The cold tier: recompute what no tier holds with the encoder, under single-flight.

:class:`Recompute` encodes the distinct missing keys of a lookup in batches of
``encoder.batch_size`` (longest texts first, as sentence-transformers orders its own
batches), once per key across threads (:mod:`tiercache.singleflight`), and hands each
chunk to the write path to be stored while the next one is encoded. When the encoder fails
on a batch, its texts are encoded one by one: the ones that encode are stored, and
:class:`~tiercache.errors.EncoderError` names the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future
from time import perf_counter as _perf
from typing import NoReturn, cast

import numpy as np

from .context import CacheContext
from .encoders import check_output
from .errors import EncoderError, TierCacheError
from .keys import Content
from .singleflight import SingleFlight
from .writepath import WritePath


def _raise_encoder_error(exc: Exception) -> NoReturn:
    """Raise an encoder's exception as the caller sees it: a TierCacheError as it is (e.g.
    CallableEncoder's, check_output's), anything else wrapped in EncoderError."""
    if isinstance(exc, TierCacheError):
        raise exc
    raise EncoderError(f"encoder failed: {exc!r}") from exc


def _partial_failure(
    failed: list[tuple[bytes, BaseException]], total: int, where: Mapping[bytes, int] | None
) -> EncoderError:
    """The error of a batch whose encoder failed on some texts only (the others stored)."""
    names = []
    for k, exc in failed[:5]:
        at = f"item {where[k]}" if where is not None and k in where else "a text"
        names.append(f"{at}: {exc!r}")
    more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
    return EncoderError(
        f"the encoder failed on {len(failed)} of {total} texts ({'; '.join(names)}{more}); "
        f"the other {total - len(failed)} were encoded and stored"
    )


class Recompute:
    """Encoding of missing keys for the read path (``ReadPath.recompute``) and
    ``precompute``; see the module docstring."""

    def __init__(self, ctx: CacheContext, write: WritePath) -> None:
        self._ctx = ctx
        self._w = write
        self._lock = ctx.lock
        self._s_enc = ctx.s_enc
        self.dim = ctx.dim
        self._flights = SingleFlight()

    def compute(
        self,
        keys: list[bytes],
        contents: list[Content],
        *,
        store: bool = True,
        where: Mapping[bytes, int] | None = None,
        failures: list[EncoderError] | None = None,
    ) -> dict[bytes, np.ndarray]:
        """Encode the distinct missing keys once, with single-flight across threads.

        ``store=False``: the caller stores the results itself (``precompute``). When the
        encoder fails on a batch, its texts are encoded one by one: the ones that encode are
        stored (and handed to their waiters), and :class:`EncoderError` names the others
        by their index in the caller's input (``where``: key -> index); with ``failures``
        (a list), that error is appended there and the encoded ones are returned."""
        flights = self._flights
        epoch = self._w.inval.applied  # an explicit write logged while encoding wins
        with self._lock:
            owned, waits = flights.claim_locked(keys, contents)
            self._s_enc.waited += len(waits)
        results: dict[bytes, np.ndarray] = {}
        if owned:
            batch_size = self._ctx.batch_size
            if len(owned) > batch_size and all(type(c) is str for _, c, _ in owned):
                # longest first, as SentenceTransformer.encode orders its own batches: texts
                # of similar length share a batch, so less padding is encoded
                owned.sort(key=lambda t: -len(cast(str, t[1])))
            storing: Future[None] | None = None  # the previous chunk's store, in flight
            failed: list[tuple[bytes, BaseException]] = []
            try:
                for start in range(0, len(owned), batch_size):
                    chunk = owned[start : start + batch_size]
                    matrix, refused = self._encode([c for _, c, _ in chunk])
                    if refused:  # the rest of the chunk encoded alone: keep it
                        bad = {i for i, _ in refused}
                        failed += [(chunk[i][0], e) for i, e in refused]
                        keep = [i for i in range(len(chunk)) if i not in bad]
                        chunk, matrix = [chunk[i] for i in keep], matrix[keep]
                    if store:
                        # one store at a time, in order; while a chunk is written (LMDB
                        # commits and fsyncs release the GIL) the next one is encoded
                        if storing is not None:
                            done, storing = storing, None
                            done.result()
                        if start + batch_size < len(owned):
                            storing = self._w.store_pool().submit(
                                self._w.store_computed, chunk, matrix, epoch
                            )
                        else:
                            self._w.store_computed(chunk, matrix, epoch)
                    for i, (k, _, _) in enumerate(chunk):
                        results[k] = matrix[i]
                partial = _partial_failure(failed, len(owned), where) if failed else None
                if partial is not None and failures is None:
                    raise partial
            except BaseException as exc:
                if storing is not None:  # never leave a write running behind an error
                    storing.exception()
                err = exc if isinstance(exc, TierCacheError) else EncoderError(repr(exc))
                with self._lock:
                    self._s_enc.errors += 1
                    flights.resolve_locked(owned, results, err)
                if err is exc or not isinstance(exc, Exception):
                    raise  # the encoder's own cause (CallableEncoder's); Ctrl-C as it is
                raise err from exc
            with self._lock:  # a failed text's waiters get the error, the others their vector
                flights.resolve_locked(owned, results, partial)
            if partial is not None and failures is not None:
                failures.append(partial)
        for k, fut in waits:
            results[k] = fut.result()
        return results

    def _encode(self, batch: list[Content]) -> tuple[np.ndarray, list[tuple[int, Exception]]]:
        """The encoder's vectors of ``batch`` (checked) and the items it failed on. A batch
        the encoder refuses is encoded again one text at a time, so one bad text does not
        cost the others; a text alone that fails is listed (its row is garbage). A
        failure of every text (or of a batch of one) raises :class:`EncoderError`."""
        try:
            return self._encode_call(batch), []
        except Exception as exc:
            if len(batch) == 1:
                _raise_encoder_error(exc)
            first = exc
        matrix = np.zeros((len(batch), self.dim), dtype=np.float32)
        failures: list[tuple[int, Exception]] = []
        for i, c in enumerate(batch):
            try:
                matrix[i] = self._encode_call([c])[0]
            except Exception as exc:
                failures.append((i, exc))
        if len(failures) == len(batch):
            _raise_encoder_error(first)
        return matrix, failures

    def _encode_call(self, batch: list[Content]) -> np.ndarray:
        """One encoder call, its output checked and counted (a model load inside it, which
        an encoder reports as ``load_seconds``, is counted apart from the latency)."""
        encoder = self._ctx.encoder
        loaded = getattr(encoder, "load_seconds", 0.0)
        t0 = _perf()
        matrix = check_output(encoder.encode(batch), len(batch), self.dim)
        dt = _perf() - t0
        load = getattr(encoder, "load_seconds", 0.0) - loaded
        with self._lock:
            s = self._s_enc
            if load > 0:
                s.load_seconds += load
                dt = max(0.0, dt - load)
            s.calls += 1
            s.texts += len(batch)
            s.seconds += dt
            s.max_batch = max(s.max_batch, len(batch))
            s.latency.add(dt)
        return matrix


__all__ = ["Recompute"]
