"""The SQLite back end: the embedded default, nothing to install.

One writer connection per gateway process, used from one thread only (the gateway's commit
thread). A batch of frames is one transaction; the gateway answers the nodes only after it
commits. WAL mode lets `fieldnode status`, the MQTT publisher and `fieldnode command` read and
write beside it. Devices are stored as 12 lowercase hex digits so the tables are easy to query
by hand.

Shards: with `--workers N` each worker writes its own database file (`gateway.db`,
`gateway.shard1.db`, ...) and owns the devices `owner_of` gives it, so N workers are N SQLite
writers. Every writer attaches the other shards read-only: a device's frames from a run with
another N stay part of its replay state. Commands live in shard 0 (`gateway.db`), which is what
`fieldnode command` writes.

    connection   opening a database file (private, WAL, schema in place)
    transaction  BEGIN IMMEDIATE ... COMMIT
    schema       tables, the schema version and the migrations to it
    shards       one file a worker, and attaching the others
    rows         multi-row INSERTs
    replay       the replay state as the tables hold it
    samples      series and sample rows (the hot path)
    rollups      per series and minute: count, sums, min, max of the samples (for charts)
    batch        the rows of one batch of frames
    commands     the command queue's rows, and the writer's part in delivering them
    writer       Store: the writer a gateway worker runs
"""
