"""Where the gateway keeps what it receives: frames, readings, replay state, the command queue.

What every back end shares is in this package's own modules:
    records       what the writer takes (StoreItem) and gives back (Outcome), the health row
    owners        which worker writes a device's frames when N workers run
    commandqueue  the command queue: the contract between `fieldnode command` and the gateway
    location      where the store is when --db is not given

Engine-specific code lives in one sub-package a back end: sqlite/ (the embedded default: one
file a worker, WAL). A second engine (PostgreSQL, issue 16) goes beside it as its own package
with the same writer interface (open, replay_state, commit, housekeeping, close).
"""
