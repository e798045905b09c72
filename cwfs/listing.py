"""A subtree's directory listings, built from one flat (no delimiter) listing.

ListObjectsV2 without a delimiter returns every key below a prefix, 1,000 a page,
depth-first in key order. From those keys the listing of every directory below can be
derived, so a recursive walk (find, du, os.walk) costs about N/1000 requests for N
objects instead of at least one request per directory. When the walk stops early
(the subtree is too large to list flat), the directories whose keys all lay before the
last key seen are still complete.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from cwfs.attrs import DIRECTORY, Attrs, link_name
from cwfs.store import ListPage, ObjectInfo


def join(directory: str, name: str) -> str:
    """The path of ``name`` in ``directory`` ("" is the mount's root)."""
    return f"{directory}/{name}" if directory else name


class SubtreeListing:
    """Directory listings under ``prefix``, relative paths ("" is the top) to entries."""

    def __init__(
        self, prefix: str, usable: Callable[[str, str], bool], attrs: Callable[[ObjectInfo], Attrs]
    ) -> None:
        self._prefix = prefix
        self._usable = usable
        self._attrs = attrs
        self.dirs: dict[str, dict[str, Attrs]] = {"": {}}
        self.last_key: str | None = None
        self.pages = 0
        self.next_token: str | None = None  # where the listing continues
        self.complete = False  # whether every key below the prefix was added
        self.hidden: list[str] = []  # keys of objects hidden by a directory of the same name
        self.markers: dict[str, Attrs] = {}  # directory -> its marker object's attributes
        self.since = 0  # the namespace's change generation when the listing was requested

    def add_page(self, page: ListPage) -> None:
        self.add(page.objects)
        self.pages += 1
        self.next_token = page.next_token
        self.complete = page.next_token is None

    def add(self, objects: Iterable[ObjectInfo]) -> None:
        for info in objects:
            self.last_key = info.key
            parts = info.key[len(self._prefix) :].split("/")
            if not all(self._usable(info.key, part) for part in parts[:-1]):
                continue
            directory = ""
            for part in parts[:-1]:
                entries = self.dirs[directory]
                existing = entries.get(part)
                if existing is None or not existing.is_dir:
                    if existing is not None:
                        self.hidden.append(self._prefix + join(directory, part))
                    entries[part] = DIRECTORY
                directory = join(directory, part)
                self.dirs.setdefault(directory, {})
            name = parts[-1]
            if name == "":  # a directory's marker object: it carries the directory's metadata
                self.markers[directory] = attrs = self._attrs(info)
                if directory:
                    parent, _, last = directory.rpartition("/")
                    self.dirs[parent][last] = attrs
                continue
            entries = self.dirs[directory]
            name = link_name(name) or name
            existing = entries.get(name)
            if existing is not None and (existing.is_dir or existing.is_link):
                self.hidden.append(info.key)  # a directory, or a link, of the same name wins
            elif self._usable(info.key, name):
                entries[name] = self._attrs(info)

    def complete_dirs(self) -> Iterator[str]:
        """Directories below the top whose every key came before the last key seen."""
        last = self.last_key or ""
        for directory in self.dirs:
            if directory:
                start = f"{self._prefix}{directory}/"
                if last > start and not last.startswith(start):
                    yield directory
