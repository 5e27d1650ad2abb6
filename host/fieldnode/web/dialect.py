"""What differs between the two engines' SQL for the queries the page shares (reader.py,
series.py, buckets.py), so each query is written once:

    placeholders   written :name; psycopg takes them as %(name)s
    sample tables  SQLite keeps the newest seconds in samples_recent beside samples; PostgreSQL
                   has one samples table
    integers       a float's integer part: CAST(... AS INTEGER) truncates in SQLite and rounds in
                   PostgreSQL, so trunc() there
    a sample's id  the samples of one frame: consecutive ids from SQLite's one writer; on
                   PostgreSQL several gateways draw ids from one sequence at once, so a frame's
                   ids may lie further apart
    tables         a database an older gateway made may lack one (rejections, rollups)
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..store.sqlite.rollups import MINUTE_OF_TIME

_NAMED = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")


@dataclass(frozen=True)
class Dialect:
    name: str
    sample_tables: tuple[str, ...]
    minute_of_time: str  # floor(time / 60) as an integer, as SQLite's rollups number minutes
    integer_of: str  # {} -> the integer part of a non-negative float expression
    frame_window: int  # a frame's samples lie within this many ids of any one of them
    pyformat: bool  # placeholders as %(name)s
    table_sql: str

    def sql(self, text: str) -> str:
        return _NAMED.sub(r"%(\1)s", text) if self.pyformat else text

    def run(self, conn: Any, text: str, params: dict | None = None) -> Any:
        """conn.execute of a query written with :name placeholders; its cursor."""
        if params is None:  # sqlite3 takes no None for "no parameters"
            return conn.execute(self.sql(text))
        return conn.execute(self.sql(text), params)

    def has_table(self, conn: Any, name: str) -> bool:
        return self.run(conn, self.table_sql, {"name": name}).fetchone() is not None

    def samples(self, columns: str, where: str) -> str:
        """Every sample table's rows matching `where`, as one subquery named `s`."""
        union = " UNION ALL ".join(f"SELECT {columns} FROM {table} WHERE {where}" for table in self.sample_tables)
        return f"({union}) AS s"

    def integer(self, expr: str) -> str:
        return self.integer_of.format(expr)


SQLITE = Dialect(name="sqlite", sample_tables=("samples", "samples_recent"), minute_of_time=MINUTE_OF_TIME,
                 integer_of="CAST({} AS INTEGER)", frame_window=64, pyformat=False,
                 table_sql="SELECT 1 FROM sqlite_master WHERE type='table' AND name=:name")
# MINUTE_OF_TIME (rollups.py) step for step, so a sample falls in the same minute on both engines.
POSTGRES = Dialect(name="postgresql", sample_tables=("samples",),
                   minute_of_time="(trunc(time / 60)::bigint - (trunc(time / 60) * 60 > time)::int)",
                   integer_of="trunc({})::bigint", frame_window=4096, pyformat=True,
                   table_sql="SELECT 1 WHERE to_regclass(:name) IS NOT NULL")
