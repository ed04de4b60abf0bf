"""Snowflake SQL on your laptop for DAG tests: fakesnow, made as strict as Snowflake about
transactions. ``with strict_fakesnow(directory):`` sends every ``snowflake.connector``
connection of the process (``SnowflakeHook``'s included) to DuckDB files in ``directory``, and
gives fakesnow's cursors the ``connection`` attribute a Snowflake cursor has (the bulk path
hands it to ``write_pandas``).

fakesnow runs DDL inside an explicit ``BEGIN`` as DuckDB would (rolled back with it), where
Snowflake commits the open transaction. Here any such statement, and any ``write_pandas`` (a
temporary stage), inside a transaction raises ``AssertionError``: a test on this proves the
code never does it. Needs ``fakesnow`` (``pip install fakesnow``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

#: Statements that commit the open transaction on a real Snowflake account.
SNOWFLAKE_DDL = ("CREATE", "ALTER", "DROP", "TRUNCATE", "UNDROP", "COMMENT", "GRANT", "REVOKE", "PUT")


@contextmanager
def strict_fakesnow(directory: str | Path) -> Iterator[None]:
    import fakesnow
    import fakesnow.fakes
    import fakesnow.transforms
    from fakesnow.cursor import FakeSnowflakeCursor

    original_execute = FakeSnowflakeCursor.execute
    original_write_pandas = fakesnow.fakes.write_pandas
    original_comment = fakesnow.transforms.extract_comment_on_table

    def execute(self: Any, command: str, *args: Any, **kwargs: Any) -> Any:
        word = command.lstrip().split(None, 1)[0].upper().rstrip(";") if command.strip() else ""
        conn = self._conn
        if getattr(conn, "_clarky_explicit", False) and word in SNOWFLAKE_DDL:
            raise AssertionError(
                f"DDL inside an explicit transaction (Snowflake commits here): {command[:120]}"
            )
        result = original_execute(self, command, *args, **kwargs)
        if word in ("BEGIN", "START"):
            conn._clarky_explicit = True
        elif word in ("COMMIT", "ROLLBACK"):
            conn._clarky_explicit = False
        return result

    def write_pandas(conn: Any, *args: Any, **kwargs: Any) -> Any:
        if getattr(conn, "_clarky_explicit", False):
            raise AssertionError("write_pandas (CREATE TEMP STAGE) inside an explicit transaction")
        return original_write_pandas(conn, *args, **kwargs)

    def extract_comment_on_table(expression: Any) -> Any:
        """fakesnow 0.12 emulates MERGE with a temporary table and records its (None) comment in
        its ``_fs_global`` database, which DuckDB refuses inside BEGIN ... COMMIT ("a single
        transaction can only write to a single attached database"). Dropping the empty comment
        fixes the emulator only; the SQL sent is Snowflake's own MERGE."""
        new = original_comment(expression)
        comment = new.args.get("table_comment")
        if comment is not None and comment[1] is None:
            new.args.pop("table_comment")
        return new

    with ExitStack() as stack:
        stack.enter_context(mock.patch.object(FakeSnowflakeCursor, "execute", execute))
        stack.enter_context(mock.patch.object(fakesnow.fakes, "write_pandas", write_pandas))
        stack.enter_context(
            mock.patch.object(
                FakeSnowflakeCursor, "connection", property(lambda cursor: cursor._conn), create=True
            )
        )
        stack.enter_context(
            mock.patch.object(fakesnow.transforms, "extract_comment_on_table", extract_comment_on_table)
        )
        stack.enter_context(fakesnow.patch(db_path=str(directory)))
        yield
