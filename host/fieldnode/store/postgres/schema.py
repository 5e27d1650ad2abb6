"""The PostgreSQL schema: the SQLite store's tables, with the same names and columns (times as
Unix seconds, devices and key ids as lowercase hex) so a query written for one reads the other.

Differences, each for the engine: one `samples` table (SQLite's samples_recent, its remedy for
rewriting whole index pages at every commit, is not carried over; bench/store_scaleout.py
measures the WAL a frame costs here);
`replay` carries a 64-bit bitmap of the window below the highest counter, so that one statement
decides and records a frame's counter for every gateway at once (replay.py); the `gateway` health
row is per machine, listening address and worker, as several gateways share the database.

Version 2 added `declarations` (frame format v2) and `rejections` (the web page's view of refused
datagrams): a database of version 1 gets them, all statements being CREATE ... IF NOT EXISTS, the
next time a gateway opens it."""
from __future__ import annotations

import psycopg

SCHEMA_VERSION = 2
# Two gateways starting together must not both create the tables: they take this lock first.
SCHEMA_LOCK = 0x6669656C  # 'fiel'

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS frames (
    id        BIGINT PRIMARY KEY,
    device    TEXT    NOT NULL,
    counter   BIGINT  NOT NULL,
    kid       TEXT    NOT NULL,
    kind      INTEGER NOT NULL,
    alg       INTEGER NOT NULL,
    tag       BYTEA   NOT NULL,
    -- NaN is a value to PostgreSQL, not to SQLite (where it is NULL): refused alike.
    base_time DOUBLE PRECISION NOT NULL CHECK (base_time <> 'NaN'),
    received  DOUBLE PRECISION NOT NULL,
    source    TEXT    NOT NULL,
    raw       BYTEA   NOT NULL,
    UNIQUE (kid, counter)
);
CREATE SEQUENCE IF NOT EXISTS frames_id_seq OWNED BY frames.id;
-- The replay state of a key id: the highest counter stored, and which of the 63 counters below
-- it are stored too (bit i: counter highest_counter - i; bit 0 is the highest itself).
CREATE TABLE IF NOT EXISTS replay (
    kid             TEXT PRIMARY KEY,
    device          TEXT   NOT NULL,
    highest_counter BIGINT NOT NULL,
    seen            BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS series (
    id     BIGSERIAL PRIMARY KEY,
    device TEXT NOT NULL,
    name   TEXT NOT NULL,
    unit   TEXT NOT NULL DEFAULT '',
    UNIQUE (device, name, unit)
);
-- frame_id and series name rows of frames and series, without FOREIGN KEY constraints: a
-- constraint is a trigger run for every sample row (half the cost of a COPY), and SQLite does not
-- enforce the ones it declares either. The writer makes both rows in the same transaction.
CREATE TABLE IF NOT EXISTS samples (
    id       BIGINT PRIMARY KEY,
    frame_id BIGINT NOT NULL,
    series   BIGINT NOT NULL,
    time     DOUBLE PRECISION NOT NULL,
    value    DOUBLE PRECISION,
    string   TEXT,
    bool     BOOLEAN,
    err      TEXT
);
CREATE SEQUENCE IF NOT EXISTS samples_id_seq OWNED BY samples.id;
CREATE INDEX IF NOT EXISTS samples_by_series ON samples (series, time);
CREATE OR REPLACE VIEW readings AS
    SELECT s.id AS id, s.frame_id AS frame_id, r.device AS device, r.name AS name, s.time AS time,
           s.value AS value, s.string AS string, s.bool AS bool, s.err AS err, NULLIF(r.unit, '') AS unit
    FROM samples s JOIN series r ON r.id = s.series;
CREATE TABLE IF NOT EXISTS devices (
    device          TEXT PRIMARY KEY,
    name            TEXT,
    highest_counter BIGINT NOT NULL,
    frames          BIGINT NOT NULL DEFAULT 0,
    first_seen      DOUBLE PRECISION NOT NULL,
    last_seen       DOUBLE PRECISION NOT NULL,
    last_source     TEXT,
    last_kind       INTEGER,
    kid             TEXT
);
-- One row a counter and gateway (host/pid/worker): gateways never wait for one another here.
CREATE TABLE IF NOT EXISTS counters (gateway TEXT NOT NULL, name TEXT NOT NULL, value BIGINT NOT NULL,
                                     PRIMARY KEY (gateway, name));
CREATE TABLE IF NOT EXISTS outbox (
    id      BIGSERIAL PRIMARY KEY,
    topic   TEXT NOT NULL,
    payload TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL
);
-- The MQTT publisher's state: one row, written by the gateway that publishes (see gateway/mqtt_pg.py).
CREATE TABLE IF NOT EXISTS mqtt_state (
    id        INTEGER PRIMARY KEY CHECK (id = 1),
    url       TEXT NOT NULL,
    state     TEXT NOT NULL,
    detail    TEXT NOT NULL DEFAULT '',
    published BIGINT NOT NULL DEFAULT 0,
    updated   DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS commands (
    id        BIGSERIAL PRIMARY KEY,
    device    TEXT    NOT NULL,
    counter   BIGINT  NOT NULL,
    frame     BYTEA   NOT NULL,
    created   DOUBLE PRECISION NOT NULL,
    expires   DOUBLE PRECISION NOT NULL,
    state     TEXT    NOT NULL DEFAULT 'pending',
    attempts  INTEGER NOT NULL DEFAULT 0,
    sent_at   DOUBLE PRECISION,
    result_at DOUBLE PRECISION,
    reason    TEXT
);
CREATE INDEX IF NOT EXISTS commands_open ON commands (device, id) WHERE state IN ('pending', 'sent');
CREATE TABLE IF NOT EXISTS gateway (
    host          TEXT    NOT NULL,
    listen        TEXT    NOT NULL,
    worker        INTEGER NOT NULL,
    pid           INTEGER NOT NULL,
    started       DOUBLE PRECISION NOT NULL,
    heartbeat     DOUBLE PRECISION NOT NULL,
    stopped       DOUBLE PRECISION,
    batch_pending INTEGER NOT NULL DEFAULT 0,
    exchanges     INTEGER NOT NULL DEFAULT 0,
    dedup_bytes   BIGINT  NOT NULL DEFAULT 0,
    store_outages INTEGER NOT NULL DEFAULT 0,  -- times this gateway lost the database since it started
    store_detail  TEXT    NOT NULL DEFAULT '', -- the last outage: when, how long, why
    PRIMARY KEY (host, listen, worker)
);
-- Frame format v2 declarations, by device and declaration id (store/sqlite/declarations.py): a
-- declaration is outside the replay window, so it is not a frames row.
CREATE TABLE IF NOT EXISTS declarations (
    device   TEXT   NOT NULL,
    id       TEXT   NOT NULL,
    payload  BYTEA  NOT NULL,
    kid      TEXT   NOT NULL,
    counter  BIGINT NOT NULL,
    received DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (device, id)
);
-- The most recent refused datagrams of every gateway (at most REJECTIONS_KEPT, the newest ids).
CREATE TABLE IF NOT EXISTS rejections (
    id     BIGSERIAL PRIMARY KEY,
    time   DOUBLE PRECISION NOT NULL,
    source TEXT NOT NULL,
    reason TEXT NOT NULL,
    detail TEXT NOT NULL DEFAULT '',
    device TEXT NOT NULL DEFAULT ''
);
"""


def schema_present(conn: psycopg.Connection) -> bool:
    return conn.execute("SELECT to_regclass('meta') IS NOT NULL AND to_regclass('frames') IS NOT NULL"
                        ).fetchone()[0]


def ensure_schema(conn: psycopg.Connection) -> None:
    """The tables, made (or an older version's completed) once however many gateways start at
    the same moment; a newer fieldnode's version number is left as it is."""
    if schema_present(conn):
        version = conn.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if version is not None and int(version[0]) >= SCHEMA_VERSION:
            return
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        conn.execute(SCHEMA)
        conn.execute("INSERT INTO meta AS m (key, value) VALUES ('schema', %s) ON CONFLICT (key) DO UPDATE "
                     "SET value=excluded.value WHERE m.value::int < excluded.value::int", (str(SCHEMA_VERSION),))
