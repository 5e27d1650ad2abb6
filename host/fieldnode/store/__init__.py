"""Where the gateway keeps what it receives: frames, readings, replay state, the command queue.

What every back end shares is in this package's own modules:
    records       what the writer takes (StoreItem) and gives back (Outcome), the health row
    owners        which worker writes a device's frames when N workers run
    commandqueue  the command queue: the contract between `fieldnode command` and the gateway
    location      where the store is when --db is not given
    target        what --db names: a SQLite path or a PostgreSQL URI (redacted for messages)
    backend       the one store interface (Writer, TagReader) and the factory that picks the engine

Engine-specific code lives in one sub-package a back end, imported only when chosen: sqlite/
(the embedded default: one file a worker, WAL) and postgres/ (one database any number of
gateways share: the replay window and the command queue are rows they all use).
"""
