"""Issue 12 §7: a model-based test. Random sequences of file system steps run on a real
cwfs mount and on a plain local directory (the reference), compared after every step.

Steps: create and open (several flag sets), write at offsets (past the end: holes),
append, truncate and ftruncate (grow and shrink), read, fsync, close, rename (files and
directories), unlink, mkdir, rmdir, chmod, and puts and deletes made in the bucket by
another client. After every step both trees must show the same names, types, sizes,
permission bits and contents, and every step must give the same result or errno on both.
After a close or fsync the object must hold the reference file's bytes (writes reach the
bucket at close/fsync), and at the end of each example every object equals its file.

Where cwfs documents a deliberate difference from POSIX (docs/semantics.md), the model
expects that difference explicitly, with a comment citing the doc. Differences it found
that the docs do not explain are reduced to plain tests in tests/test_model_findings.py.

Bounded for ``make test``; a longer run on demand::

    CWFS_MODEL_EXAMPLES=500 CWFS_MODEL_STEPS=40 .venv/bin/python -m pytest tests/test_model.py

``CWFS_MODEL_EXAMPLES`` (default 30) examples for the plain test and a tenth of that
with faults, of up to ``CWFS_MODEL_STEPS`` (default 14) steps; ``CWFS_MODEL_SEED=N``
draws other examples than the fixed default ones; ``CWFS_MODEL_SHRINK=1`` shrinks a
failure to a minimal sequence (minutes: every attempt runs on the mount).
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, seed, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

EXAMPLES = int(os.environ.get("CWFS_MODEL_EXAMPLES", "30"))
STEPS = int(os.environ.get("CWFS_MODEL_STEPS", "14"))
SEED = os.environ.get("CWFS_MODEL_SEED")
# Shrinking a failure can take minutes on a real mount: on demand only.
SHRINK = os.environ.get("CWFS_MODEL_SHRINK", "0") == "1"
# Not 0: the metadata cache is part of what is checked (our own changes must show at
# once, docs/semantics.md "Consistency model"); another client's change shows after the
# TTL, so a step in the bucket waits that long.
TTL = 0.2
MOUNT_OPTIONS = ("--metadata-ttl", str(TTL), "--negative-ttl", str(TTL))
MAX_HANDLES = 4

# Few names, so that steps meet each other's results; the shallow ones more often.
PATHS = ("a", "b", "d", "a", "b", "d", "d/a", "d/b", "d/e", "d/e/a", "e", "e/a")
MODES = (0o644, 0o600, 0o755, 0o640, 0o444, 0o700)
DIR_MODES = (0o755, 0o700, 0o750)
OPEN_FLAGS = {
    "w": os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
    "w+": os.O_RDWR | os.O_CREAT | os.O_TRUNC,
    "x": os.O_RDWR | os.O_CREAT | os.O_EXCL,
    "a": os.O_WRONLY | os.O_CREAT | os.O_APPEND,
    "rw+c": os.O_RDWR | os.O_CREAT,
    "r": os.O_RDONLY,
    "r+": os.O_RDWR,
    "a+": os.O_RDWR | os.O_APPEND,
    "r+t": os.O_RDWR | os.O_TRUNC,
}
# The external client uses the second endpoint: fault rules name "primary", the mount's.
FAULTS = (
    # Each retry waits up to 1 s, and a SlowDown pauses the whole mount: rates that keep
    # a run of `make test` short, while every kind of fault still comes up.
    {"op": None, "status": 503, "code": "SlowDown", "rate": 0.05},
    {"op": None, "status": 500, "code": "InternalError", "rate": 0.05},
    {"op": None, "status": 500, "code": "InternalError", "phase": "after", "rate": 0.1},
    {"op": "GetObject", "phase": "cut", "cut_at": 100, "rate": 0.3},
)

paths = st.sampled_from(PATHS)
modes = st.sampled_from(MODES)
offsets = st.one_of(st.integers(0, 5000), st.sampled_from([65536, 1 << 20]))
sizes = st.one_of(st.integers(0, 6000), st.sampled_from([0, 1 << 20]))
payloads = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda b, n: bytes([b]) * n, st.integers(0, 255), st.integers(1, 5000)),
)
picks = st.integers(0, MAX_HANDLES - 1)
_examples = itertools.count()

Outcome = tuple[str, Any]  # ("ok", value) or ("err", errno name)


def outcome(fn: Callable[[], Any]) -> Outcome:
    try:
        return ("ok", fn())
    except OSError as exc:
        return ("err", errno.errorcode.get(exc.errno or 0, str(exc.errno)))


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry below ``root``: type and permission bits, and a file's size and bytes."""
    tree: dict[str, tuple[Any, ...]] = {}
    pending = [root]
    while pending:
        directory = pending.pop()
        for name in sorted(os.listdir(directory)):
            path = directory / name
            rel = str(path.relative_to(root))
            st_ = os.lstat(path)
            if stat.S_ISDIR(st_.st_mode):
                tree[rel] = ("dir", oct(stat.S_IMODE(st_.st_mode)))
                pending.append(path)
            else:
                assert stat.S_ISREG(st_.st_mode), (rel, oct(st_.st_mode))
                tree[rel] = ("file", oct(stat.S_IMODE(st_.st_mode)), st_.st_size, path.read_bytes())
    return tree


def shown(tree: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
    """A tree with file contents summarised, for readable assertion messages."""
    return {k: v[:3] + (v[3][:16], len(v[3])) if v[0] == "file" else v for k, v in tree.items()}


@dataclass
class Handle:
    """One open file: its descriptor on the mount and on the reference."""

    fds: tuple[int, int]
    flags: int
    ino: int  # the reference file's inode: which handles share a file
    path: str  # its current name (its last one once unlinked)
    linked: bool = True

    @property
    def writable(self) -> bool:
        return self.flags & os.O_ACCMODE != os.O_RDONLY

    @property
    def append(self) -> bool:
        return bool(self.flags & os.O_APPEND)


class CwfsModel(RuleBasedStateMachine):
    """One example: a fresh directory on the mount and in the reference, steps on both."""

    # Set by `machine_for` from the test's fixtures.
    mnt: Any
    reference: Path
    s3: Any  # another client of the bucket, on the endpoint the faults spare
    bucket: str
    server: Any
    faults: bool

    def __init__(self) -> None:
        super().__init__()
        number = next(_examples)
        self.prefix = f"ex{number}/"
        self.roots = (self.mnt.path / f"ex{number}", self.reference / f"ex{number}")
        for root in self.roots:
            os.mkdir(root)
        self.handles: list[Handle] = []
        self.pending = False  # a step began and its invariant has not passed yet
        if self.faults:
            for spec in FAULTS:
                rule_ = {"bucket": self.bucket, "endpoint": "primary", "times": -1, **spec}
                self.server.add_fault(seed=number, **rule_)

    # -- running a step on both sides ------------------------------------------------
    def both(self, step: Callable[[int], Any], expect_on_mount: str | None = None) -> Outcome:
        """Run ``step(side)`` on the mount (side 0) and the reference (side 1): the same
        result or errno. ``expect_on_mount``: the errno cwfs documents instead of POSIX's
        (the reference is then left unchanged)."""
        self.pending = True
        got = outcome(lambda: step(0))
        if expect_on_mount is not None:
            assert got == ("err", expect_on_mount), (got, expect_on_mount)
            return got
        want = outcome(lambda: step(1))
        assert got == want, f"mount {got!r} != reference {want!r}\n{self.log_tail()}"
        return got

    def log_tail(self) -> str:
        """The mount's log lines about this example, without pyfuse3's own."""
        lines = [line for line in self.mnt.log().splitlines() if "pyfuse3" not in line]
        return "\n".join(lines[-60:])

    def at(self, side: int, path: str) -> Path:
        return self.roots[side] / path

    def handle(self, pick: int) -> Handle:
        return self.handles[pick % len(self.handles)]

    def ref_files(self) -> dict[int, str]:
        """The reference's files by inode: where each open file's name is now."""
        found = {}
        for dirpath, _dirs, files in os.walk(self.roots[1]):
            for name in files:
                path = Path(dirpath) / name
                found[path.stat().st_ino] = str(path.relative_to(self.roots[1]))
        return found

    def follow_handles(self) -> None:
        files = self.ref_files()
        for h in self.handles:
            h.linked = h.ino in files
            h.path = files.get(h.ino, h.path)

    def in_use(self, path: str) -> bool:
        """A name an open descriptor has (or had, unlinked: its object goes at close)."""
        return any(h.path == path or h.path.startswith(path + "/") for h in self.handles)

    def bucket_body(self, path: str) -> bytes | None:
        try:
            return self.s3.get_object(Bucket=self.bucket, Key=self.prefix + path)["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None

    def assert_uploaded(self, h: Handle) -> None:
        """Data reaches the bucket at close/fsync (docs/semantics.md "Writes"), unless
        another descriptor still writes the file or it has no name any more."""
        if not h.linked or any(o.writable and o.ino == h.ino for o in self.handles):
            return
        want = self.at(1, h.path).read_bytes()
        got = self.bucket_body(h.path)
        assert got == want, (h.path, None if got is None else (len(got), got[:32]), len(want))

    # -- steps -----------------------------------------------------------------------
    @initialize(first=payloads, second=payloads)
    def start_with_a_tree(self, first: bytes, second: bytes) -> None:
        """A directory and two closed files, so that most steps find something."""
        self.mkdir("d", 0o755)
        for path, data in (("a", first), ("d/a", second)):
            self.both(lambda side, p=path, b=data: self.at(side, p).write_bytes(b))
        self.same_trees()

    @precondition(lambda self: len(self.handles) < MAX_HANDLES)
    @rule(path=paths, how=st.sampled_from(sorted(OPEN_FLAGS)), mode=modes)
    def open(self, path: str, how: str, mode: int) -> None:
        flags = OPEN_FLAGS[how]
        fds: list[int] = []

        def step(side: int) -> None:
            fds.append(os.open(self.at(side, path), flags, mode))

        result = self.both(step)
        if result[0] == "ok":
            ino = os.fstat(fds[1]).st_ino
            self.handles.append(Handle((fds[0], fds[1]), flags, ino, path))

    @precondition(lambda self: self.handles)
    @rule(pick=picks, offset=offsets, data=payloads)
    def write(self, pick: int, offset: int, data: bytes) -> None:
        """pwrite at ``offset`` (past the end leaves a hole); an O_APPEND descriptor
        appends wherever it is (os.write, as pwrite on Linux would anyway)."""
        h = self.handle(pick)
        if h.append:
            self.both(lambda side: os.write(h.fds[side], data))
        else:
            self.both(lambda side: os.pwrite(h.fds[side], data, offset))

    @precondition(lambda self: self.handles)
    @rule(pick=picks, offset=offsets, size=st.integers(0, 9000))
    def read(self, pick: int, offset: int, size: int) -> None:
        h = self.handle(pick)
        self.both(lambda side: os.pread(h.fds[side], size, offset))

    @precondition(lambda self: self.handles)
    @rule(pick=picks, size=sizes)
    def ftruncate(self, pick: int, size: int) -> None:
        h = self.handle(pick)
        self.both(lambda side: os.ftruncate(h.fds[side], size))

    @precondition(lambda self: self.handles)
    @rule(pick=picks)
    def fsync(self, pick: int) -> None:
        h = self.handle(pick)
        if self.both(lambda side: os.fsync(h.fds[side]))[0] == "ok" and h.writable:
            self.assert_uploaded(h)

    @precondition(lambda self: self.handles)
    @rule(pick=picks)
    def close(self, pick: int) -> None:
        h = self.handle(pick)
        self.handles.remove(h)
        self.both(lambda side: os.close(h.fds[side]))
        if h.writable:
            self.assert_uploaded(h)

    @rule(path=paths, size=sizes)
    def truncate(self, path: str, size: int) -> None:
        self.both(lambda side: os.truncate(self.at(side, path), size))

    @rule(path=paths, mode=st.sampled_from(DIR_MODES))
    def mkdir(self, path: str, mode: int) -> None:
        self.both(lambda side: os.mkdir(self.at(side, path), mode))

    @rule(path=paths)
    def rmdir(self, path: str) -> None:
        self.both(lambda side: os.rmdir(self.at(side, path)))

    @rule(path=paths)
    def unlink(self, path: str) -> None:
        self.both(lambda side: os.unlink(self.at(side, path)))

    @rule(path=paths, mode=modes)
    def chmod(self, path: str, mode: int) -> None:
        self.both(lambda side: os.chmod(self.at(side, path), mode))

    @rule(src=paths, dst=paths)
    def rename(self, src: str, dst: str) -> None:
        expect = None
        ref_src = self.at(1, src)
        if ref_src.is_dir() and not ref_src.is_symlink() and self.rename_would_work(src, dst):
            if any(h.writable and h.path.startswith(src + "/") for h in self.handles):
                # docs/semantics.md "Rename": "A directory with files below it open for
                # writing cannot be renamed (EBUSY)"; POSIX would rename it.
                expect = "EBUSY"
        self.both(lambda side: os.rename(self.at(side, src), self.at(side, dst)), expect)

    def rename_would_work(self, src: str, dst: str) -> bool:
        """Whether POSIX renames directory ``src`` to ``dst`` (checked on the reference)."""
        if src == dst or dst.startswith(src + "/"):
            return False
        target = self.at(1, dst)
        if not target.parent.is_dir():
            return False
        return not target.exists() or (target.is_dir() and not any(target.iterdir()))

    # -- another client, straight in the bucket ---------------------------------------
    def external_ok(self, path: str) -> bool:
        ref = self.at(1, path)
        return ref.parent.is_dir() and not ref.is_dir() and not self.in_use(path)

    @rule(path=paths, data=payloads)
    def put_elsewhere(self, path: str, data: bytes) -> None:
        """Another client writes an object; it shows once the TTL has passed
        (docs/semantics.md "Consistency model")."""
        if not self.external_ok(path):
            return
        self.pending = True
        self.s3.put_object(Bucket=self.bucket, Key=self.prefix + path, Body=data)
        ref = self.at(1, path)
        ref.write_bytes(data)
        # "A listing showing another ETag is another writer's version: it wins, and shows
        # Last-Modified and --file-mode" (semantics.md "Times and modes"), 0644 by default.
        os.chmod(ref, 0o644)
        time.sleep(TTL * 1.5)

    @rule(path=paths)
    def delete_elsewhere(self, path: str) -> None:
        if not self.external_ok(path) or not self.at(1, path).is_file():
            return
        self.pending = True
        self.s3.delete_object(Bucket=self.bucket, Key=self.prefix + path)
        self.at(1, path).unlink()
        time.sleep(TTL * 1.5)

    # -- after every step --------------------------------------------------------------
    @invariant()
    def same_trees(self) -> None:
        self.follow_handles()
        mount_tree, ref_tree = snapshot(self.roots[0]), snapshot(self.roots[1])
        assert mount_tree == ref_tree, (shown(mount_tree), shown(ref_tree), self.log_tail())
        self.pending = False

    def teardown(self) -> None:
        """Close what is open, then (if every step passed) the bucket must hold exactly
        the reference: each file's bytes, and a marker for each directory."""
        checking = not self.pending
        try:
            while checking and self.handles:
                self.close(0)
            if checking:
                self.same_trees()
                self.assert_bucket_is_the_reference()
        finally:
            for h in self.handles:
                for fd in h.fds:
                    with_errors_ignored(lambda fd=fd: os.close(fd))
            if self.faults:
                self.server.clear_faults()
            remove_tree(self.roots[1])
            with_errors_ignored(lambda: remove_tree(self.roots[0]))

    def assert_bucket_is_the_reference(self) -> None:
        want: dict[str, bytes] = {self.prefix: b""}
        for dirpath, dirs, files in os.walk(self.roots[1]):
            rel = Path(dirpath).relative_to(self.roots[1])
            for name in dirs:
                want[f"{self.prefix}{rel / name}/".replace("./", "")] = b""
            for name in files:
                key = f"{self.prefix}{rel / name}".replace("./", "")
                want[key] = (Path(dirpath) / name).read_bytes()
        deadline = time.monotonic() + 5  # an unlinked file's object goes at its release
        while (got := self.bucket_objects()) != want and time.monotonic() < deadline:
            time.sleep(0.1)
        assert got == want, (sorted(got), sorted(want), self.mnt.log()[-3000:])
        assert self.mnt.staged_files() == [] or self.wait_unstaged()

    def wait_unstaged(self) -> bool:
        self.mnt.wait_until_nothing_staged()
        return True

    def bucket_objects(self) -> dict[str, bytes]:
        listing = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix)
        keys = [o["Key"] for o in listing.get("Contents", [])]
        return {k: self.s3.get_object(Bucket=self.bucket, Key=k)["Body"].read() for k in keys}


def with_errors_ignored(fn: Callable[[], Any]) -> None:
    try:
        fn()
    except OSError:
        pass


def remove_tree(root: Path) -> None:
    """rm -rf with os calls (no shutil.rmtree's fd tricks), permission bits restored."""
    if not root.exists():
        return
    for dirpath, dirs, files in os.walk(root, topdown=False):
        for name in files:
            os.unlink(Path(dirpath) / name)
        for name in dirs:
            os.rmdir(Path(dirpath) / name)
    os.rmdir(root)


def machine_for(mnt: Any, reference: Path, server: Any, bucket: str, faults: bool) -> type:
    """The state machine class bound to this test's mount, reference and bucket."""
    attrs = {"mnt": mnt, "reference": reference, "bucket": bucket, "server": server}
    attrs |= {"s3": server.client(endpoint="lota"), "faults": faults}
    return type("CwfsModelRun", (CwfsModel,), attrs)


def run(machine: type, examples: int) -> None:
    config = settings(
        max_examples=max(1, examples),
        stateful_step_count=STEPS,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
        derandomize=SEED is None,
        phases=list(Phase) if SHRINK else [Phase.explicit, Phase.generate],
    )
    if SEED is not None:
        machine = seed(int(SEED))(machine)
    run_state_machine_as_test(machine, settings=config)


def test_the_mount_behaves_as_a_local_directory(server, bucket, mount, tmp_path):
    """Random step sequences give the same results, errno and trees as a local disk."""
    reference = tmp_path / "reference"
    reference.mkdir()
    m = mount(bucket, *MOUNT_OPTIONS)
    run(machine_for(m, reference, server, bucket, faults=False), EXAMPLES)


def test_faults_the_retries_absorb_change_nothing(server, bucket, mount, tmp_path):
    """The same with 503 SlowDown, 500 InternalError, lost responses and GETs cut midway
    on the mount's requests: retried, never seen by the steps."""
    reference = tmp_path / "reference"
    reference.mkdir()
    m = mount(bucket, *MOUNT_OPTIONS)
    try:
        run(machine_for(m, reference, server, bucket, faults=True), EXAMPLES // 10)
    finally:
        server.clear_faults()
