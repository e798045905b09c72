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


class DelimitedNames:
    """Entries of one directory from its delimited listing pages, each name once.

    Keys arrive in order, and a later key can give an earlier name again only by
    extending it: the object ``a``, then ``a.rclonelink`` (a link) or the prefix ``a/``
    (a directory), either of which wins over a file. So an entry is held back while
    the keys that arrive still extend its name, and goes out once one does not: what
    is held is at most a few names, however large the directory, where a set of every
    name given out would grow with it. Names in ``listed`` (the flat pass before) are
    not given again.
    """

    def __init__(self, listed: set[str], hidden: Callable[[str], None]) -> None:
        self._listed = listed
        self._hidden = hidden  # called with the key of an object a name of its own hides
        self._held: list[tuple[str, Attrs, str]] = []  # name, attributes, key

    def add(self, rest: str, key: str, name: str, attrs: Attrs) -> list[tuple[str, Attrs]]:
        """Take the entry ``name`` of the key ``key`` (``rest`` after the directory's
        prefix); return the entries no later key can repeat."""
        ready = [(n, a) for n, a, _ in self._held if not rest.startswith(n)]
        self._held = [held for held in self._held if rest.startswith(held[0])]
        if name in self._listed:
            if not attrs.is_dir:
                self._hidden(key)
            return ready
        for index, (held_name, held_attrs, held_key) in enumerate(self._held):
            if held_name == name:
                if (attrs.is_dir or attrs.is_link) and not held_attrs.is_dir:
                    self._held[index] = (name, attrs, key)
                    self._hidden(held_key)
                elif not attrs.is_dir:
                    self._hidden(key)
                return ready
        self._held.append((name, attrs, key))
        return ready

    def rest(self) -> list[tuple[str, Attrs]]:
        """The entries still held: the listing ended."""
        ready = [(name, attrs) for name, attrs, _ in self._held]
        self._held = []
        return ready
