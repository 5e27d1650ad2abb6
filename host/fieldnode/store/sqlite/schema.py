"""The SQLite schema: tables, its version, and the migrations from older versions."""
from __future__ import annotations

import sqlite3

from ...infra.errors import FieldnodeError
from .declarations import DECLARATIONS_TABLE
from .rollups import ensure_rollups
from .transaction import write_transaction

SCHEMA_VERSION = 3  # 2: readings as series + samples (a view keeps the old shape); replay state per key id
# 3: new samples land in samples_recent and are moved to samples in bulk

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
-- The most recent refused datagrams (at most REJECTIONS_KEPT): who sends what the gateway refuses.
CREATE TABLE IF NOT EXISTS rejections (
    id       INTEGER PRIMARY KEY,
    time     REAL NOT NULL,
    source   TEXT NOT NULL,
    reason   TEXT NOT NULL,
    detail   TEXT NOT NULL DEFAULT '',
    device   TEXT NOT NULL DEFAULT ''
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



def ensure_schema(conn: sqlite3.Connection) -> None:
    # Every statement is IF NOT EXISTS, so two processes creating the schema at once is harmless.
    if _schema_version(conn) == 1:
        _migrate_from_1(conn)
    if _schema_version(conn) == 2:
        _migrate_from_2(conn)
    conn.executescript(SCHEMA)
    conn.execute(DECLARATIONS_TABLE)  # frame format v2; within schema 3 (declarations.py)
    ensure_rollups(conn)  # the charts' minute rollups; within schema 3 (rollups.py)
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

