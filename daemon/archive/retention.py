"""Retention per recording category (Art. 11), from ``archive.toml``::

    [categories.scene]
    retention_days = 3650
    [categories.meeting]
    retention = "paper_files"   # as long as the case's paper file: the custodian
                                # records its disposal date (annotation paper_files_until)

A recording whose category is not configured (no one classified it, or its
category is unknown here) keeps the **longest** fixed retention configured,
never the shortest (ADR 0031). A legal hold stops deletion whatever the dates.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

DAY_NS = 86_400 * 10**9
PAPER_FILES = "paper_files"


class RetentionConfigError(Exception):
    """A bad archive.toml; names the file and key."""


@dataclass(frozen=True)
class CategoryRetention:
    name: str
    days: int | None  # None: follows the paper files


@dataclass(frozen=True)
class RetentionPolicy:
    categories: dict[str, CategoryRetention]

    @classmethod
    def default(cls) -> RetentionPolicy:
        return cls({"scene": CategoryRetention("scene", 3650),
                    "meeting": CategoryRetention("meeting", None)})

    @classmethod
    def from_toml(cls, text: str, where: str = "archive.toml") -> RetentionPolicy:
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise RetentionConfigError(f"{where}: {e}") from e
        tables = raw.get("categories")
        if not isinstance(tables, dict) or not tables:
            raise RetentionConfigError(f"{where}: needs at least one [categories.NAME] table")
        categories = {}
        for name, table in tables.items():
            key = f"{where}: categories.{name}"
            if not isinstance(table, dict):
                raise RetentionConfigError(f"{key}: must be a table")
            unknown = set(table) - {"retention_days", "retention", "description"}
            if unknown:
                raise RetentionConfigError(f"{key}.{sorted(unknown)[0]}: unknown key")
            if table.get("retention") == PAPER_FILES and "retention_days" not in table:
                categories[name] = CategoryRetention(name, None)
            elif "retention" in table:
                raise RetentionConfigError(f"{key}.retention: only \"{PAPER_FILES}\" is known "
                                           "(or give retention_days alone)")
            else:
                days = table.get("retention_days")
                if not isinstance(days, int) or isinstance(days, bool) or days < 1:
                    raise RetentionConfigError(f"{key}.retention_days: must be a whole number "
                                               "of days >= 1")
                categories[name] = CategoryRetention(name, days)
        return cls(categories)

    @classmethod
    def load(cls, path: Path) -> RetentionPolicy:
        return cls.from_toml(path.read_text(), str(path)) if path.is_file() else cls.default()

    def longest_days(self) -> int | None:
        fixed = [c.days for c in self.categories.values() if c.days is not None]
        return max(fixed) if fixed else None

    def retention_for(self, category: str) -> CategoryRetention:
        """The rule for a category; an unconfigured one gets the longest fixed one."""
        if category in self.categories:
            return self.categories[category]
        return CategoryRetention("unclassified", self.longest_days())

    def until_ns(self, category: str, recorded_utc_ns: int,
                 paper_files_until_ns: int | None) -> int | None:
        """When retention ends, or None if it is not known yet (paper files without a date)."""
        rule = self.retention_for(category)
        if rule.days is None:
            return paper_files_until_ns
        return recorded_utc_ns + rule.days * DAY_NS
