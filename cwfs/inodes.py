"""Inode numbers for paths, stable for as long as the kernel holds a reference.

The kernel counts lookups of every inode it was given (lookup, readdirplus, create)
and gives them back with forget; an inode number stays bound to its path until its
count drops to zero, and numbers are never reused within a mount.
"""

from __future__ import annotations

import itertools

from cwfs.errors import NotFound

ROOT_INODE = 1
DETACHED = "\0detached"  # the path of an inode whose name was replaced: matches no key


class InodeTable:
    """Two-way map between inode numbers and paths relative to the mount root."""

    def __init__(self) -> None:
        self._paths: dict[int, str] = {ROOT_INODE: ""}
        self._inodes: dict[str, int] = {"": ROOT_INODE}
        # Kernel references per inode, for those with more than one: readdirplus hands
        # out most inodes once, and a dict entry apiece would cost 40 bytes a name.
        self._lookups: dict[int, int] = {}
        self._next = itertools.count(ROOT_INODE + 1)

    def path(self, inode: int) -> str:
        """The path bound to ``inode``; NotFound if the kernel forgot it or its name was replaced."""
        path = self._paths.get(inode, DETACHED)
        if path == DETACHED:
            raise NotFound(f"inode {inode} has no name (forgotten, or its name was replaced)")
        return path

    def number(self, path: str) -> int:
        """The inode of ``path`` without counting a reference (``.`` and ``..`` in readdir);
        the root's for a path the kernel does not hold."""
        return self._inodes.get(path, ROOT_INODE)

    def ref(self, path: str) -> int:
        """The inode for ``path``, counting one more kernel reference to it."""
        inode = self._inodes.get(path)
        if inode is None:
            inode = next(self._next)
            self._inodes[path] = inode
            self._paths[inode] = path
        elif inode != ROOT_INODE:
            self._lookups[inode] = self._lookups.get(inode, 1) + 1
        return inode

    def forget(self, inode: int, count: int) -> str | None:
        """Drop ``count`` kernel references; unbind the inode when none are left.

        Returns the path that is no longer bound, if this unbound it.
        """
        if inode == ROOT_INODE or inode not in self._paths:
            return None
        left = self._lookups.pop(inode, 1) - count
        if left > 1:
            self._lookups[inode] = left
            return None
        if left == 1:
            return None
        path = self._paths.pop(inode)
        if self._inodes.get(path) == inode:
            del self._inodes[path]
        return None if path == DETACHED else path

    def detach(self, path: str) -> None:
        """``path`` was removed: its inode, still open maybe, no longer has a name."""
        inode = self._inodes.pop(path, None)
        if inode is not None and inode != ROOT_INODE:
            self._paths[inode] = DETACHED

    def rename(self, old: str, new: str) -> None:
        """Rebind ``old`` (and, for a directory, every path below it) to ``new``.

        An inode bound to ``new`` before (the replaced file) keeps its number but no
        longer has a path, as a deleted file that is still open.
        """
        replaced = self._inodes.pop(new, None)
        if replaced is not None:
            self._paths[replaced] = DETACHED
        below = old + "/"
        for path in [p for p in self._inodes if p == old or p.startswith(below)]:
            inode = self._inodes.pop(path)
            moved = new + path[len(old) :]
            self._inodes[moved] = inode
            self._paths[inode] = moved
