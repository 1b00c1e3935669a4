"""The project's exceptions. Every error a user can hit is one of these, with a message that
names the file, table, row or field at fault and says how to fix it."""

from __future__ import annotations


class MastersError(Exception):
    """Base of every error masters-distill raises on purpose."""


class ConfigError(MastersError):
    """A configuration value or key is invalid."""


class SchemaMismatchError(MastersError):
    """Data handed to the catalog does not match a table's schema, or holds a value the schema
    refuses (a NaN where a number is meant, a state outside its enum, a length that disagrees).
    ``row`` is the 0-based row of the table handed in, when one row is at fault."""

    def __init__(self, table: str, column: str | None, problem: str, row: int | None = None):
        self.table, self.column, self.row = table, column, row
        where = f"table '{table}'" + (f", column '{column}'" if column else "") + (
            f", row {row}" if row is not None else "")
        super().__init__(f"schema mismatch in {where}: {problem}")


class UnknownKindError(ConfigError):
    """A registry (judges, generation backends, divergences) has nothing under that name."""

    def __init__(self, what: str, name: str, known: list[str]):
        self.what, self.name, self.known = what, name, known
        super().__init__(f"unknown {what} {name!r}; known: {', '.join(known)}")


class MissingExtraError(MastersError):
    """An optional dependency is not installed; the message names the extra that brings it."""

    def __init__(self, package: str, extra: str, needed_for: str):
        self.package, self.extra = package, extra
        super().__init__(f"{needed_for} needs the Python package '{package}', which is not installed: "
                         f"pip install 'masters-distill[{extra}]' (from a checkout: pip install -e '.[{extra}]')")


class InputError(MastersError):
    """A file, folder or value a user handed in cannot be used (missing, unreadable, truncated);
    the message names it and says what was expected."""


class CatalogError(MastersError):
    """The catalog cannot be opened or used."""


class CatalogLockedError(CatalogError):
    """Another process holds the catalog's write lock."""


class UnknownVersionError(CatalogError):
    """A catalog version that does not exist was asked for."""


class ReadOnlyError(CatalogError):
    """A statement that writes was sent through a read-only path."""


class SnapshotError(MastersError):
    """A snapshot cannot be created or read."""


class SnapshotExistsError(SnapshotError):
    """A snapshot with that name exists already; snapshots are never overwritten."""


class UnknownSnapshotError(SnapshotError):
    """No snapshot has that name."""


class SnapshotVerificationError(SnapshotError):
    """A snapshot folder does not match its manifest (missing, changed, extra or incomplete)."""

    def __init__(self, folder: str, problems: list[str]):
        self.folder, self.problems = folder, problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"snapshot {folder} failed verification:\n{lines}\n"
            "A snapshot is immutable: re-create it under a new name with `masters snapshot`."
        )


class SourceDataError(MastersError):
    """Rows of a question source are unusable (missing or unreadable image, empty question...)."""

    def __init__(self, source: str, problems: list[str], total_rows: int):
        self.source, self.problems = source, problems
        shown = "\n".join(f"  - {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(
            f"{len(problems)} bad row(s) of {total_rows} in {source}:\n{shown}{more}\n"
            "Fix the data or the column mapping, or pass --skip-bad (skip_bad=True) to skip them.")


class PublishError(MastersError):
    """A snapshot cannot be exported, published to or imported from the Hugging Face Hub."""


class TrainingDiverged(MastersError):
    """Training produced a non-finite loss or gradient; nothing was saved."""
