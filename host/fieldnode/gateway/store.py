"""The gateway's SQLite store: schema, the batched writer, replay state, commands, health.

One writer connection per gateway process, used from one thread only (the gateway's commit
thread). A batch of frames is one transaction; the gateway answers the nodes only after it
commits. WAL mode lets `fieldnode status`, the MQTT publisher and `fieldnode command` read and
write beside it. Devices are stored as 12 lowercase hex digits so the tables are easy to query
by hand.

Shards: with `--workers N` each worker writes its own database file (`gateway.db`, `gateway.shard1.db`, ...)
and owns the devices `owner_of` gives it, so N workers are N SQLite writers. Every writer attaches
the other shards read-only: a device's frames from a run with another N stay part of its replay
state. Commands live in shard 0 (`gateway.db`), which is what `fieldnode command` writes.
"""
from __future__ import annotations

import glob
import logging
import os
import sqlite3
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..infra.errors import FieldnodeError
from ..wire.frame import (KIND_ACK, KIND_COMMAND, SENML_BT, SENML_ERR, SENML_N, SENML_T, SENML_U, SENML_V,
                     SENML_VB, SENML_VS, Frame, FrameRejected, ReplayWindow, parse_protected, present,
                     split_envelope)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 3  # 2: readings as series + samples (a view keeps the old shape); replay state per key id
# 3: new samples land in samples_recent and are moved to samples in bulk
REPLAY_SPAN = ReplayWindow.SIZE
# How long the writer waits for another writer (a second worker, `fieldnode command`) to finish.
BUSY_TIMEOUT_MS = 10_000
WRITER_CACHE_KIB = 32 * 1024

FRAMES_TABLE = """
CREATE TABLE IF NOT EXISTS frames (
    id        INTEGER PRIMARY KEY,
    device    TEXT    NOT NULL,
    counter   INTEGER NOT NULL,
    kid       TEXT    NOT NULL,
    kind      INTEGER NOT NULL,
    alg       INTEGER NOT NULL,
    tag       BLOB    NOT NULL,
    base_time REAL    NOT NULL,
    received  REAL    NOT NULL,
    source    TEXT    NOT NULL,
    raw       BLOB    NOT NULL,
    UNIQUE (kid, counter)
)
"""

REPLAY_TABLE = """
-- The replay state: per key id (a frame's MAC binds its kid), the highest counter stored.
CREATE TABLE IF NOT EXISTS replay (
    kid             TEXT PRIMARY KEY,
    device          TEXT NOT NULL,
    highest_counter INTEGER NOT NULL
) WITHOUT ROWID
"""

SERIES_TABLES = """
-- A series is one reading of one device (device, SenML name, unit): its samples refer to it by
-- number, so a sample row and its index entry hold integers, not the same strings again.
CREATE TABLE IF NOT EXISTS series (
    id     INTEGER PRIMARY KEY,
    device TEXT NOT NULL,
    name   TEXT NOT NULL,
    unit   TEXT NOT NULL DEFAULT '',  -- '' when the record has none (NULLs would not be UNIQUE)
    UNIQUE (device, name, unit)
);
CREATE TABLE IF NOT EXISTS samples (
    id       INTEGER PRIMARY KEY,
    frame_id INTEGER NOT NULL REFERENCES frames(id),
    series   INTEGER NOT NULL REFERENCES series(id),
    time     REAL    NOT NULL,
    value    REAL,
    string   TEXT,
    bool     INTEGER,
    err      TEXT
);
CREATE INDEX IF NOT EXISTS samples_by_series ON samples (series, time);
"""

# Why two sample tables: a commit adds a few samples to every series, and each lands on a
# different leaf page of the (series, time) index, so a batch of 256 frames from 100 devices
# rewrote ~600 index pages (2.4 MB of WAL) for 1,500 rows. The gateway commits new samples to an
# unindexed table that only grows at its end, and moves them into `samples` a few seconds' worth
# at a time (`Store.index_recent`), where each index page takes hundreds of rows at once. The
# `readings` view reads both, so a sample is queryable from the moment its frame is acknowledged.
RECENT_TABLE = """
CREATE TABLE IF NOT EXISTS samples_recent (
    id       INTEGER PRIMARY KEY,
    frame_id INTEGER NOT NULL,
    series   INTEGER NOT NULL,
    time     REAL    NOT NULL,
    value    REAL,
    string   TEXT,
    bool     INTEGER,
    err      TEXT
)
"""

READINGS_VIEW = """
CREATE VIEW IF NOT EXISTS readings AS
    SELECT s.id AS id, s.frame_id AS frame_id, r.device AS device, r.name AS name, s.time AS time,
           s.value AS value, s.string AS string, s.bool AS bool, s.err AS err, NULLIF(r.unit, '') AS unit
    FROM (SELECT id, frame_id, series, time, value, string, bool, err FROM samples UNION ALL
          SELECT id, frame_id, series, time, value, string, bool, err FROM samples_recent) s
    JOIN series r ON r.id = s.series
"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
""" + FRAMES_TABLE + ";\n" + REPLAY_TABLE + ";\n" + SERIES_TABLES + RECENT_TABLE + """;
-- What people query: one row per SenML record, with the device, name and unit spelled out.
""" + READINGS_VIEW + """;
CREATE TABLE IF NOT EXISTS devices (
    device          TEXT PRIMARY KEY,
    name            TEXT,
    highest_counter INTEGER NOT NULL,
    frames          INTEGER NOT NULL DEFAULT 0,
    first_seen      REAL NOT NULL,
    last_seen       REAL NOT NULL,
    last_source     TEXT,
    last_kind       INTEGER,
    kid             TEXT     -- the key id of its last frame; highest_counter is that key's
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
-- AUTOINCREMENT: ids never come back after deletes, so the publisher's "id > last sent" holds.
CREATE TABLE IF NOT EXISTS outbox (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    topic   TEXT NOT NULL,
    payload TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS commands (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    device    TEXT    NOT NULL,
    counter   INTEGER NOT NULL,
    frame     BLOB    NOT NULL,
    created   REAL    NOT NULL,
    expires   REAL    NOT NULL,
    state     TEXT    NOT NULL DEFAULT 'pending',
    attempts  INTEGER NOT NULL DEFAULT 0,
    sent_at   REAL,
    result_at REAL,
    reason    TEXT
);
CREATE INDEX IF NOT EXISTS commands_open ON commands (device, id) WHERE state IN ('pending', 'sent');
CREATE TABLE IF NOT EXISTS gateway (
    worker        INTEGER PRIMARY KEY,
    pid           INTEGER NOT NULL,
    listen        TEXT    NOT NULL,
    started       REAL    NOT NULL,
    heartbeat     REAL    NOT NULL,
    stopped       REAL,
    batch_pending INTEGER NOT NULL DEFAULT 0,
    exchanges     INTEGER NOT NULL DEFAULT 0,
    dedup_bytes   INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS mqtt_state (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    url       TEXT NOT NULL,
    state     TEXT NOT NULL,
    detail    TEXT NOT NULL DEFAULT '',
    published INTEGER NOT NULL DEFAULT 0,
    updated   REAL NOT NULL
);
"""

COMMAND_STATES = ("pending", "sent", "applied", "refused", "expired")

FRAME_COLUMNS = 11
SAMPLE_COLUMNS = 8
SAMPLE_NAMES = "id, frame_id, series, time, value, string, bool, err"
# samples_recent is moved into samples at the latest when it has this many rows, and on every
# housekeeping round (each second): a few seconds' worth at full rate.
INDEX_RECENT_ROWS = 50_000
# Rows per INSERT statement. SQLite runs a statement's whole VALUES list in one go; executemany
# runs the statement once per row, and that per-row set-up was over half the cost of a sample
# row. 64 rows of 11 columns stay far below SQLite's 32766 bound parameters.
ROWS_PER_INSERT = 64


def insert_rows(conn: sqlite3.Connection, insert: str, columns: int, flat: list) -> None:
    """INSERT the rows flattened in `flat` (`columns` values each), ROWS_PER_INSERT to a statement.

    Whole chunks share one statement text, and each shorter remainder has its own, so SQLite's
    statement cache compiles each once."""
    step = columns * ROWS_PER_INSERT
    whole = len(flat) - len(flat) % step
    if whole:
        conn.executemany(_values_statement(insert, columns, ROWS_PER_INSERT),
                         [flat[i:i + step] for i in range(0, whole, step)])
    if whole < len(flat):
        conn.execute(_values_statement(insert, columns, (len(flat) - whole) // columns), flat[whole:])


_STATEMENTS: dict[tuple[str, int, int], str] = {}


def _values_statement(insert: str, columns: int, rows: int) -> str:
    key = (insert, columns, rows)
    sql = _STATEMENTS.get(key)
    if sql is None:
        row = "(" + ",".join("?" * columns) + ")"
        sql = _STATEMENTS[key] = f"{insert} VALUES " + ",".join([row] * rows)
    return sql


# SQLite attaches at most 10 databases to a connection: the writer's own shard plus 10 others.
MAX_SHARDS = 11


def shard_path(db: Path | str, index: int) -> Path:
    """Shard 0 is the database named by --db; shard k of gateway.db is gateway.shard<k>.db beside it."""
    db = Path(db)
    return db if index == 0 else db.with_name(f"{db.stem}.shard{index}{db.suffix}")


def shard_paths(db: Path | str) -> dict[int, Path]:
    """The shards of db that exist, by index (0 included when db exists)."""
    db = Path(db)
    found = {0: db} if db.exists() else {}
    for path in db.parent.glob(f"{glob.escape(db.stem)}.shard*{glob.escape(db.suffix)}"):
        digits = path.name[len(db.stem) + len(".shard"):len(path.name) - len(db.suffix)]
        if digits.isdigit() and shard_path(db, int(digits)) == path:
            found[int(digits)] = path
    return dict(sorted(found.items()))


def owner_of(device: bytes, workers: int) -> int:
    """The worker (and so the shard) that stores this device's frames when N workers run.
    CRC-32, not hash(): every process must get the same answer."""
    return zlib.crc32(device) % workers if workers > 1 else 0


def create_shards(db: Path | str, workers: int) -> None:
    """Shards 0..workers-1 of db, with their schema (harmless when they exist)."""
    for index in range(workers):
        connect(shard_path(db, index)).close()


def attach_shards(conn: sqlite3.Connection, db: Path | str, own: int) -> list[str]:
    """ATTACHes every other existing shard of db read-only as shard<k>; returns the schema names."""
    others = [(k, p) for k, p in shard_paths(db).items() if k != own]
    if len(others) >= MAX_SHARDS:
        raise FieldnodeError(f"{db} has {len(others) + 1} shard files; the gateway reads at most {MAX_SHARDS} "
                             "together (SQLite attaches 10 databases) and never makes more: pass the --db "
                             "of this gateway's own files")
    names = []
    for k, path in others:
        uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
        conn.execute("ATTACH DATABASE ? AS ?", (uri, f"shard{k}"))
        names.append(f"shard{k}")
    return names


def default_db_path() -> Path:
    """FIELDNODE_DB, else $XDG_DATA_HOME/fieldnode/gateway.db."""
    env = os.environ.get("FIELDNODE_DB")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME", os.path.expanduser("~/.local/share"))
    return Path(base) / "fieldnode" / "gateway.db"


# Owner only: the database holds every reading and the command queue. SQLite creates the -wal,
# -shm and -journal files with the permissions of the database file (os_unix.c, findCreateFileMode),
# so creating the database file 0600 before SQLite opens it makes all of them 0600.
PRIVATE_FILE_MODE = 0o600
PRIVATE_DIR_MODE = 0o700


def create_private(path: Path) -> None:
    """path (and its missing directories) created for the owner only; an existing file is left
    as it is (a site may have opened it to a group on purpose)."""
    if path.exists():
        # Never open and close a database file this process may have open in SQLite: closing any
        # descriptor of a file drops every POSIX lock the process holds on it, SQLite's included
        # (sqlite.org/howtocorrupt.html, 2.2), and another connection then reads a WAL it must not.
        return
    if not path.parent.exists():
        path.parent.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    try:  # an empty file is an empty SQLite database
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE))
    except FileExistsError:
        pass  # made a moment ago by another process (not open here: the check above was before)


def connect(path: Path | str, *, synchronous: str = "FULL", create: bool = True) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, schema in place."""
    path = Path(path)
    if not create and not path.exists():
        raise FieldnodeError(f"database {path} does not exist: start the gateway with --db {path} "
                             "first, or pass the --db the gateway uses")
    try:
        if create:
            create_private(path)
        # The statement cache holds every multi-row INSERT (insert_rows) besides the rest.
        # uri=True lets attach_shards open the other shards read-only ("file:...?mode=ro").
        conn = sqlite3.connect(str(path), isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000,
                               check_same_thread=False, cached_statements=512, uri=True)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit survives a power cut, which is what the 2.04 promises the node.
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        if create:
            _ensure_schema(conn)
    except sqlite3.DatabaseError as exc:
        raise FieldnodeError(f"database {path}: {exc}; is it a fieldnode gateway database? "
                             "Pass another --db") from None
    except OSError as exc:
        raise FieldnodeError(f"database {path}: {exc.strerror}; pass a writable --db PATH") from None
    return conn


def _ensure_schema(conn: sqlite3.Connection) -> None:
    # Every statement is IF NOT EXISTS, so two processes creating the schema at once is harmless.
    if _schema_version(conn) == 1:
        _migrate_from_1(conn)
    if _schema_version(conn) == 2:
        _migrate_from_2(conn)
    conn.executescript(SCHEMA)
    _add_column(conn, "gateway", "dedup_bytes", "INTEGER NOT NULL DEFAULT 0")
    version = _schema_version(conn)
    if version is None:
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
    elif version != SCHEMA_VERSION:
        raise FieldnodeError(f"database schema version {version}, this fieldnode knows {SCHEMA_VERSION}: "
                             "use the fieldnode release that made it, or another --db")


def _add_column(conn: sqlite3.Connection, table: str, column: str, decl: str) -> None:
    """A column added within a schema version: older readers name their columns and never see
    it. Two processes adding it at once: the second's ALTER fails, harmlessly."""
    if column not in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
        try:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {decl}")
        except sqlite3.OperationalError as exc:
            if "duplicate column" not in str(exc):
                raise


def _schema_version(conn: sqlite3.Connection) -> int | None:
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone() is None:
        return None
    row = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
    return None if row is None else int(row[0])


def _migrate_from_1(conn: sqlite3.Connection) -> None:
    """Schema 1 kept device, name and unit on every reading, and the replay state per device.
    Upgrades in one transaction, so a cut-short migration leaves the old database as it was."""
    with write_transaction(conn):
        if _schema_version(conn) == 1:  # another process may have migrated while this one waited
            # frames gets UNIQUE (kid, counter): a table's constraints cannot be altered in
            # place, so it is rebuilt, before anything new refers to it.
            conn.execute("ALTER TABLE frames RENAME TO frames_1")
            conn.execute(FRAMES_TABLE)
            conn.execute("INSERT INTO frames SELECT * FROM frames_1 ORDER BY id")
            for statement in SERIES_TABLES.split(";"):  # executescript would COMMIT midway
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT OR IGNORE INTO series (device, name, unit) "
                         "SELECT DISTINCT device, name, COALESCE(unit, '') FROM readings")
            conn.execute("INSERT INTO samples (id, frame_id, series, time, value, string, bool, err) "
                         "SELECT r.id, r.frame_id, s.id, r.time, r.value, r.string, r.bool, r.err FROM readings r "
                         "JOIN series s ON s.device = r.device AND s.name = r.name AND s.unit = COALESCE(r.unit, '') "
                         "ORDER BY r.id")
            conn.execute("DROP TABLE readings")
            conn.execute("DROP TABLE frames_1")
            conn.execute(REPLAY_TABLE)
            conn.execute("INSERT INTO replay (kid, device, highest_counter) "
                         "SELECT kid, device, max(counter) FROM frames GROUP BY kid")
            conn.execute("ALTER TABLE devices ADD COLUMN kid TEXT")
            conn.execute("UPDATE devices SET kid=(SELECT f.kid FROM frames f WHERE f.device=devices.device "
                         "ORDER BY f.id DESC LIMIT 1)")
            conn.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))


def _migrate_from_2(conn: sqlite3.Connection) -> None:
    """Schema 2 had no samples_recent: the readings view is made again to read it too."""
    with write_transaction(conn):
        if _schema_version(conn) == 2:
            conn.execute("DROP VIEW IF EXISTS readings")
            conn.execute(RECENT_TABLE)
            conn.execute(READINGS_VIEW)
            conn.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))


@contextmanager
def write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back if anything in it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


@dataclass(slots=True)
class StoreItem:
    """One verified frame for the writer, with what the writer needs besides the frame."""
    frame: Frame
    raw: bytes
    received: float
    source: str
    node: str  # the node's name from the keystore, or ''


# Errors that come from one frame's values, not from the database file: binding a value SQLite
# cannot hold, a constraint. A batch that fails with one of these is stored again frame by frame.
ITEM_ERRORS = (OverflowError, ValueError, TypeError, sqlite3.IntegrityError, sqlite3.InterfaceError,
               sqlite3.ProgrammingError, sqlite3.DataError)


@dataclass(slots=True)
class Outcome:
    """What the writer made of an item: 'stored', 'duplicate' (same device+counter+tag already
    stored), 'replay' (the counter is taken by another frame or is below the stored window) or
    'unstorable' (the database refused the frame's values; nothing of it is stored)."""
    status: str
    command_id: int | None = None
    command: bytes | None = None


@dataclass
class Health:
    worker: int
    pid: int
    listen: str
    started: float
    batch_pending: int = 0
    exchanges: int = 0
    stopped: float | None = None
    dedup_bytes: int = 0  # the message deduplication cache's memory (MessageCache.bytes)


# (frame, node name, frame.records()) -> [(topic, payload)] for the MQTT outbox; None when MQTT is off.
OutboxRows = Callable[[Frame, str, "list[dict]"], "list[tuple[str, str]]"]


class Store:
    """The writer side. Every method runs on the gateway's commit thread.

    `path` is the database given with --db; `shard` the worker's index: the store writes
    shard_path(path, shard) and reads the other shards (see the module's docstring)."""

    def __init__(self, path: Path | str, *, synchronous: str = "FULL", outbox: OutboxRows | None = None,
                 command_resend: float = 30.0, shard: int = 0) -> None:
        self.path = Path(path)
        self.shard = shard
        self.own_path = shard_path(path, shard)
        self.synchronous = synchronous
        self.outbox = outbox
        self.command_resend = command_resend
        self._conn: sqlite3.Connection | None = None
        # (device, name, unit) -> series id. Entries made in a transaction that rolls back are
        # forgotten with it (the rows they name are gone).
        self._series: dict[tuple[str, str, str], int] = {}
        self._series_added: list[tuple[str, str, str]] = []
        self._sample_id = 0
        self._recent_rows = 0  # rows this writer added to samples_recent since it last moved them
        self._recent_added = 0  # ... of which in the transaction under way
        self.schemas: list[str] = ["main"]  # this shard, then the others attached read-only
        # Commands are in shard 0. Another shard's writer reads them through its attachment and
        # writes their state changes over its own connection to shard 0 once its batch has
        # committed: a transaction cannot write both files without also locking shard 0.
        self._commands = "main"
        self._commands_conn: sqlite3.Connection | None = None
        self._command_writes: list[tuple[str, tuple]] = []
        self._commands_given: set[str] = set()

    def open(self) -> None:
        self._conn = connect(self.own_path, synchronous=self.synchronous)
        try:
            # The writer's page cache holds the hot ends of the indexes (default: 2 MB).
            self._conn.execute(f"PRAGMA cache_size=-{WRITER_CACHE_KIB}")
            self.schemas = ["main"] + attach_shards(self._conn, self.path, self.shard)
            if self.shard != 0:
                self._commands_conn = connect(self.path, synchronous=self.synchronous)
                self._commands = "shard0"
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for conn in (self._conn, self._commands_conn):
            if conn is not None:
                conn.close()
        self._conn = self._commands_conn = None
        self._series.clear()

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("store is not open")
        return self._conn

    def replay_state(self) -> Iterable[tuple[bytes, int, set[int]]]:
        """(key id, highest counter, counters stored within the replay window below it), over
        every shard."""
        conn = self.conn
        highest: dict[str, int] = {}
        for schema in self.schemas:
            for kid, high in conn.execute(f"SELECT kid, highest_counter FROM {schema}.replay"):
                highest[kid] = max(high, highest.get(kid, 0))
        for kid, high in highest.items():
            stored = set()
            for schema in self.schemas:
                stored.update(c for (c,) in conn.execute(
                    f"SELECT counter FROM {schema}.frames WHERE kid=? AND counter>? AND counter<=?",
                    (kid, high - REPLAY_SPAN, high)))
            yield bytes.fromhex(kid), high, stored

    def commit(self, items: Sequence[StoreItem], counter_deltas: dict[str, int],
               health: Health | None) -> list[Outcome]:
        """Stores a batch in one transaction; raises (after rolling back) if it cannot.

        A frame the database refuses to hold (ITEM_ERRORS: a value it cannot bind, a constraint)
        must not take the other nodes' frames with it: the batch is then stored again one frame
        at a time, and that frame alone gets the outcome 'unstorable'. Anything else (disk full,
        I/O error, a locked file) is every frame's problem and raises."""
        conn = self.conn
        now = time.time()
        try:
            outcomes = self._commit_batch(conn, items, counter_deltas, health, now, each=False)
        except ITEM_ERRORS as exc:
            if not items:
                raise
            log.warning("a batch of %d frames held one the database refuses (%s: %s); storing them one "
                        "at a time", len(items), type(exc).__name__, exc)
            outcomes = self._commit_batch(conn, items, counter_deltas, health, now, each=True)
        self._write_commands_elsewhere()
        self._recent_rows += self._recent_added
        if self._recent_rows >= INDEX_RECENT_ROWS:
            self.index_recent()
        return outcomes

    def _commit_batch(self, conn: sqlite3.Connection, items: Sequence[StoreItem], counter_deltas: dict[str, int],
                      health: Health | None, now: float, each: bool) -> list[Outcome]:
        self._series_added.clear()
        self._recent_added = 0
        self._command_writes.clear()
        self._commands_given.clear()
        try:
            with write_transaction(conn):
                if each:
                    outcomes = [self._store_alone(conn, item, now) for item in items]
                else:
                    outcomes = self._store_frames(conn, items, now) if items else []
                self._write_counters(conn, counter_deltas)
                if health is not None:
                    self._write_health(conn, health, now)
        except BaseException:
            self._forget_series(0)
            raise
        return outcomes

    def _forget_series(self, keep: int) -> None:
        """Forgets the series ids made after the first `keep` of this transaction (rolled back)."""
        for key in self._series_added[keep:]:
            self._series.pop(key, None)
        del self._series_added[keep:]

    def _store_alone(self, conn: sqlite3.Connection, item: StoreItem, now: float) -> Outcome:
        """One frame in a savepoint: rolled back alone, and 'unstorable', if the database refuses it."""
        marks = (len(self._series_added), len(self._command_writes), set(self._commands_given), self._recent_added)
        conn.execute("SAVEPOINT frame")
        try:
            (outcome,) = self._store_frames(conn, [item], now)
        except ITEM_ERRORS as exc:
            conn.execute("ROLLBACK TO frame")
            conn.execute("RELEASE frame")
            self._forget_series(marks[0])
            del self._command_writes[marks[1]:]
            self._commands_given, self._recent_added = marks[2], marks[3]
            f = item.frame
            log.warning("frame kid %s counter %d from %s cannot be stored (%s: %s); refused as unstorable",
                        f.kid.hex(), f.counter, item.source, type(exc).__name__, exc)
            return Outcome("unstorable")
        conn.execute("RELEASE frame")
        return outcome

    def index_recent(self) -> None:
        """Moves samples_recent into samples (and so into its index), in one transaction."""
        with write_transaction(self.conn):
            self._move_recent(self.conn)

    def _move_recent(self, conn: sqlite3.Connection) -> None:
        # Every writer's rows go, not only this one's: with several workers, whoever moves takes all.
        conn.execute(f"INSERT INTO samples ({SAMPLE_NAMES}) SELECT {SAMPLE_NAMES} FROM samples_recent ORDER BY id")
        conn.execute("DELETE FROM samples_recent")
        self._recent_rows = 0

    def _store_frames(self, conn: sqlite3.Connection, items: Sequence[StoreItem], now: float) -> list[Outcome]:
        # The database, not this process's window, has the last word on replay: with several
        # workers another process may have stored frames of the same key. This transaction holds
        # the write lock, and `replay.highest_counter` moves with every stored frame, so a counter
        # above it cannot be in `frames` yet: only the others (UDP reordering within the window,
        # retransmissions) need a look at the table. UNIQUE (kid, counter) stays the backstop.
        # The other shards hold what a run with another number of workers stored for these keys.
        stored_high = dict.fromkeys({item.frame.kid.hex() for item in items}, 0)
        marks = ",".join("?" * len(stored_high))
        for schema in self.schemas:
            for kid, high in conn.execute(f"SELECT kid, highest_counter FROM {schema}.replay WHERE kid IN ({marks})",
                                          list(stored_high)):
                stored_high[kid] = max(high, stored_high[kid])
        highs = dict(stored_high)
        open_commands = {d for (d,) in conn.execute(
            f"SELECT DISTINCT device FROM {self._commands}.commands WHERE state IN ('pending','sent') AND expires>?",
            (now,))}
        # Ids are given here, so rows go in many to a statement (the write lock is held). A
        # sample's id is above every id in both sample tables: the move keeps ids.
        (frame_id,) = conn.execute("SELECT COALESCE(MAX(id), 0) FROM frames").fetchone()
        self._sample_id, = conn.execute(
            "SELECT max((SELECT COALESCE(MAX(id), 0) FROM samples), (SELECT COALESCE(MAX(id), 0) FROM samples_recent))"
        ).fetchone()
        batch_tags: dict[tuple[str, int], bytes] = {}
        outcomes: list[Outcome] = []
        touched: dict[str, StoreItem] = {}  # device -> its last stored item
        stored_kids: set[str] = set()
        counts: dict[str, int] = {}
        frame_rows: list = []  # flat: FRAME_COLUMNS values a row
        samples: list = []  # flat: SAMPLE_COLUMNS values a row
        outbox: list = []  # flat: topic, payload, created
        for item in items:
            f = item.frame
            dev = f.device.hex()
            kid = f.kid.hex()
            counter = f.counter
            if counter <= highs[kid] - REPLAY_SPAN:
                outcomes.append(Outcome("replay"))
                continue
            tag = batch_tags.get((kid, counter))
            if tag is None and counter <= stored_high[kid]:
                tag = stored_tag(conn, f.kid, counter, self.schemas)
            if tag is not None:
                outcomes.append(Outcome("duplicate" if tag == f.tag else "replay"))
                continue
            frame_id += 1
            batch_tags[kid, counter] = f.tag
            stored_kids.add(kid)
            frame_rows.extend((frame_id, dev, counter, kid, f.kind, f.alg, f.tag, f.base_time,
                               item.received, item.source, item.raw))
            self._add_samples(conn, samples, frame_id, dev, f.pack)
            if self.outbox is not None or f.kind == KIND_ACK:
                records = f.records()
                if self.outbox is not None:
                    for topic, payload in self.outbox(f, item.node, records):
                        outbox += (topic, payload, now)
                if f.kind == KIND_ACK:
                    self._command_answered(dev, records, now)
            if counter > highs[kid]:
                highs[kid] = counter
            touched[dev] = item
            counts[dev] = counts.get(dev, 0) + 1
            outcome = Outcome("stored")
            if dev in open_commands:
                found = self._next_command(conn, dev, now)
                if found is None:
                    open_commands.discard(dev)
                else:
                    outcome.command_id, outcome.command = found
            outcomes.append(outcome)
        insert_rows(conn, "INSERT INTO frames (id, device, counter, kid, kind, alg, tag, base_time, received, "
                    "source, raw)", FRAME_COLUMNS, frame_rows)
        insert_rows(conn, f"INSERT INTO samples_recent ({SAMPLE_NAMES})", SAMPLE_COLUMNS, samples)
        self._recent_added += len(samples) // SAMPLE_COLUMNS
        insert_rows(conn, "INSERT INTO outbox (topic, payload, created)", 3, outbox)
        conn.executemany(
            "INSERT INTO replay (kid, device, highest_counter) VALUES (?,?,?) ON CONFLICT (kid) DO UPDATE "
            "SET highest_counter=max(highest_counter, excluded.highest_counter)",
            [(kid, kid[:12], highs[kid]) for kid in stored_kids])  # a kid begins with its device
        conn.executemany(
            "INSERT INTO devices (device, name, highest_counter, frames, first_seen, last_seen, "
            "last_source, last_kind, kid) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (device) DO UPDATE SET "
            "name=excluded.name, highest_counter=CASE WHEN kid IS excluded.kid THEN "
            "max(highest_counter, excluded.highest_counter) ELSE excluded.highest_counter END, "
            "frames=frames+excluded.frames, last_seen=excluded.last_seen, "
            "last_source=excluded.last_source, last_kind=excluded.last_kind, kid=excluded.kid",
            [(dev, item.node, highs[item.frame.kid.hex()], counts[dev], item.received, item.received,
              item.source, item.frame.kind, item.frame.kid.hex()) for dev, item in touched.items()])
        return outcomes

    def _add_samples(self, conn: sqlite3.Connection, out: list, frame_id: int, dev: str, pack: list) -> None:
        """The sample rows of a verified pack, flattened onto `out` (SAMPLE_COLUMNS values a row).
        The hot path: straight from the decoded CBOR, no intermediate dicts or row tuples."""
        series = self._series
        bt = pack[0][SENML_BT]
        extend = out.extend
        sample_id = self._sample_id
        for rec in pack:
            key = (dev, rec[SENML_N], rec.get(SENML_U, ""))
            sid = series.get(key)
            if sid is None:
                sid = self._series_id(conn, key)
            at = bt + rec[SENML_T] if SENML_T in rec else bt
            sample_id += 1
            value = rec.get(SENML_V)
            if value is not None:
                extend((sample_id, frame_id, sid, at, present(value), None, None, None))
            elif SENML_VS in rec:
                extend((sample_id, frame_id, sid, at, None, rec[SENML_VS], None, None))
            elif SENML_VB in rec:
                extend((sample_id, frame_id, sid, at, None, None, rec[SENML_VB], None))
            else:
                extend((sample_id, frame_id, sid, at, None, None, None, rec[SENML_ERR]))
        self._sample_id = sample_id

    def _series_id(self, conn: sqlite3.Connection, key: tuple[str, str, str]) -> int:
        conn.execute("INSERT OR IGNORE INTO series (device, name, unit) VALUES (?,?,?)", key)
        (sid,) = conn.execute("SELECT id FROM series WHERE device=? AND name=? AND unit=?", key).fetchone()
        self._series[key] = sid
        self._series_added.append(key)
        return sid

    def _next_command(self, conn: sqlite3.Connection, dev: str, now: float) -> tuple[int, bytes] | None:
        """The oldest command for dev not yet delivered (or delivered long ago and unanswered)."""
        if self._commands != "main" and dev in self._commands_given:
            return None  # its 'sent' mark is not written yet: one command a device per batch
        row = conn.execute(
            f"SELECT id, frame FROM {self._commands}.commands WHERE device=? AND expires>? AND (state='pending' OR "
            "(state='sent' AND sent_at<?)) ORDER BY id LIMIT 1", (dev, now, now - self.command_resend)
        ).fetchone()
        if row is None:
            return None
        self._commands_given.add(dev)
        self._write_command("UPDATE commands SET state='sent', sent_at=?, attempts=attempts+1 WHERE id=?",
                            (now, row[0]))
        return row[0], row[1]

    def _command_answered(self, dev: str, records: list[dict], now: float) -> None:
        by_name = {r["n"]: r for r in records}
        ack, result = by_name.get("ack", {}).get("v"), by_name.get("result", {}).get("vs")
        if type(ack) is not int or result not in ("applied", "refused"):
            return
        reason = by_name.get("reason", {}).get("vs")
        self._write_command("UPDATE commands SET state=?, result_at=?, reason=? WHERE device=? AND counter=? "
                            "AND state IN ('pending','sent')", (result, now, reason, dev, ack))

    def _write_command(self, sql: str, args: tuple) -> None:
        if self._commands == "main":
            self.conn.execute(sql, args)  # in the batch's transaction
        else:
            self._command_writes.append((sql, args))

    def _write_commands_elsewhere(self) -> None:
        """Shard 0's command rows, changed after this shard's commit. Should the process die in
        between, a command stays 'pending' (sent again with the next frame; a node applies a
        command counter once) or 'sent' (resent after command_resend, and acknowledged again)."""
        if not self._command_writes:
            return
        try:
            with write_transaction(self._commands_conn):
                for sql, args in self._command_writes:
                    self._commands_conn.execute(sql, args)
        except sqlite3.Error as exc:  # the frames are stored, so they are answered; as above
            log.warning("command states not written to %s: %s", self.path, exc)
        self._command_writes.clear()

    @staticmethod
    def _write_counters(conn: sqlite3.Connection, deltas: dict[str, int]) -> None:
        if deltas:
            conn.executemany(
                "INSERT INTO counters (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value=value+excluded.value",
                [(k, v) for k, v in deltas.items() if v])

    @staticmethod
    def _write_health(conn: sqlite3.Connection, h: Health, now: float) -> None:
        conn.execute(
            "INSERT INTO gateway (worker, pid, listen, started, heartbeat, stopped, batch_pending, exchanges, "
            "dedup_bytes) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (worker) DO UPDATE SET pid=excluded.pid, "
            "listen=excluded.listen, started=excluded.started, heartbeat=excluded.heartbeat, "
            "stopped=excluded.stopped, batch_pending=excluded.batch_pending, exchanges=excluded.exchanges, "
            "dedup_bytes=excluded.dedup_bytes",
            (h.worker, h.pid, h.listen, h.started, now, h.stopped, h.batch_pending, h.exchanges, h.dedup_bytes))

    def housekeeping(self, counter_deltas: dict[str, int], health: Health) -> None:
        """Periodic: counters, heartbeat, commands whose time has passed marked expired, and the
        new samples moved into the index."""
        conn = self.conn
        now = time.time()
        with write_transaction(conn):
            self._write_counters(conn, counter_deltas)
            self._write_health(conn, health, now)
            if self._commands == "main":
                conn.execute("UPDATE commands SET state='expired' WHERE state IN ('pending','sent') "
                             "AND expires<=?", (now,))
            self._move_recent(conn)


def stored_tag(conn: sqlite3.Connection, kid: bytes, counter: int,
               schemas: Sequence[str] = ("main",)) -> bytes | None:
    """The tag of the stored frame with this key id and counter (for the 2.03 answer), looked
    for in each of the schemas (a shard and those attach_shards attached)."""
    for schema in schemas:
        row = conn.execute(f"SELECT tag FROM {schema}.frames WHERE kid=? AND counter=?",
                           (kid.hex(), counter)).fetchone()
        if row:
            return row[0]
    return None


def enqueue_command(db_path: Path | str, device: bytes, frame: bytes, expires: float) -> int:
    """Queues a signed command frame (kind 3) for device; returns the command's id.

    The gateway hands it to the node as the payload of its answer to the node's next frame, marks
    it 'sent', and sends it again (same bytes) on a later frame if the node has not answered with
    an ack frame within 30 s — the node applies a command counter only once. When the node's ack
    arrives the state becomes 'applied' or 'refused'; at `expires` (Unix time) an undelivered or
    unanswered command becomes 'expired'. See docs/gateway.md, "Downlink".
    """
    if len(device) != 6:
        raise FieldnodeError(f"device id must be 6 bytes, got {len(device)}")
    try:
        _, kid, counter, kind = parse_protected(split_envelope(frame)[0])
    except FrameRejected as exc:
        raise FieldnodeError(f"command frame is not a valid frame ({exc}); build it with the "
                             "device's current key") from None
    if kind != KIND_COMMAND:
        raise FieldnodeError(f"frame kind {kind} is not a command (3)")
    if kid[:6] != device:
        raise FieldnodeError(f"command frame's key id {kid.hex()} belongs to device {kid[:6].hex()}, "
                             f"not {device.hex()}")
    now = time.time()
    if expires <= now:
        raise FieldnodeError(f"expiry {expires:.0f} is in the past; give a time after now ({now:.0f})")
    conn = connect(db_path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        cur = conn.execute("INSERT INTO commands (device, counter, frame, created, expires) VALUES (?,?,?,?,?)",
                           (device.hex(), counter, frame, now, expires))
        conn.execute("COMMIT")
        return int(cur.lastrowid)
    finally:
        conn.close()


@dataclass
class CommandInfo:
    id: int
    device: str
    counter: int
    state: str
    created: float
    expires: float
    attempts: int
    sent_at: float | None
    result_at: float | None
    reason: str | None
    frame: bytes = field(repr=False)


def list_commands(db_path: Path | str, device: bytes | None = None, ids: Iterable[int] | None = None
                  ) -> list[CommandInfo]:
    """Commands, newest first, optionally for one device or some ids (for `fieldnode command`)."""
    conn = connect(db_path, create=False)
    try:
        sql = ("SELECT id, device, counter, CASE WHEN state IN ('pending','sent') AND expires<=? "
               "THEN 'expired' ELSE state END, created, expires, attempts, sent_at, result_at, reason, "
               "frame FROM commands")
        args: list = [time.time()]
        where = []
        if device is not None:
            where.append("device=?")
            args.append(device.hex())
        if ids is not None:
            id_list = list(ids)
            where.append(f"id IN ({','.join('?' * len(id_list))})")
            args.extend(id_list)
        if where:
            sql += " WHERE " + " AND ".join(where)
        return [CommandInfo(*row) for row in conn.execute(sql + " ORDER BY id DESC", args)]
    finally:
        conn.close()
