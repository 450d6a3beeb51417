"""The durable checkpoint store: one crash-safe file per session.

Choice: **one file per session, replaced atomically** - write a temp file in the same
directory (O_EXCL, mode 0600), fsync it, ``os.replace`` it onto ``<name>.ckpt``, fsync the
directory. Why this rather than SQLite (both measured 0 corrupt reads in 150 kill -9 runs,
TRIO_NOTES.md):

* a session's checkpoint is one small document, written whole; there are no queries, no
  cross-session transactions, so SQLite's machinery buys nothing;
* a damaged file damages one session only, and is trivially quarantined (moved aside) for a
  human to look at, where a damaged database would take every session with it;
* it is inspectable with ordinary tools and deletable per session;
* the fsync cost is amortised by group commit: one writer task gathers every dirty session
  and writes the whole batch in one worker thread call, with **one** directory fsync per batch.

File format (version 1), big-endian::

    offset  size  field
    0       4     magic b"GDCK"
    4       2     format version (1)
    6       2     flags (0)
    8       8     payload length N
    16      32    SHA-256 over bytes 0..15 and the payload (so header damage is caught too)
    48      N     payload: UTF-8 JSON object {"session": <name>, "record": <dict>}

The file must be exactly 48 + N bytes. Truncation, extension, bit flips, a foreign file or a
file copied under another session's name all raise :class:`CheckpointCorrupt`, and the loader
moves such a file aside to ``<name>.ckpt.corrupt-<unix ts>``. The store does not look inside
``record``.

Session names are ``[A-Za-z0-9._-]{1,64}``, not starting with ``.``; temp files start with a
``.`` so they can never collide with a record, and stray ones (from a crash mid-write) are
removed by :meth:`CheckpointStore.load_all`.

If a write or fsync fails, the store never retries the fsync on the same file (the kernel may
have dropped the dirty pages and a second fsync would report success on lost data): the temp
file is discarded, the session stays dirty, and the whole record is written again from memory
(a fresh snapshot) after ``retry_interval``.

Snapshot contract: ``snapshot()`` is called on the event loop, so it sees a consistent state,
but the returned dict is JSON-encoded in a worker thread. It must therefore return data that
nobody mutates afterwards (build new dicts/lists; strings, numbers and bools are immutable).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import queue
import secrets
import struct
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import outcome
import structlog
import trio

from geminid.daemon import statedir
from geminid.daemon.errors import CheckpointCorrupt, CheckpointWriteError
from geminid.protocol.constants import valid_session_name
from geminid.protocol.jsoncodec import dumps_finite_fast

log = structlog.get_logger("geminid.checkpoint")

MAGIC = b"GDCK"
VERSION = 1
_PREFIX = struct.Struct(">4sHHQ")  # magic, version, flags, length
HEADER_SIZE = _PREFIX.size + 32
#: A record bigger than this is refused on write and treated as corrupt on read.
MAX_PAYLOAD = 256 * 1024 * 1024
SUFFIX = ".ckpt"
_TEMP_MARK = ".ckpt.tmp-"


def valid_name(name: str) -> bool:
    return valid_session_name(name)


def _check_name(name: str) -> None:
    if not valid_name(name):
        raise ValueError(f"invalid session name for a checkpoint: {name!r}")


# --- Codec (pure) --------------------------------------------------------------------------


def encode_record(name: str, record: dict[str, Any]) -> bytes:
    """The complete file contents for ``record`` of session ``name``."""
    _check_name(name)
    if not isinstance(record, dict):
        raise TypeError(f"a checkpoint record must be a dict, not {type(record).__name__}")
    doc = {"session": name, "record": record}
    payload = dumps_finite_fast(doc)
    if payload is None:
        payload = json.dumps(doc, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"checkpoint record too large: {len(payload)} bytes")
    prefix = _PREFIX.pack(MAGIC, VERSION, 0, len(payload))
    digest = hashlib.sha256(prefix)
    digest.update(payload)
    return b"".join((prefix, digest.digest(), payload))


def decode_record(blob: bytes, name: str | None = None) -> dict[str, Any]:
    """The record stored in ``blob``; raises :class:`CheckpointCorrupt` and nothing else.

    With ``name``, the record must also belong to that session.
    """
    if len(blob) < HEADER_SIZE:
        raise CheckpointCorrupt(f"truncated header ({len(blob)} bytes)")
    magic, version, flags, length = _PREFIX.unpack_from(blob)
    if magic != MAGIC:
        raise CheckpointCorrupt("bad magic: not a geminid checkpoint")
    if version != VERSION:
        raise CheckpointCorrupt(f"unsupported format version {version}")
    if flags != 0:
        raise CheckpointCorrupt(f"unknown flags {flags:#x}")
    if length != len(blob) - HEADER_SIZE:
        raise CheckpointCorrupt(
            f"length mismatch: header says {length}, file has {len(blob) - HEADER_SIZE}"
        )
    payload = blob[HEADER_SIZE:]
    digest = hashlib.sha256(blob[: _PREFIX.size] + payload).digest()
    if digest != blob[_PREFIX.size : HEADER_SIZE]:
        raise CheckpointCorrupt("checksum mismatch")
    try:
        doc = json.loads(payload.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise CheckpointCorrupt(f"bad payload: {exc.__class__.__name__}") from None
    if (
        not isinstance(doc, dict)
        or set(doc) != {"session", "record"}
        or not isinstance(doc["record"], dict)
        or not isinstance(doc["session"], str)
    ):
        raise CheckpointCorrupt("bad payload structure")
    if name is not None and doc["session"] != name:
        raise CheckpointCorrupt(f"record belongs to session {doc['session']!r}")
    return doc["record"]


# --- Blocking I/O (runs in a worker thread) --------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_dir(directory: Path) -> None:
    """Create the store's directory 0700, or check that it is one (see :mod:`statedir`)."""
    statedir.ensure_dir(directory)


def _write_file(directory: Path, name: str, data: bytes) -> None:
    """Atomically replace ``<name>.ckpt`` with ``data``: temp, write, fsync, replace.

    The caller fsyncs the directory once for the whole batch. On any failure the temp file is
    removed and the old file is untouched.
    """
    # Paths as strings: pathlib's joins were a visible share of the checkpoint thread's time.
    base = os.fspath(directory)
    tmp = os.path.join(base, f".{name}{_TEMP_MARK}{secrets.token_hex(6)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, os.path.join(base, name + SUFFIX))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


@attrs.frozen
class BatchResult:
    #: name -> the error that failed it; a name absent from here was written/deleted.
    errors: dict[str, BaseException]
    writes: int
    deletes: int
    fsyncs: int
    bytes: int


def write_batch(directory: Path, items: Sequence[tuple[str, dict[str, Any] | None]]) -> BatchResult:
    """Encode and write (record) or unlink (None) each item, then fsync the directory once.

    Never raises for I/O or encoding problems: they are reported per item. If the directory
    fsync fails, every item of the batch counts as failed (its rename may not be durable).
    """
    errors: dict[str, BaseException] = {}
    writes = deletes = fsyncs = nbytes = 0
    done: list[str] = []
    for name, record in items:
        try:
            if record is None:
                try:
                    os.unlink(os.path.join(directory, name + SUFFIX))
                except FileNotFoundError:
                    pass
                deletes += 1
            else:
                data = encode_record(name, record)
                _write_file(directory, name, data)
                writes += 1
                fsyncs += 1
                nbytes += len(data)
            done.append(name)
        except (OSError, ValueError, TypeError, RecursionError) as exc:
            errors[name] = exc
    if done:
        try:
            _fsync_dir(directory)
            fsyncs += 1
        except OSError as exc:
            for name in done:
                errors[name] = exc
    return BatchResult(errors, writes, deletes, fsyncs, nbytes)


# --- Loading ---------------------------------------------------------------------------------


@attrs.frozen
class LoadReport:
    records: dict[str, dict[str, Any]]
    #: (the path the bad file was moved to, why)
    quarantined: list[tuple[Path, str]]


def _quarantine(directory: Path, filename: str, reason: str) -> Path:
    base = f"{filename}.corrupt-{int(time.time())}"
    target = directory / base
    n = 1
    while target.exists():
        target = directory / f"{base}-{n}"
        n += 1
    os.replace(directory / filename, target)
    return target


# --- The store -------------------------------------------------------------------------------

_DELETE = object()

#: The blocking I/O of one batch (the signature of :func:`write_batch`).
WriteBatch = Callable[[Path, Sequence[tuple[str, "dict[str, Any] | None"]]], BatchResult]
#: How a blocking call reaches a worker thread (the signature of ``trio.to_thread.run_sync``).
RunSync = Callable[..., Awaitable[Any]]


class WriterThread:
    """The store's worker thread: one long-lived thread that runs the blocking calls handed to
    it, one at a time, in order (a :data:`RunSync`, the store's default).

    Why not ``trio.to_thread.run_sync``: per call it names the thread (through ctypes), copies the
    context and wraps the result in trio's machinery, on both threads, and a durable turn makes
    one call; on a loaded machine that was a visible share of the relay loop's time (README,
    "Performance and reliability"). Here a call is a queue put, the thread's wake-up, and one
    ``run_sync_soon`` back. The semantics are those of ``run_sync`` without ``abandon_on_cancel``:
    cancellation is checked before the call is handed over and never after (the caller then
    waits for the result, so an fsync is never left unreported). The thread exits after
    ``idle_exit`` seconds without work (and is started again by the next call); it is a daemon
    thread, like trio's, so an idle one never holds up the interpreter's exit.
    """

    def __init__(self, name: str = "geminid-checkpoint", idle_exit: float = 10.0) -> None:
        self.name = name
        self.idle_exit = idle_exit
        self._jobs: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], Callable[[Any], None]]] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._alive = False

    async def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        await trio.lowlevel.checkpoint_if_cancelled()
        task = trio.lowlevel.current_task()
        token = trio.lowlevel.current_trio_token()

        def report(result: outcome.Outcome[Any]) -> None:
            # From the thread: the loop reschedules the waiting task with the result.
            token.run_sync_soon(trio.lowlevel.reschedule, task, result)

        with self._lock:
            self._jobs.put((fn, args, report))
            if not self._alive:
                self._alive = True
                threading.Thread(target=self._work, name=self.name, daemon=True).start()
        return await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)

    def _work(self) -> None:
        while True:
            try:
                fn, args, report = self._jobs.get(timeout=self.idle_exit)
            except queue.Empty:
                with self._lock:
                    if self._jobs.empty():
                        self._alive = False
                        return
                continue
            result = outcome.capture(fn, *args)
            try:
                report(result)
            except trio.RunFinishedError:  # pragma: no cover - the run ended: nobody waits
                pass


@attrs.define
class StoreStats:
    writes: int = 0
    deletes: int = 0
    #: File fsyncs plus directory fsyncs.
    fsyncs: int = 0
    batches: int = 0
    #: Items (session writes/deletes) that failed.
    failures: int = 0
    bytes: int = 0


class CheckpointStore:
    """Durable per-session records with group commit. See the module docstring."""

    def __init__(
        self,
        directory: Path,
        *,
        coalesce: float = 0.0,
        retry_interval: float = 1.0,
        final_flush_timeout: float = 5.0,
        write_batch: WriteBatch = write_batch,
        run_sync: RunSync | None = None,
    ) -> None:
        """``write_batch`` does the blocking I/O of one batch (tests pass one that fails);
        ``run_sync`` takes it to a worker thread (default: the store's :class:`WriterThread`). Tests
        that run under MockClock's autojump pass an inline call: a thread in flight looks idle
        to the clock, which would then jump."""
        self.directory = Path(directory)
        self.coalesce = coalesce
        self.retry_interval = retry_interval
        self.final_flush_timeout = final_flush_timeout
        self.stats = StoreStats()
        self._write_batch: WriteBatch = write_batch
        self._run_sync: RunSync = run_sync or WriterThread()
        #: The error of the latest batch in which every write failed; None once one succeeds.
        self._unhealthy: CheckpointWriteError | None = None
        self._health_changed = trio.Event()
        self._gen = 0
        #: name -> snapshot function, or _DELETE
        self._dirty: dict[str, Any] = {}
        self._marked: dict[str, int] = {}
        self._durable: dict[str, int] = {}
        #: name -> the first generation marked since the name was last forgotten. A durable
        #: deletion forgets the name (no per-name state outlives a deleted session), and every
        #: generation below this one, or of a name not in ``_marked``, is durable.
        self._since: dict[str, int] = {}
        #: name -> (highest generation whose write failed, the error); cleared by a success.
        self._failed: dict[str, tuple[int, BaseException]] = {}
        self._hold_until: dict[str, float] = {}
        self._work = trio.Event()
        self._progress = trio.Event()
        self._stopped = False

    # -- loading --

    def load_all(self) -> LoadReport:
        """Read every checkpoint (blocking: call via ``trio.to_thread.run_sync``).

        Creates the directory (0700) if needed, removes stray temp files, and quarantines
        corrupt or unreadable files so that one bad file never stops the others loading.
        """
        directory = self.directory
        _ensure_dir(directory)
        records: dict[str, dict[str, Any]] = {}
        quarantined: list[tuple[Path, str]] = []
        changed = False
        for entry in sorted(os.listdir(directory)):
            if entry.startswith(".") and _TEMP_MARK in entry:
                try:
                    os.unlink(directory / entry)
                    changed = True
                    log.info("checkpoint.temp_removed", file=entry)
                except OSError as exc:
                    log.warning("checkpoint.temp_remove_failed", file=entry, error=str(exc))
                continue
            if not entry.endswith(SUFFIX):
                continue
            name = entry[: -len(SUFFIX)]
            if not valid_name(name):
                log.warning("checkpoint.ignored", file=entry, reason="invalid session name")
                continue
            try:
                with open(directory / entry, "rb") as f:
                    blob = f.read(HEADER_SIZE + MAX_PAYLOAD + 1)
                records[name] = decode_record(blob, name)
            except (CheckpointCorrupt, OSError) as exc:
                reason = exc.message if isinstance(exc, CheckpointCorrupt) else f"unreadable: {exc}"
                try:
                    moved = _quarantine(directory, entry, reason)
                except OSError as mv_exc:
                    log.error(
                        "checkpoint.quarantine_failed", file=entry, reason=reason, error=str(mv_exc)
                    )
                    continue
                changed = True
                quarantined.append((moved, reason))
                log.warning(
                    "checkpoint.quarantined", session=name, file=str(moved), reason=reason
                )
        if changed:
            _fsync_dir(directory)
        log.info("checkpoint.loaded", sessions=len(records), quarantined=len(quarantined))
        return LoadReport(records, quarantined)

    # -- marking (cheap, synchronous, from the event loop) --

    def mark_dirty(self, name: str, snapshot: Callable[[], dict[str, Any]]) -> int:
        """Schedule a write of ``snapshot()`` (called later, on the loop); return its generation."""
        _check_name(name)
        return self._mark(name, snapshot)

    def mark_deleted(self, name: str) -> int:
        """Schedule the durable removal of the session's checkpoint; return its generation."""
        _check_name(name)
        return self._mark(name, _DELETE)

    def _mark(self, name: str, what: Any) -> int:
        self._gen += 1
        if name not in self._marked:
            self._since[name] = self._gen
        self._dirty[name] = what
        self._marked[name] = self._gen
        self._work.set()
        return self._gen

    # -- waiting --

    async def wait_durable(self, name: str, gen: int) -> None:
        """Return once generation ``gen`` (or a later one) of ``name`` is on disk.

        Raises :class:`CheckpointWriteError` if the attempt that carried it failed (and no later
        success has superseded it), or if the writer stopped before it was written.
        """
        while True:
            if name not in self._marked or gen < self._since[name]:
                return  # a generation of a deleted (and forgotten) incarnation of the name
            if self._durable.get(name, 0) >= gen:
                return
            failed = self._failed.get(name)
            if failed is not None and failed[0] >= gen:
                err = failed[1]
                raise CheckpointWriteError(
                    f"checkpoint of session {name!r} not written: {err}",
                    data={"session": name, "errno": getattr(err, "errno", None)},
                ) from err
            if self._stopped:
                raise CheckpointWriteError(
                    f"checkpoint store stopped before session {name!r} was written",
                    data={"session": name},
                )
            event = self._progress
            await event.wait()

    async def flush(self) -> None:
        """Return once everything marked so far is durable (raises like ``wait_durable``)."""
        for name, gen in list(self._marked.items()):
            await self.wait_durable(name, gen)

    # -- health --

    @property
    def healthy(self) -> bool:
        """False while the disk refuses every write (read-only, full, gone): from a batch in
        which every write failed until a later write succeeds. Whoever is about to accept work
        that needs durability asks this first, to refuse at once rather than wait for a retry
        that cannot succeed (``-32007``)."""
        return self._unhealthy is None

    def check_healthy(self) -> None:
        """Raise the :class:`CheckpointWriteError` of the failing disk, if it is failing."""
        if self._unhealthy is not None:
            raise self._unhealthy

    async def wait_unhealthy(self) -> CheckpointWriteError:
        """Return (the error) as soon as the store is, or becomes, unhealthy."""
        while self._unhealthy is None:
            await self._health_changed.wait()
        return self._unhealthy

    def _set_health(self, error: CheckpointWriteError | None) -> None:
        was = self._unhealthy
        self._unhealthy = error
        if (was is None) != (error is None):
            if error is None:
                log.info("checkpoint.healthy", directory=str(self.directory))
            else:
                log.error("checkpoint.unhealthy", directory=str(self.directory), error=error.message)
            self._health_changed.set()
            self._health_changed = trio.Event()

    # -- the writer task --

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The single writer: group-commit dirty sessions until cancelled, then flush."""
        self._stopped = False
        await self._run_sync(_ensure_dir, self.directory)
        task_status.started()
        try:
            while True:
                await self._wait_for_work()
                if self.coalesce > 0:
                    await trio.sleep(self.coalesce)
                else:
                    # One pass of the scheduler first: the tasks woken with this one (the
                    # session's writer, sending the turn just marked) go before the snapshot.
                    await trio.lowlevel.checkpoint()
                await self._write_once(self._ready_names())
        finally:
            # SIGTERM must lose nothing: one bounded, shielded last batch, holds ignored.
            with trio.move_on_after(self.final_flush_timeout, shield=True) as scope:
                if self._dirty:
                    n = len(self._dirty)
                    await self._write_once(list(self._dirty))
                    log.info("checkpoint.final_flush", sessions=n, left_dirty=len(self._dirty))
            if scope.cancelled_caught:
                log.error("checkpoint.final_flush_timeout", left_dirty=len(self._dirty))
            self._stopped = True
            self._wake_waiters()

    def _ready_names(self) -> list[str]:
        now = trio.current_time()
        return [n for n in self._dirty if self._hold_until.get(n, -1.0) <= now]

    async def _wait_for_work(self) -> None:
        while True:
            if self._ready_names():
                return
            holds = [self._hold_until[n] for n in self._dirty if n in self._hold_until]
            event = self._work
            with trio.move_on_at(min(holds) if holds else float("inf")):
                await event.wait()
            if event.is_set():
                self._work = trio.Event()

    async def _write_once(self, names: list[str]) -> None:
        """Snapshot ``names`` on the loop, write them in one thread call, resolve waiters."""
        items: list[tuple[str, dict[str, Any] | None]] = []
        taken: dict[str, Any] = {}
        gens: dict[str, int] = {}
        errors: dict[str, BaseException] = {}
        for name in names:
            what = self._dirty.pop(name, None)
            if what is None:
                continue
            gens[name] = self._marked[name]
            taken[name] = what
            if what is _DELETE:
                items.append((name, None))
                continue
            try:
                record = what()
                if not isinstance(record, dict):
                    raise TypeError(f"snapshot returned {type(record).__name__}, not dict")
            except Exception as snap_exc:
                log.error("checkpoint.snapshot_failed", session=name, exc_info=snap_exc)
                errors[name] = snap_exc
                self._dirty.setdefault(name, what)
                continue
            items.append((name, record))
        if items:
            try:
                result = await self._run_sync(self._write_batch, self.directory, items)
            except Exception as crash:  # a bug or MemoryError in the batch: nothing is lost
                log.error("checkpoint.batch_crashed", exc_info=crash)
                result = BatchResult({n: crash for n, _ in items}, 0, 0, 0, 0)
            except BaseException:
                # Cancelled before the thread started (run_sync checks for cancellation and
                # may wait for a thread slot first): put the batch back, so the final flush
                # writes it. Once the thread runs, run_sync is not cancellable.
                for name, what in taken.items():
                    self._dirty.setdefault(name, what)
                raise
            self.stats.batches += 1
            self.stats.writes += result.writes
            self.stats.deletes += result.deletes
            self.stats.fsyncs += result.fsyncs
            self.stats.bytes += result.bytes
            for name, err in result.errors.items():
                errors[name] = err
                # Stay dirty (unless a newer mark arrived meanwhile): the next attempt takes a
                # fresh snapshot and writes the whole record into a new temp file.
                self._dirty.setdefault(name, taken[name])
            self._note_health(result, len(items))
        now = trio.current_time()
        for name, gen in gens.items():
            if name in errors:
                continue
            if gen > self._durable.get(name, 0):
                self._durable[name] = gen
            self._failed.pop(name, None)
            self._hold_until.pop(name, None)
            if taken[name] is _DELETE and name not in self._dirty and self._marked[name] == gen:
                self._forget(name)
        for name, err in errors.items():
            self.stats.failures += 1
            prev = self._failed.get(name)
            self._failed[name] = (max(gens[name], prev[0] if prev else 0), err)
            self._hold_until[name] = now + self.retry_interval
            log.warning(
                "checkpoint.write_failed",
                session=name,
                error=str(err),
                errno=errno.errorcode.get(getattr(err, "errno", None) or -1),
                retry_in=self.retry_interval,
            )
        self._wake_waiters()

    def _note_health(self, result: BatchResult, items: int) -> None:
        """A batch where every item failed with an OSError says the disk, not one record, is the
        problem; any success says it is fine again. (A record that fails to encode is that
        session's problem and leaves the health as it was.)"""
        os_errors = [e for e in result.errors.values() if isinstance(e, OSError)]
        if os_errors and len(os_errors) == items:
            err = os_errors[0]
            self._set_health(CheckpointWriteError(
                f"the state directory refuses writes: {err.strerror or err}",
                data={"errno": errno.errorcode.get(err.errno or -1)},
            ))
        elif len(result.errors) < items:
            self._set_health(None)

    def _forget(self, name: str) -> None:
        """Drop the bookkeeping of a session whose deletion is durable and that has nothing newer
        pending; :meth:`wait_durable` treats every generation it ever had as durable."""
        self._marked.pop(name, None)
        self._durable.pop(name, None)
        self._since.pop(name, None)

    def _wake_waiters(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

