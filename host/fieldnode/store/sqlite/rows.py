"""Multi-row INSERTs: many rows to a statement, each statement text compiled once."""
from __future__ import annotations

import sqlite3

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

