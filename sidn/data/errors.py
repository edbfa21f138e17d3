"""The error every data reader of ``sidn.data`` raises for a missing or unusable file or folder."""

from __future__ import annotations

import os


class DataError(ValueError):
    """A data file or folder is missing or unusable. The message starts with its path."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):  # type: ignore[no-untyped-def]  # picklable across processes (Dask)
        return (type(self), (self.path, self.problem))
