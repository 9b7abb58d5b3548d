"""Errors that argusrec raises for bad input.

Every problem with a user's data or arguments is reported as a :class:`DataError` that names
where it is (file, column, row), what was expected and how to fix it, so the CLI can print one
clear message instead of a traceback from deep inside polars or torch.
"""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Bad input found at the boundary.

    Args:
        problem: what is wrong, in one sentence.
        path: the file or directory it was found in.
        column: the column, where one is to blame.
        row: the 1-based data row (not counting a header line), where one is to blame.
        fix: what the user should do about it.
    """

    def __init__(
        self,
        problem: str,
        *,
        path: str | Path | None = None,
        column: str | None = None,
        row: int | None = None,
        fix: str | None = None,
    ) -> None:
        self.problem = problem
        self.path = None if path is None else str(path)
        self.column = column
        self.row = row
        self.fix = fix
        super().__init__(self.message())

    def message(self) -> str:
        where = []
        if self.path is not None:
            where.append(self.path)
        if self.column is not None:
            where.append(f"column '{self.column}'")
        if self.row is not None:
            where.append(f"row {self.row}")
        text = (": ".join([", ".join(where), self.problem]) if where else self.problem)
        if self.fix:
            text += f"\n  fix: {self.fix}"
        return text
