"""Matching hashes and files against the local store.

``lookup`` reads its hashes as ``publish`` reads a hash list, with the same
line reader: ``alg:hex [label]`` or bare hex in any case, and ``md5sum``/
``sha256sum`` output.  A hash that names no algorithm matches every
algorithm of its length.  All are answered in one query per set, however
many there are.  ``scan`` reads every file once, computes only the
algorithms the held sets use, hashes on every core, and looks the results
up in batches.  PDQ is a perceptual image hash: it cannot be
computed from a file's bytes alone, so ``scan`` never matches it.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from client.protocol.entries import ALGORITHMS
from client.protocol.errors import EntryInputError, InputError, LineProblem
from client.protocol.normalise import read_hash_line
from client.store import Match, Store

_BY_LENGTH: dict[int, tuple[str, ...]] = {}
for _alg, _length in ALGORITHMS.items():
    _BY_LENGTH[_length] = (*_BY_LENGTH.get(_length, ()), _alg)
_BARE_FORMS = "expected alg:hex, or bare hex of {} characters".format(
    ", ".join(map(str, sorted(_BY_LENGTH)))
)
# Bad arguments shown in an error, as many as EntryInputError shows of bad lines.
_SHOWN = 20
FILE_ALGORITHMS = ("md5", "sha1", "sha256", "sha512")
READ_BYTES = 1 << 20


@dataclass
class Queries:
    """Hashes as asked (``texts``, each its line stripped) and their lookup keys (``keys``).

    A key is ``alg:hex`` for a line that names its algorithm and the bare hex
    otherwise (bare hex, ``md5sum`` output), all lowercase: bare hex stands
    for every algorithm of its length.  Two parallel lists rather than an
    object per hash: a batch may hold millions.
    """

    texts: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)

    def extend(self, other: Queries) -> None:
        """Append ``other``'s queries after these."""
        # New lists: texts and keys may be one list (lowercase hashes are their keys).
        self.texts = [*self.texts, *other.texts]
        self.keys = [*self.keys, *other.keys]


@dataclass(frozen=True)
class Hit:
    """A listed hash: which query found it, where and under which label."""

    query: str
    alg: str
    hash: str
    set: str
    version: int
    label: str | None
    stale: bool

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object of a lookup match."""
        return {
            "query": self.query,
            "alg": self.alg,
            "hash": self.hash,
            "set": self.set,
            "version": self.version,
            "label": self.label,
            "stale": self.stale,
        }


def parse_queries(values: Iterable[str]) -> Queries:
    """Queries from command-line arguments, each read as one line of a hash list.

    Every bad argument is reported, by its position (``argument 2: ...``),
    in one InputError.
    """
    queries, problems = _read_queries(values)
    if problems:
        shown = [f"  argument {p.line}: {p.message}" for p in problems[:_SHOWN]]
        if len(problems) > _SHOWN:
            shown.append(f"  ... and {len(problems) - _SHOWN} more")
        raise InputError("\n".join([f"{len(problems)} bad argument(s):", *shown]))
    return queries


def parse_query_lines(lines: Iterable[str], source: str) -> Queries:
    """Queries from the lines of a hash list, read as ``publish`` reads them.

    ``alg:hex [label]``, bare hex and ``md5sum``/``sha256sum`` output, in any
    case; blank lines and ``#`` comments are skipped (and still counted).
    Each query's text is its line, stripped.  Every bad line is reported
    with its number in one EntryInputError naming ``source``.
    """
    queries, problems = _read_queries(lines)
    if problems:
        raise EntryInputError(problems, source)
    return queries


def parse_query_text(text: str, source: str) -> Queries:
    """Queries from a whole file's text, one per line.

    A file of bare hex, one hash per line with nothing else, is parsed as a
    whole in a few passes that run in C; anything else (and any error) goes
    through ``parse_query_lines`` line by line.
    """
    lowered = text.lower()
    try:
        data = lowered.encode("ascii")
    except UnicodeEncodeError:
        data = b"?"
    keys = lowered.split("\n")
    if keys[-1] == "":
        keys.pop()
    if data.translate(None, b"0123456789abcdef\n") or not keys:
        return parse_query_lines(text.splitlines(), source)
    if not set(map(len, keys)) <= _BY_LENGTH.keys():
        return parse_query_lines(text.splitlines(), source)
    # Hashes as asked are reported back as given; lowercase ones are their keys.
    texts = keys if lowered == text else text.split("\n")[: len(keys)]
    return Queries(texts, keys)


def _read_queries(values: Iterable[str]) -> tuple[Queries, list[LineProblem]]:
    """The queries among ``values``, and the problems of the bad ones, numbered from 1.

    Each value is read by ``read_hash_line``, the reader ``publish`` uses;
    a line that names no algorithm stands for every algorithm of its length.
    """
    queries = Queries()
    problems: list[LineProblem] = []
    # Bound once: this loop may run millions of times.
    add_text, add_key = queries.texts.append, queries.keys.append
    for number, raw in enumerate(values, 1):
        try:
            read = read_hash_line(raw)
        except ValueError as exc:
            problems.append(LineProblem(number, str(exc)))
            continue
        if read is None:
            continue
        alg, hex_, _ = read
        if alg is not None:
            add_key(f"{alg}:{hex_}")
        elif len(hex_) in _BY_LENGTH:
            add_key(hex_)
        else:
            problems.append(
                LineProblem(number, f"no algorithm has {len(hex_)}-character hashes; {_BARE_FORMS}")
            )
            continue
        add_text(raw.strip())
    return queries, problems


def lookup(store: Store, queries: Queries, stale_sets: set[str]) -> list[Hit]:
    """Every listed hash among ``queries``: one store lookup for the whole batch."""
    asked = _digests_by_algorithm(store, queries.keys)
    # A match answers the query of its identity and that of its bare hex.
    by_key: dict[str, list[Match]] = {}
    for match in store.lookup_digests(asked):
        by_key.setdefault(match.identity, []).append(match)
        by_key.setdefault(match.identity.partition(":")[2], []).append(match)
    hits: list[Hit] = []
    pairs = zip(queries.texts, queries.keys, strict=True)
    # Most of a big batch is not listed: pick out the answered queries first.
    answered = [(text, key) for text, key in pairs if key in by_key]
    for text, key in answered:
        for match in by_key[key]:
            alg, _, hex_ = match.identity.partition(":")
            hits.append(
                Hit(
                    text,
                    alg,
                    hex_,
                    match.set_name,
                    match.version,
                    match.label,
                    match.set_name in stale_sets,
                )
            )
    return hits


def _digests_by_algorithm(store: Store, keys: list[str]) -> dict[str, Collection[str]]:
    """The hex digests to ask for, by algorithm, for only the algorithms the store holds.

    Bare hex stands for every held algorithm of its length.  A list of bare
    hex all of one length is passed on as it is (the store makes a set of it
    while it reads); anything else is sorted out here.
    """
    held = [alg for alg in ALGORITHMS if store.holds_algorithm(alg)]
    prefixed = [key for key in keys if ":" in key]
    bare = keys if not prefixed else [key for key in keys if ":" not in key]
    lengths = set(map(len, bare))
    asked: dict[str, Collection[str]] = {}
    for alg in held:
        length = ALGORITHMS[alg]
        own = [key[len(alg) + 1 :] for key in prefixed if key.startswith(f"{alg}:")]
        if lengths == {length} and not own:
            asked[alg] = bare
        else:
            asked[alg] = {key for key in bare if len(key) == length}.union(own)
    return asked


@dataclass(frozen=True)
class FileHashes:
    """A file's digests, by algorithm, or why it could not be read."""

    path: str
    digests: dict[str, str]
    error: str | None = None


def walk(
    paths: Iterable[Path], *, follow_symlinks: bool, warn: Callable[[str], None]
) -> Iterator[Path]:
    """Regular files under ``paths``, recursively, each file once.

    Symbolic links are skipped unless asked for; when followed, a directory
    or file already seen (by device and inode) is not visited again, so a
    link loop or a second link to the same file costs nothing and reports
    nothing twice.
    """
    seen: set[tuple[int, int]] = set()

    def first_time(path: Path) -> bool:
        try:
            info = path.stat()
        except OSError as exc:
            warn(f"{path}: skipped ({exc.strerror})")
            return False
        key = (info.st_dev, info.st_ino)
        if key in seen:
            return False
        seen.add(key)
        return True

    for root in paths:
        if root.is_symlink() and not follow_symlinks:
            warn(f"{root}: symbolic link not followed (use --follow-symlinks)")
            continue
        if not root.exists():
            warn(f"{root}: no such file or directory")
        elif not root.is_dir():
            if first_time(root):
                yield root
        elif first_time(root):
            for directory, dirnames, filenames in os.walk(
                root, followlinks=follow_symlinks, onerror=lambda e: warn(str(e))
            ):
                kept = []
                for name in sorted(dirnames):
                    sub = Path(directory, name)
                    if (follow_symlinks or not sub.is_symlink()) and first_time(sub):
                        kept.append(name)
                dirnames[:] = kept
                for name in sorted(filenames):
                    path = Path(directory, name)
                    if path.is_symlink() and not follow_symlinks:
                        continue
                    if first_time(path):
                        yield path


def hash_file(path: Path, algorithms: Sequence[str]) -> FileHashes:
    """Read ``path`` once, feeding every requested algorithm.

    The file is opened without blocking and checked to be a regular file
    before any read: a FIFO or a device in an evidence tree must not hang
    the scan waiting for a writer.
    """
    hashers = {alg: hashlib.new(alg) for alg in algorithms}
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        return FileHashes(str(path), {}, exc.strerror or str(exc))
    with os.fdopen(fd, "rb") as handle:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return FileHashes(str(path), {}, "not a regular file")
            while chunk := handle.read(READ_BYTES):
                for hasher in hashers.values():
                    hasher.update(chunk)
        except OSError as exc:
            return FileHashes(str(path), {}, exc.strerror or str(exc))
    return FileHashes(str(path), {alg: h.hexdigest() for alg, h in hashers.items()})


def hash_files(
    paths: Iterable[Path], algorithms: Sequence[str], workers: int | None = None
) -> Iterator[FileHashes]:
    """Hash files on every core (hashlib releases the GIL on large buffers)."""
    count = workers or os.cpu_count() or 2
    window: deque[Future[FileHashes]] = deque()
    with ThreadPoolExecutor(max_workers=count) as pool:
        # A bounded window of files in flight: a tree of millions of files
        # is walked lazily, in order, without queueing all of it at once.
        for path in paths:
            window.append(pool.submit(hash_file, path, algorithms))
            if len(window) >= count * 4:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
