"""Input files of ``embed`` and ``warm``: the non-blank lines of a file (or stdin) decoded
with ``--encoding`` and ``--errors``, and catalogs (one text per line, or JSONL with id,
text and metadata)."""

from __future__ import annotations

import codecs
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, TypeVar

import click

from ..errors import TierCacheError

_F = TypeVar("_F", bound=Callable[..., Any])


ERRORS = ("strict", "skip", "replace")
"""``--errors``: what a line that is not valid in ``--encoding`` does."""


_MARK = "\udcff"  # stands for undecodable bytes; never produced by a successful decode


def _mark_undecodable(exc: UnicodeError) -> tuple[str, int]:
    if not isinstance(exc, UnicodeDecodeError):
        raise exc
    return _MARK, exc.end


codecs.register_error("tiercache.mark", _mark_undecodable)


def _line_based(encoding: str) -> bool:
    """Whether ``encoding`` writes a newline as the byte 0x0A and never uses that byte
    inside another character (UTF-8, Latin-1, cp1252, ...; not UTF-16/32): such files are
    read and decoded line by line."""
    try:
        return b"\n".decode(encoding) == "\n" and "a\n".encode(encoding).endswith(b"a\n")
    except (UnicodeError, LookupError):
        return False


def _chomp(line: str) -> str:
    return line.removesuffix("\n").removesuffix("\r")


class _Reader:
    """The non-blank lines of an input file (``-``: stdin) decoded with ``--encoding``.

    A line that is not valid in the encoding raises ``TierCacheError`` naming the file,
    the line and the byte offset in the file (``errors="strict"``), is dropped
    (``"skip"``) or decoded with U+FFFD in place of the bad bytes (``"replace"``); the
    numbers of the lines dropped or repaired are kept in ``bad``."""

    def __init__(self, encoding: str = "utf-8", errors: str = "strict") -> None:
        self.encoding = encoding
        self.errors = errors
        self.bad: list[int] = []

    def lines(self, path: str | Path) -> Iterator[tuple[int, str]]:
        """``(line number, text)`` of every line that is not blank (the newline removed)."""
        self.bad = []
        name = "<stdin>" if str(path) == "-" else str(path)
        opened: Any = (
            contextlib.nullcontext(sys.stdin.buffer) if str(path) == "-" else open(path, "rb")
        )
        with opened as fh:
            split = self._by_line if _line_based(self.encoding) else self._whole
            for n, text in split(fh, name):
                if text.strip():
                    yield n, text

    def _by_line(self, fh: IO[bytes], name: str) -> Iterator[tuple[int, str]]:
        offset = 0
        for n, raw in enumerate(fh, 1):
            try:
                text: str | None = raw.decode(self.encoding)
            except UnicodeDecodeError as exc:
                self._refuse(name, n, offset, exc)
                self.bad.append(n)
                text = None if self.errors == "skip" else raw.decode(self.encoding, "replace")
            offset += len(raw)
            if text is not None:
                yield n, _chomp(text)

    def _whole(self, fh: IO[bytes], name: str) -> Iterator[tuple[int, str]]:
        data = fh.read()  # e.g. UTF-16: a newline byte may be half of another character
        try:
            text = data.decode(self.encoding)
        except UnicodeDecodeError as exc:
            n = data[: exc.start].decode(self.encoding, "replace").count("\n") + 1
            self._refuse(name, n, 0, exc)
            text = data.decode(self.encoding, "tiercache.mark")
        for n, line in enumerate(text.split("\n"), 1):
            if _MARK in line:
                self.bad.append(n)
                if self.errors == "skip":
                    continue
                line = line.replace(_MARK, "\ufffd")
            yield n, line.removesuffix("\r")

    def _refuse(self, name: str, n: int, offset: int, exc: UnicodeDecodeError) -> None:
        """Raise for a bad line, unless --errors says what to do with it."""
        if self.errors != "strict":
            return
        bad = bytes(exc.object[exc.start : exc.end]).hex(" ")
        raise TierCacheError(
            f"{name}:{n}: byte offset {offset + exc.start}: not valid {self.encoding} "
            f"({exc.reason}: {bad}); give the file's encoding with --encoding, or "
            "--errors skip (drop such lines) or --errors replace (U+FFFD for the bad bytes)"
        )

    def note(self, name: str | Path) -> None:
        """Say on stderr how many lines were dropped or repaired (nothing when none)."""
        if self.bad:
            n = len(self.bad)
            done = "skipped" if self.errors == "skip" else "read with U+FFFD for the bad bytes"
            click.echo(
                f"note: {name}: {n} line{'s' if n != 1 else ''} not valid {self.encoding}, "
                f"{done} (first: line {self.bad[0]})",
                err=True,
            )


def _check_encoding(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        codecs.lookup(value)
    except LookupError:
        raise click.BadParameter(f"unknown encoding {value!r}") from None
    return value


def _input_options(f: _F) -> _F:
    """``--encoding`` and ``--errors`` of the commands that read text files."""
    f = click.option(
        "--errors",
        "errors",
        type=click.Choice(ERRORS),
        default="strict",
        show_default=True,
        help="A line not valid in --encoding: strict stops with file, line and byte "
        "offset (exit 2); skip drops the line; replace puts U+FFFD for the bad bytes.",
    )(f)
    return click.option(
        "--encoding",
        default="utf-8",
        show_default=True,
        callback=_check_encoding,
        help="Encoding of the input file(s) (any Python codec: utf-8, latin-1, utf-16...).",
    )(f)


def _read_lines(path: str, reader: _Reader) -> list[str]:
    texts = [text for _, text in reader.lines(path)]
    reader.note("<stdin>" if path == "-" else path)
    return texts


def _catalog_items(path: Path, fmt: str, reader: _Reader) -> Any:
    """Yield ``(line_number, text, metadata)`` for every non-empty line of a catalog.

    ``text``: one text per line. ``jsonl``: objects with ``text`` (required), and optional
    ``id`` and ``metadata`` (the id is stored in the metadata as ``"id"``). ``auto``: jsonl
    for ``.jsonl``/``.ndjson`` files, text otherwise. Lines are decoded by ``reader``."""
    if fmt == "auto":
        fmt = "jsonl" if path.suffix.lower() in (".jsonl", ".ndjson") else "text"
    for n, line in reader.lines(path):
        if fmt == "text":
            yield n, line, None
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TierCacheError(f"{path}:{n}: not JSON: {exc.msg}") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise TierCacheError(f"{path}:{n}: expected an object with a string 'text'")
        meta = obj.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise TierCacheError(f"{path}:{n}: 'metadata' must be an object")
        if "id" in obj:
            if isinstance(obj["id"], bool) or not isinstance(obj["id"], (str, int)):
                raise TierCacheError(f"{path}:{n}: 'id' must be a string or an integer")
            meta = {**(meta or {}), "id": obj["id"]}
        yield n, obj["text"], meta
