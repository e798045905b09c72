"""Log lines an operator can act on: each failed S3 request a mount reports is one line
naming the filesystem operation, the path, the key, the S3 error code, the HTTP status
and the request id (issue 15)."""

from __future__ import annotations

import errno
import os
import re

import pytest
from conftest import suspend_writes, wait_for

from cwfs.errors import Exists, store_error

REQUEST_ID = re.compile(r"request id (\w+)")


def failure_lines(log: str, operation: str, path: str) -> list[str]:
    """The lines logging ``operation`` on ``path`` failing, each with a request id that
    no other line has: every failed request is logged once."""
    lines = [line for line in log.splitlines() if f" {operation} {path!r}: " in line]
    assert lines, log
    for line in lines:
        found = REQUEST_ID.search(line)
        assert found is not None, line
        assert log.count(found.group(1)) == 1, log
    return lines


def failure_line(log: str, operation: str, path: str) -> str:
    """The one line logging ``operation`` on ``path`` failing."""
    lines = failure_lines(log, operation, path)
    assert len(lines) == 1, log
    return lines[0]


def test_a_lost_race_at_close_is_one_line_with_the_request_facts(server, bucket, s3, mount):
    """Another client replaced the object: the upload's If-Match fails with 412."""
    s3.put_object(Bucket=bucket, Key="data/shared.txt", Body=b"v1")
    m = mount(bucket, "--prefix", "data/")
    f = open(m.path / "shared.txt", "r+b", buffering=0)  # noqa: SIM115 - closed below
    f.write(b"ours")
    s3.put_object(Bucket=bucket, Key="data/shared.txt", Body=b"theirs")
    with pytest.raises(OSError) as info:
        f.close()
    assert info.value.errno == errno.ESTALE
    wait_for(lambda: "the data is kept in" in m.log())  # at release, a moment after close
    line = failure_line(m.log(), "flush", "shared.txt")
    assert " WARNING " in line and "another writer replaced the version we opened" in line
    assert "(PutObject 'data/shared.txt', PreconditionFailed, HTTP 412, request id " in line
    assert line.endswith("-> ESTALE")
    # The one other line about it is another event: the data kept at release, and where.
    others = [x for x in m.log().splitlines() if "data/shared.txt" in x and x != line]
    kept = [x for x in others if " DEBUG " not in x]
    assert len(kept) == 1 and str(m.staged_files()[0]) in kept[0], m.log()
    assert "HTTP 412" not in kept[0]


def test_a_quota_refusal_at_close_is_edquot_one_line_and_the_data_stays(server, bucket, mount):
    m = mount(bucket)
    suspend_writes(server, bucket=bucket)
    try:
        f = open(m.path / "q.txt", "wb")  # noqa: SIM115 - closed below
        f.write(b"precious")
        with pytest.raises(OSError) as info:
            f.close()
    finally:
        server.clear_faults()
    assert info.value.errno == errno.EDQUOT
    line = failure_line(m.log(), "flush", "q.txt")
    assert "The account is write suspended. (PutObject 'q.txt', AccessDenied, HTTP 403" in line
    assert line.endswith("-> EDQUOT")
    assert [p.read_bytes() for p in m.staged_files()] == [b"precious"]


def test_a_failed_delete_at_release_names_release_and_the_path(server, bucket, s3, mount):
    """A file unlinked while open loses its object when its last descriptor closes: a
    failure then is release's, logged with the file's path (its handle is gone by then)."""
    s3.put_object(Bucket=bucket, Key="doomed.txt", Body=b"x")
    m = mount(bucket)
    reader = open(m.path / "doomed.txt", "rb")  # noqa: SIM115 - closed below
    os.unlink(m.path / "doomed.txt")
    server.add_fault(
        op="DeleteObject", bucket=bucket, status=403, code="AccessDenied", message="Denied"
    )
    try:
        reader.close()
        wait_for(lambda: " release " in m.log())
    finally:
        server.clear_faults()
    line = failure_line(m.log(), "release", "doomed.txt")
    assert "its object was not deleted (unlinked while open): Denied" in line
    assert "(DeleteObject 'doomed.txt', AccessDenied, HTTP 403, request id " in line


def test_a_refused_rename_is_one_line_with_the_request_facts(server, bucket, s3, mount):
    s3.put_object(Bucket=bucket, Key="a.txt", Body=b"x")
    m = mount(bucket)
    server.add_fault(
        op="RenameObject", bucket=bucket, status=403, code="AccessDenied", message="Denied"
    )
    try:
        with pytest.raises(PermissionError):
            os.rename(m.path / "a.txt", m.path / "b.txt")
    finally:
        server.clear_faults()
    line = failure_line(m.log(), "rename", "a.txt")
    assert "(RenameObject 'b.txt', AccessDenied, HTTP 403, request id " in line


def test_a_failed_head_on_the_wire_client_has_its_status_and_request_id(server, bucket, s3, mount):
    """HeadObject goes through cwfs's own HTTP client: a HEAD answer has no body, so its
    code is its status and its request id comes from the header."""
    s3.put_object(Bucket=bucket, Key="h.txt", Body=b"x")
    m = mount(bucket)
    server.add_fault(op="HeadObject", bucket=bucket, status=403, code="AccessDenied", times=-1)
    try:
        with pytest.raises(PermissionError):
            os.stat(m.path / "h.txt")
    finally:
        server.clear_faults()
    line = failure_line(m.log(), "lookup", "h.txt")
    assert "(HeadObject 'h.txt', 403, HTTP 403, request id " in line


def test_a_read_of_a_replaced_object_is_one_line_with_the_request_facts(server, bucket, s3, mount):
    s3.put_object(Bucket=bucket, Key="r.txt", Body=b"v1")
    m = mount(bucket)
    with open(m.path / "r.txt", "rb") as f:
        s3.put_object(Bucket=bucket, Key="r.txt", Body=b"v2")
        with pytest.raises(OSError) as info:
            f.read()
    assert info.value.errno == errno.ESTALE
    # The kernel may have sent more than one read: each is its own failed GET.
    line = failure_lines(m.log(), "read", "r.txt")[0]
    assert "changed in the store while open for reading (ETag was " in line
    assert "(GetObject 'r.txt', PreconditionFailed, HTTP 412, request id " in line


def test_an_error_keeps_the_facts_of_its_request_when_read_as_another_cause():
    exc = store_error("PutObject", "k", "PreconditionFailed", "no match", "RID1", 412)
    assert str(exc) == "PutObject 'k', PreconditionFailed, HTTP 412, request id RID1: no match"
    lost = exc.retyped(Exists, "another writer created it first", key="p/k")
    assert lost.errno == errno.EEXIST and lost.message == "another writer created it first"
    assert lost.context() == "PutObject 'p/k', PreconditionFailed, HTTP 412, request id RID1"


def test_an_unreadable_versioning_state_is_one_line_with_the_request_facts(server, bucket, mount):
    """A key that may not read the versioning state still mounts (renames are atomic as
    long as the bucket never had versioning); the warning says which request failed."""
    server.add_fault(op="GetBucketVersioning", bucket=bucket, status=403, code="AccessDenied")
    try:
        m = mount(bucket)
    finally:
        server.clear_faults()
    lines = [x for x in m.log().splitlines() if "versioning state" in x]
    assert len(lines) == 1, m.log()
    expected = f"cannot read the versioning state of bucket {bucket!r} (GetBucketVersioning, "
    assert expected in lines[0]
    assert "AccessDenied, HTTP 403, request id " in lines[0]
    assert lines[0].endswith("assuming it never had versioning")
