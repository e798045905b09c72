"""Tests for the embedded S3 server (cwfs.server), driven through boto3 like real clients.

Every test checks effects, not just status codes: after a rename the source is gone and
the destination holds the full bytes and metadata; after a refused write the object is
unchanged.
"""

from __future__ import annotations

import base64
import http.client
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from awscrt import checksums as awscrt_checksums
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from conftest import WRITE_SUSPENDED, suspend_writes

from cwfs.server.control import EmbeddedServer
from cwfs.server.seed import pattern

MiB = 1 << 20
NO_RETRY = {"retries": {"total_max_attempts": 1, "mode": "standard"}}


# ---------------------------------------------------------------- fixtures ---------
@pytest.fixture
def bucket(server):
    """A fresh, empty bucket per test, created directly in the store."""
    name = f"t-{uuid.uuid4().hex[:12]}"
    server.seed(name, [])
    return name


@pytest.fixture
def s3(server):
    return server.client("path", **NO_RETRY)


@pytest.fixture
def s3v(server):
    return server.client("virtual", **NO_RETRY)


def error_of(exc) -> tuple[int, str]:
    """(HTTP status, S3 error code) of a ClientError or pytest.raises ExceptionInfo."""
    err = getattr(exc, "value", exc).response
    return err["ResponseMetadata"]["HTTPStatusCode"], err["Error"]["Code"]


def body(client, bucket, key) -> bytes:
    return client.get_object(Bucket=bucket, Key=key)["Body"].read()


def exists(client, bucket, key) -> bool:
    try:
        client.head_object(Bucket=bucket, Key=key)
        return True
    except ClientError as exc:
        if exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
            return False
        raise


def rename(client, bucket, src, dest, **kwargs):
    # botocore does not URL-encode RenameSource: clients must.
    return client.rename_object(
        Bucket=bucket, Key=dest, RenameSource=urllib.parse.quote(f"{bucket}/{src}"), **kwargs
    )


def log_of(server, bucket, op):
    """The request-log entries of one operation in one bucket, oldest first."""
    return [r for r in server.requests() if r["bucket"] == bucket and r["op"] == op]


def delta(server, before, endpoint="primary"):
    after = server.counts(endpoint)
    return {op: n - before.get(op, 0) for op, n in after.items() if n != before.get(op, 0)}


# ---------------------------------------------------------------- addressing -------
@pytest.mark.parametrize("addressing", ["path", "virtual"])
def test_basic_object_lifecycle(server, bucket, addressing):
    c = server.client(addressing, **NO_RETRY)
    before = server.counts()
    key = "dir/a b+c&ü.txt"
    c.put_object(
        Bucket=bucket,
        Key=key,
        Body=b"hello world",
        ContentType="text/plain",
        Metadata={"owner": "cwfs"},
    )
    got = c.get_object(Bucket=bucket, Key=key)
    assert got["Body"].read() == b"hello world"
    assert got["ContentType"] == "text/plain" and got["Metadata"] == {"owner": "cwfs"}
    assert [o["Key"] for o in c.list_objects_v2(Bucket=bucket)["Contents"]] == [key]
    assert c.head_object(Bucket=bucket, Key=key)["ContentLength"] == 11
    c.delete_object(Bucket=bucket, Key=key)
    assert not exists(c, bucket, key)
    assert delta(server, before) == {
        "PutObject": 1,
        "GetObject": 1,
        "ListObjectsV2": 1,
        "HeadObject": 2,
        "DeleteObject": 1,
    }
    logged = [r for r in server.requests() if r["bucket"] == bucket]
    assert {r["addressing"] for r in logged} == {addressing}
    assert all(r["key"] in (key, None) for r in logged)


def test_lota_endpoint_shares_store_and_counts_separately(server, bucket):
    primary, lota = server.client("virtual"), server.client("virtual", endpoint="lota")
    before_p, before_l = server.counts("primary"), server.counts("lota")
    primary.put_object(Bucket=bucket, Key="k", Body=b"via primary")
    assert body(lota, bucket, "k") == b"via primary"
    # LOTA pre-warm idiom: HEAD with Range bytes=0-0
    assert lota.head_object(Bucket=bucket, Key="k", Range="bytes=0-0")["ContentLength"] == 1
    assert delta(server, before_p, "primary") == {"PutObject": 1}
    assert delta(server, before_l, "lota") == {"GetObject": 1, "HeadObject": 1}
    assert set(server.all_counts()) == {"primary", "lota"}


def test_operation_names(server, bucket, s3):
    before = server.counts()
    s3.head_bucket(Bucket=bucket)
    s3.get_bucket_location(Bucket=bucket)
    s3.get_bucket_versioning(Bucket=bucket)
    s3.list_objects(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="src", Body=b"x" * 100)
    s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "src"})
    s3.put_object_tagging(
        Bucket=bucket, Key="copy", Tagging={"TagSet": [{"Key": "a", "Value": "b"}]}
    )
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    p1 = s3.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=1, Body=b"a" * (5 * MiB))
    p2 = s3.upload_part_copy(
        Bucket=bucket,
        Key="mp",
        UploadId=up,
        PartNumber=2,
        CopySource={"Bucket": bucket, "Key": "src"},
    )
    s3.list_multipart_uploads(Bucket=bucket)
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="mp",
        UploadId=up,
        MultipartUpload={
            "Parts": [
                {"PartNumber": 1, "ETag": p1["ETag"]},
                {"PartNumber": 2, "ETag": p2["CopyPartResult"]["ETag"]},
            ]
        },
    )
    up2 = s3.create_multipart_upload(Bucket=bucket, Key="mp2")["UploadId"]
    s3.abort_multipart_upload(Bucket=bucket, Key="mp2", UploadId=up2)
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "src"}, {"Key": "copy"}]})
    assert body(s3, bucket, "mp") == b"a" * (5 * MiB) + b"x" * 100
    assert delta(server, before) == {
        "HeadBucket": 1,
        "GetBucketLocation": 1,
        "GetBucketVersioning": 1,
        "ListObjects": 1,
        "PutObject": 1,
        "CopyObject": 1,
        "PutObjectTagging": 1,
        "CreateMultipartUpload": 2,
        "UploadPart": 1,
        "UploadPartCopy": 1,
        "ListMultipartUploads": 1,
        "CompleteMultipartUpload": 1,
        "AbortMultipartUpload": 1,
        "DeleteObjects": 1,
        "GetObject": 1,
    }
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]) == ["mp"]


def test_create_bucket_and_versioning_ops(server, s3):
    name = f"cb-{uuid.uuid4().hex[:10]}"
    before = server.counts()
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    assert s3.get_bucket_versioning(Bucket=name)["Status"] == "Enabled"
    assert delta(server, before) == {
        "CreateBucket": 1,
        "PutBucketVersioning": 1,
        "GetBucketVersioning": 1,
    }


# ---------------------------------------------------------------- rename -----------
@pytest.mark.parametrize("addressing", ["path", "virtual"])
def test_rename_moves_data_and_metadata(server, bucket, addressing):
    c = server.client(addressing, **NO_RETRY)
    data = pattern("big", 7 * MiB + 5)
    c.put_object(
        Bucket=bucket,
        Key="dir/src é+&.bin",
        Body=data,
        ContentType="application/x-test",
        Metadata={"mtime": "123", "mode": "0644"},
    )
    c.put_object_tagging(
        Bucket=bucket, Key="dir/src é+&.bin", Tagging={"TagSet": [{"Key": "t", "Value": "v"}]}
    )
    etag = c.head_object(Bucket=bucket, Key="dir/src é+&.bin")["ETag"]
    before = server.counts()
    resp = rename(c, bucket, "dir/src é+&.bin", "other/dest ü.bin")
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert not exists(c, bucket, "dir/src é+&.bin")
    got = c.get_object(Bucket=bucket, Key="other/dest ü.bin")
    assert got["Body"].read() == data
    assert got["ETag"] == etag and got["ContentType"] == "application/x-test"
    assert got["Metadata"] == {"mtime": "123", "mode": "0644"}
    assert c.get_object_tagging(Bucket=bucket, Key="other/dest ü.bin")["TagSet"] == [
        {"Key": "t", "Value": "v"}
    ]
    assert [o["Key"] for o in c.list_objects_v2(Bucket=bucket)["Contents"]] == ["other/dest ü.bin"]
    assert delta(server, before)["RenameObject"] == 1
    last = [r for r in server.requests() if r["op"] == "RenameObject"][-1]
    assert (
        urllib.parse.unquote(last["headers"]["x-amz-rename-source"]) == f"{bucket}/dir/src é+&.bin"
    )
    assert "x-amz-client-token" in last["headers"]


def test_rename_source_with_leading_slash_and_overwrite(server, bucket, s3):
    server.seed(bucket, [{"key": "a", "text": "AAA"}, {"key": "b", "text": "BBB"}])
    s3.rename_object(Bucket=bucket, Key="b", RenameSource=f"/{bucket}/a")
    assert body(s3, bucket, "b") == b"AAA" and not exists(s3, bucket, "a")


def test_rename_errors_leave_objects_unchanged(server, bucket, s3):
    other = f"t-{uuid.uuid4().hex[:12]}"
    server.seed(other, [])
    server.seed(bucket, [{"key": "src", "text": "source"}, {"key": "dst", "text": "dest"}])
    cases = [
        (dict(RenameSource=f"{other}/src"), (400, "InvalidRequest")),
        (dict(RenameSource=f"{bucket}/missing"), (404, "NoSuchKey")),
        (
            dict(RenameSource=f"{bucket}/src", DestinationIfNoneMatch="*"),
            (412, "PreconditionFailed"),
        ),
        (
            dict(RenameSource=f"{bucket}/src", DestinationIfMatch='"0123"'),
            (412, "PreconditionFailed"),
        ),
        (dict(RenameSource=f"{bucket}/src", SourceIfMatch='"0123"'), (412, "PreconditionFailed")),
        (
            dict(
                RenameSource=f"{bucket}/src",
                SourceIfNoneMatch=s3.head_object(Bucket=bucket, Key="src")["ETag"],
            ),
            (412, "PreconditionFailed"),
        ),
        (
            dict(
                RenameSource=f"{bucket}/src",
                SourceIfModifiedSince=datetime.now(timezone.utc) + timedelta(hours=1),
            ),
            (412, "PreconditionFailed"),
        ),
        (
            dict(
                RenameSource=f"{bucket}/src",
                SourceIfUnmodifiedSince=datetime.now(timezone.utc) - timedelta(hours=1),
            ),
            (412, "PreconditionFailed"),
        ),
    ]
    for kwargs, expected in cases:
        with pytest.raises(ClientError) as exc:
            s3.rename_object(Bucket=bucket, Key="dst", **kwargs)
        assert error_of(exc) == expected, kwargs
        assert body(s3, bucket, "src") == b"source" and body(s3, bucket, "dst") == b"dest"
    # conditions that hold
    etag = s3.head_object(Bucket=bucket, Key="dst")["ETag"]
    src_etag = s3.head_object(Bucket=bucket, Key="src")["ETag"]
    s3.rename_object(
        Bucket=bucket,
        Key="dst",
        RenameSource=f"{bucket}/src",
        DestinationIfMatch=etag,
        SourceIfMatch=src_etag,
        SourceIfUnmodifiedSince=datetime.now(timezone.utc) + timedelta(hours=1),
    )
    assert body(s3, bucket, "dst") == b"source" and not exists(s3, bucket, "src")
    s3.rename_object(
        Bucket=bucket, Key="new", RenameSource=f"{bucket}/dst", DestinationIfNoneMatch="*"
    )
    assert body(s3, bucket, "new") == b"source" and not exists(s3, bucket, "dst")


def test_rename_client_token_idempotency(server, bucket, s3):
    server.seed(bucket, [{"key": "src", "text": "payload"}, {"key": "src2", "text": "two"}])
    token = uuid.uuid4().hex
    rename(s3, bucket, "src", "dst", ClientToken=token)
    # the retry succeeds without doing anything, although the source is gone now
    rename(s3, bucket, "src", "dst", ClientToken=token)
    assert body(s3, bucket, "dst") == b"payload" and not exists(s3, bucket, "src")
    with pytest.raises(ClientError) as exc:
        rename(s3, bucket, "src2", "dst", ClientToken=token)
    assert error_of(exc) == (400, "IdempotencyParameterMismatch")
    assert body(s3, bucket, "dst") == b"payload" and body(s3, bucket, "src2") == b"two"
    with pytest.raises(ClientError) as exc:  # a fresh token re-executes: source is gone
        rename(s3, bucket, "src", "dst", ClientToken=uuid.uuid4().hex)
    assert error_of(exc) == (404, "NoSuchKey")


@pytest.mark.parametrize("status", ["Enabled", "Suspended"])
def test_rename_refused_on_bucket_that_had_versioning(server, bucket, s3, status):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    if status == "Suspended":
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    s3.put_object(Bucket=bucket, Key="src", Body=b"v")
    with pytest.raises(ClientError) as exc:
        rename(s3, bucket, "src", "dst")
    assert error_of(exc) == (400, "InvalidRequest")
    assert "versioning" in exc.value.response["Error"]["Message"]
    assert body(s3, bucket, "src") == b"v" and not exists(s3, bucket, "dst")


def test_racing_renames_of_one_source(server, bucket):
    server.seed(bucket, [{"key": "src", "size": 3 * MiB}])
    results: dict[str, object] = {}
    start = threading.Barrier(4)

    def worker(dest):
        c = server.client("path", **NO_RETRY)
        start.wait()
        try:
            rename(c, bucket, "src", dest)
            results[dest] = 200
        except ClientError as exc:
            results[dest] = error_of(exc)

    threads = [threading.Thread(target=worker, args=(f"d{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [d for d, r in results.items() if r == 200]
    assert len(winners) == 1, results
    assert all(r == (404, "NoSuchKey") for d, r in results.items() if d not in winners)
    s3 = server.client()
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]] == winners
    assert body(s3, bucket, winners[0]) == pattern("src", 3 * MiB)


# ---------------------------------------------------------------- conditional writes
def test_conditional_put(server, bucket, s3):
    s3.put_object(Bucket=bucket, Key="k", Body=b"first", IfNoneMatch="*")
    etag = s3.head_object(Bucket=bucket, Key="k")["ETag"]
    for kwargs, expected in [
        (dict(IfNoneMatch="*"), (412, "PreconditionFailed")),
        (dict(IfMatch='"deadbeef"'), (412, "PreconditionFailed")),
        (dict(IfNoneMatch=etag), (400, "InvalidRequest")),
    ]:
        with pytest.raises(ClientError) as exc:
            s3.put_object(Bucket=bucket, Key="k", Body=b"second", **kwargs)
        assert error_of(exc) == expected
        assert body(s3, bucket, "k") == b"first"
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="absent", Body=b"x", IfMatch=etag)
    assert error_of(exc) == (404, "NoSuchKey") and not exists(s3, bucket, "absent")
    s3.put_object(Bucket=bucket, Key="k", Body=b"third", IfMatch=etag)
    assert body(s3, bucket, "k") == b"third"
    logged = log_of(server, bucket, "PutObject")
    assert [r["status"] for r in logged] == [200, 412, 412, 400, 404, 200]
    assert logged[1]["headers"]["If-None-Match"] == "*"
    assert logged[-1]["headers"]["If-Match"] == etag


def test_conditional_complete_multipart_and_copy(server, bucket, s3):
    server.seed(bucket, [{"key": "k", "text": "existing"}, {"key": "src", "text": "copy me"}])
    up = s3.create_multipart_upload(Bucket=bucket, Key="k")["UploadId"]
    part = s3.upload_part(Bucket=bucket, Key="k", UploadId=up, PartNumber=1, Body=b"new data")
    parts = {"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]}
    with pytest.raises(ClientError) as exc:
        s3.complete_multipart_upload(
            Bucket=bucket, Key="k", UploadId=up, MultipartUpload=parts, IfNoneMatch="*"
        )
    assert error_of(exc) == (412, "PreconditionFailed")
    assert body(s3, bucket, "k") == b"existing"
    etag = s3.head_object(Bucket=bucket, Key="k")["ETag"]
    s3.complete_multipart_upload(
        Bucket=bucket, Key="k", UploadId=up, MultipartUpload=parts, IfMatch=etag
    )
    assert body(s3, bucket, "k") == b"new data"
    with pytest.raises(ClientError) as exc:
        s3.copy_object(
            Bucket=bucket, Key="k", CopySource={"Bucket": bucket, "Key": "src"}, IfNoneMatch="*"
        )
    assert error_of(exc) == (412, "PreconditionFailed")
    assert body(s3, bucket, "k") == b"new data"
    s3.copy_object(
        Bucket=bucket, Key="fresh", CopySource={"Bucket": bucket, "Key": "src"}, IfNoneMatch="*"
    )
    assert body(s3, bucket, "fresh") == b"copy me"


def _signed_put(server, bucket, key, size):
    """Open a PUT whose body we send ourselves (signed with UNSIGNED-PAYLOAD), headers only."""
    url = f"{server.url}/{bucket}/{urllib.parse.quote(key)}"
    req = AWSRequest(
        method="PUT",
        url=url,
        headers={"x-amz-content-sha256": "UNSIGNED-PAYLOAD", "Content-Length": str(size)},
    )
    S3SigV4Auth(Credentials(server.access_key, server.secret_key), "s3", "us-east-1").add_auth(req)
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.putrequest("PUT", parts.path, skip_host=True, skip_accept_encoding=True)
    for name, value in req.headers.items():
        conn.putheader(name, value)
    conn.putheader("Host", parts.netloc)
    conn.endheaders()
    return conn


def test_conditional_write_during_inflight_write_gets_409(server, bucket, s3):
    data = pattern("slow", 2 * MiB)
    conn = _signed_put(server, bucket, "k", len(data))
    conn.send(data[:MiB])
    deadline = time.time() + 10
    while not any(r["bucket"] == bucket and r["op"] == "PutObject" for r in server.requests()):
        assert time.time() < deadline
        time.sleep(0.05)
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="k", Body=b"racer", IfNoneMatch="*")
    assert error_of(exc) == (409, "ConditionalRequestConflict")
    conn.send(data[MiB:])
    assert conn.getresponse().status == 200
    conn.close()
    with pytest.raises(ClientError) as exc:  # the retry now sees the winner
        s3.put_object(Bucket=bucket, Key="k", Body=b"racer", IfNoneMatch="*")
    assert error_of(exc) == (412, "PreconditionFailed")
    assert body(s3, bucket, "k") == data


def test_racing_conditional_creates(server, bucket):
    bodies = [pattern("a", 12 * MiB), pattern("b", 12 * MiB)]
    conflicts = 0

    def worker(i, start, client, key, results):
        start.wait()
        try:
            client.put_object(Bucket=bucket, Key=key, Body=bodies[i], IfNoneMatch="*")
            results[i] = 200
        except ClientError as exc:
            results[i] = error_of(exc)

    for round_ in range(3):
        key = f"race-{round_}"
        results: list[object] = [None, None]
        start = threading.Barrier(2)
        clients = [server.client("path", **NO_RETRY) for _ in range(2)]
        threads = [
            threading.Thread(target=worker, args=(i, start, clients[i], key, results))
            for i in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results, key=str).count(200) == 1, results
        loser = next(r for r in results if r != 200)
        assert loser in [(409, "ConditionalRequestConflict"), (412, "PreconditionFailed")]
        conflicts += loser[0] == 409
        assert body(clients[0], bucket, key) == bodies[results.index(200)]
    print(f"racing If-None-Match creates: {conflicts}/3 answered 409")


# ---------------------------------------------------------------- ranged GET -------
@pytest.mark.parametrize("size", [1000, 9 * MiB + 7])  # in-memory and disk-backed values
def test_ranged_get(server, bucket, s3v, size):
    data = pattern("obj", size)
    server.seed(
        bucket,
        [
            {
                "key": "obj",
                "size": size,
                "content_type": "application/x-demo",
                "metadata": {"color": "blue"},
            }
        ],
    )
    head = s3v.head_object(Bucket=bucket, Key="obj")
    for spec, (lo, hi) in [
        (f"bytes=10-{size // 2}", (10, size // 2)),
        (f"bytes={size - 100}-", (size - 100, size - 1)),
        ("bytes=-33", (size - 33, size - 1)),
        (f"bytes=5-{size * 3}", (5, size - 1)),
        (f"bytes=-{size * 2}", (0, size - 1)),
    ]:
        got = s3v.get_object(Bucket=bucket, Key="obj", Range=spec, IfMatch=head["ETag"])
        assert got["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert got["Body"].read() == data[lo : hi + 1], spec
        assert got["ContentRange"] == f"bytes {lo}-{hi}/{size}"
        assert got["ContentLength"] == hi - lo + 1
        assert got["ETag"] == head["ETag"] and got["LastModified"] == head["LastModified"]
        assert got["ContentType"] == "application/x-demo" and got["AcceptRanges"] == "bytes"
        assert got["Metadata"] == {"color": "blue"}
    full = s3v.get_object(Bucket=bucket, Key="obj")
    assert full["ResponseMetadata"]["HTTPStatusCode"] == 200 and full["Body"].read() == data
    with pytest.raises(ClientError) as exc:
        s3v.get_object(Bucket=bucket, Key="obj", Range=f"bytes={size}-")
    assert error_of(exc) == (416, "InvalidRange")
    with pytest.raises(ClientError) as exc:
        s3v.get_object(Bucket=bucket, Key="obj", Range="bytes=0-9", IfMatch='"nope"')
    assert error_of(exc) == (412, "PreconditionFailed")
    with pytest.raises(ClientError) as exc:
        s3v.get_object(Bucket=bucket, Key="obj", Range="bytes=0-9", IfNoneMatch=head["ETag"])
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304
    with pytest.raises(ClientError) as exc:
        s3v.get_object(Bucket=bucket, Key="missing", Range="bytes=0-9")
    assert error_of(exc) == (404, "NoSuchKey")


def test_get_empty_object_and_checksum_mode(server, bucket, s3):
    s3.put_object(Bucket=bucket, Key="empty", Body=b"")
    assert body(s3, bucket, "empty") == b""
    s3.put_object(Bucket=bucket, Key="ck", Body=b"checksummed", ChecksumAlgorithm="CRC32")
    got = s3.get_object(Bucket=bucket, Key="ck", ChecksumMode="ENABLED")
    assert got["Body"].read() == b"checksummed" and got.get("ChecksumCRC32")
    logged = [r for r in server.requests() if r["bucket"] == bucket and r["key"] == "ck"][0]
    assert logged["checksum"]["algorithm"] == "CRC32"


def test_ranged_get_survives_concurrent_overwrite(server, bucket, s3):
    server.seed(bucket, [{"key": "obj", "size": 12 * MiB}])
    stream = s3.get_object(Bucket=bucket, Key="obj", Range=f"bytes=0-{12 * MiB - 1}")["Body"]
    first = stream.read(MiB)
    s3.put_object(Bucket=bucket, Key="obj", Body=b"replaced")
    assert first + stream.read() == pattern("obj", 12 * MiB)
    assert body(s3, bucket, "obj") == b"replaced"


# ---------------------------------------------------------------- credentials ------
@pytest.mark.parametrize(
    "addressing,endpoint", [("path", "primary"), ("virtual", "primary"), ("virtual", "lota")]
)
def test_credentials_are_checked(server, bucket, addressing, endpoint):
    server.seed(bucket, [{"key": "k", "text": "secret"}])
    good = server.client(addressing, endpoint, **NO_RETRY)
    assert body(good, bucket, "k") == b"secret"
    for access, secret, code in [
        ("someone-else", server.secret_key, "InvalidAccessKeyId"),
        (server.access_key, "wrong-secret", "SignatureDoesNotMatch"),
    ]:
        bad = server.client(addressing, endpoint, **NO_RETRY)
        bad._request_signer._credentials = Credentials(access, secret)
        with pytest.raises(ClientError) as exc:
            bad.get_object(Bucket=bucket, Key="k")
        assert error_of(exc) == (403, code)
        with pytest.raises(ClientError) as exc:
            bad.put_object(Bucket=bucket, Key="k", Body=b"overwrite", Metadata={"a_b": "c"})
        assert error_of(exc) == (403, code)
    assert body(good, bucket, "k") == b"secret"
    good.put_object(Bucket=bucket, Key="meta", Body=b"m", Metadata={"a_b": "under score"})
    assert good.head_object(Bucket=bucket, Key="meta")["Metadata"] == {"a_b": "under score"}


def test_unsigned_and_presigned_requests(server, bucket):
    s3 = server.client("path", signature_version="s3v4")
    server.seed(bucket, [{"key": "k e y", "text": "presigned body"}])
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with pytest.raises(urllib.error.HTTPError) as exc:
        opener.open(f"{server.url}/{bucket}/k%20e%20y")
    assert exc.value.code == 403 and b"AccessDenied" in exc.value.read()
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k e y"})
    assert opener.open(url).read() == b"presigned body"


# ---------------------------------------------------------------- checksums --------
def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def crc32c_of(data: bytes) -> bytes:
    return awscrt_checksums.crc32c(data).to_bytes(4, "big")


def crc64nvme_of(data: bytes) -> bytes:
    return awscrt_checksums.crc64nvme(data).to_bytes(8, "big")


def use_trailer(params, **_):
    """Make botocore send its checksum as an aws-chunked trailer, as it does over https."""
    params["context"]["checksum"]["request_algorithm"]["in"] = "trailer"


def test_put_checksum_header_is_verified_stored_and_returned(server, bucket, s3):
    data = b"checksummed body " * 100
    good = b64(crc32c_of(data))
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="k", Body=data, ChecksumCRC32C=b64(crc32c_of(b"other")))
    assert error_of(exc) == (400, "BadDigest")
    assert (
        exc.value.response["Error"]["Message"]
        == "The CRC32C you specified did not match the calculated checksum."
    )
    assert not exists(s3, bucket, "k")
    put = s3.put_object(Bucket=bucket, Key="k", Body=data, ChecksumCRC32C=good)
    assert put["ChecksumCRC32C"] == good
    head = s3.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32C"] == good and head["ChecksumType"] == "FULL_OBJECT"
    assert "ChecksumCRC32C" not in s3.head_object(Bucket=bucket, Key="k")
    got = s3.get_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert got["ChecksumCRC32C"] == good and got["Body"].read() == data
    ranged = s3.get_object(Bucket=bucket, Key="k", Range="bytes=0-9", ChecksumMode="ENABLED")
    assert "ChecksumCRC32C" not in ranged and ranged["Body"].read() == data[:10]
    logged = log_of(server, bucket, "PutObject")
    assert [(r["status"], r["checksum"]["algorithm"]) for r in logged] == [
        (400, "CRC32C"),
        (200, "CRC32C"),
    ]
    assert logged[0]["checksum"]["headers"] == ["x-amz-checksum-crc32c"]


@pytest.mark.parametrize("location", ["header", "trailer"])
def test_botocore_computed_checksum_is_stored(server, bucket, location):
    c = server.client("path", **NO_RETRY)
    if location == "trailer":
        c.meta.events.register("before-call.s3.PutObject", use_trailer)
    data = pattern("computed", 300_000)
    put = c.put_object(Bucket=bucket, Key="k", Body=data, ChecksumAlgorithm="CRC32C")
    assert put["ChecksumCRC32C"] == b64(crc32c_of(data))
    assert body(c, bucket, "k") == data
    head = c.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32C"] == b64(crc32c_of(data)) and head["ContentLength"] == len(data)
    assert "ContentEncoding" not in head  # aws-chunked is a transfer detail, not stored
    logged = log_of(server, bucket, "PutObject")[-1]
    assert logged["checksum"]["algorithm"] == "CRC32C"
    assert logged["checksum"]["trailer"] == (
        "x-amz-checksum-crc32c" if location == "trailer" else None
    )


def _send_signed(server, bucket, key, headers: dict, payload: bytes, trailer: bool):
    """A signed PUT with exactly these headers and body; (status, response body)."""
    url = f"{server.url}/{bucket}/{urllib.parse.quote(key)}"
    req = AWSRequest(method="PUT", url=url, headers=headers, data=payload)
    if trailer:
        req.context["checksum"] = {"request_algorithm": {"in": "trailer"}}
    S3SigV4Auth(Credentials(server.access_key, server.secret_key), "s3", "us-east-1").add_auth(req)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, data=payload, method="PUT", headers=dict(req.headers))
    try:
        with opener.open(request) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def test_wrong_trailer_checksum_is_bad_digest(server, bucket, s3):
    data = b"trailer data"

    def chunked(checksum: bytes) -> bytes:
        return (
            f"{len(data):x}\r\n".encode()
            + data
            + b"\r\n0\r\n"
            + b"x-amz-checksum-crc32c:"
            + b64(checksum).encode()
            + b"\r\n\r\n"
        )

    headers = {
        "Content-Type": "application/octet-stream",
        "Content-Encoding": "aws-chunked",
        "x-amz-trailer": "x-amz-checksum-crc32c",
        "x-amz-decoded-content-length": str(len(data)),
    }
    status, reply = _send_signed(server, bucket, "k", headers, chunked(crc32c_of(b"nope")), True)
    assert status == 400 and b"<Code>BadDigest</Code>" in reply
    assert not exists(s3, bucket, "k")
    status, _ = _send_signed(server, bucket, "k", headers, chunked(crc32c_of(data)), True)
    assert status == 200 and body(s3, bucket, "k") == data
    assert s3.head_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")["ChecksumCRC32C"] == b64(
        crc32c_of(data)
    )


def test_crc64nvme_put(server, bucket, s3):
    data = pattern("nvme", 70_000)
    with pytest.raises(ClientError) as exc:
        s3.put_object(Bucket=bucket, Key="k", Body=data, ChecksumCRC64NVME=b64(bytes(8)))
    assert error_of(exc) == (400, "BadDigest") and not exists(s3, bucket, "k")
    put = s3.put_object(Bucket=bucket, Key="k", Body=data, ChecksumAlgorithm="CRC64NVME")
    assert put["ChecksumCRC64NVME"] == b64(crc64nvme_of(data))
    got = s3.get_object(Bucket=bucket, Key="k", ChecksumMode="ENABLED")  # botocore validates
    assert got["Body"].read() == data and got["ChecksumCRC64NVME"] == b64(crc64nvme_of(data))


def _upload_parts(s3, bucket, key, upload_id, parts, algorithm):
    """Upload parts with a botocore-computed checksum; the Complete list with their checksums."""
    listed = []
    for number, data in enumerate(parts, 1):
        reply = s3.upload_part(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
            ChecksumAlgorithm=algorithm,
        )
        listed.append(
            {
                "PartNumber": number,
                "ETag": reply["ETag"],
                f"Checksum{algorithm}": reply[f"Checksum{algorithm}"],
            }
        )
    return listed


def test_multipart_composite_crc32c(server, bucket, s3):
    parts = [pattern("p1", 5 * MiB), pattern("p2", 5 * MiB), b"tail"]
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp", ChecksumAlgorithm="CRC32C")["UploadId"]
    with pytest.raises(ClientError) as exc:  # botocore's default CRC32 is the wrong algorithm
        s3.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=1, Body=parts[0])
    assert error_of(exc) == (400, "InvalidRequest")
    with pytest.raises(ClientError) as exc:
        s3.upload_part(
            Bucket=bucket,
            Key="mp",
            UploadId=up,
            PartNumber=1,
            Body=parts[0],
            ChecksumCRC32C=b64(crc32c_of(b"x")),
        )
    assert error_of(exc) == (400, "BadDigest")
    listed = _upload_parts(s3, bucket, "mp", up, parts, "CRC32C")
    digests = [crc32c_of(p) for p in parts]
    assert [p["ChecksumCRC32C"] for p in listed] == [b64(d) for d in digests]  # echoed
    wrong = [dict(listed[0], ChecksumCRC32C=b64(crc32c_of(b"x"))), *listed[1:]]
    for part_list, expected in [
        (wrong, (400, "InvalidPart")),
        ([{k: p[k] for k in ("PartNumber", "ETag")} for p in listed], (400, "InvalidRequest")),
    ]:
        with pytest.raises(ClientError) as exc:
            s3.complete_multipart_upload(
                Bucket=bucket, Key="mp", UploadId=up, MultipartUpload={"Parts": part_list}
            )
        assert error_of(exc) == expected
        assert not exists(s3, bucket, "mp")
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=up, MultipartUpload={"Parts": listed}
    )
    expected = f"{b64(crc32c_of(b''.join(digests)))}-3"
    assert done["ChecksumCRC32C"] == expected and done["ChecksumType"] == "COMPOSITE"
    head = s3.head_object(Bucket=bucket, Key="mp", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32C"] == expected and head["ChecksumType"] == "COMPOSITE"
    got = s3.get_object(Bucket=bucket, Key="mp", ChecksumMode="ENABLED")
    assert got["ChecksumCRC32C"] == expected and got["Body"].read() == b"".join(parts)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    # copies and renames keep the checksum; a metadata REPLACE self-copy keeps it too
    s3.copy_object(Bucket=bucket, Key="copy", CopySource={"Bucket": bucket, "Key": "mp"})
    s3.copy_object(
        Bucket=bucket,
        Key="copy",
        CopySource={"Bucket": bucket, "Key": "copy"},
        Metadata={"mtime": "7"},
        MetadataDirective="REPLACE",
    )
    rename(s3, bucket, "copy", "renamed")
    head = s3.head_object(Bucket=bucket, Key="renamed", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32C"] == expected and head["Metadata"] == {"mtime": "7"}
    copied = s3.copy_object(
        Bucket=bucket,
        Key="fresh",
        CopySource={"Bucket": bucket, "Key": "mp"},
        ChecksumAlgorithm="CRC64NVME",
    )
    whole = b64(crc64nvme_of(b"".join(parts)))
    assert copied["CopyObjectResult"]["ChecksumCRC64NVME"] == whole
    assert (
        s3.head_object(Bucket=bucket, Key="fresh", ChecksumMode="ENABLED")["ChecksumCRC64NVME"]
        == whole
    )
    create = log_of(server, bucket, "CreateMultipartUpload")[0]
    assert create["checksum"]["algorithm"] == "CRC32C"


def test_multipart_full_object_crc64nvme(server, bucket, s3):
    parts = [pattern("f1", 5 * MiB), b"end"]
    up = s3.create_multipart_upload(
        Bucket=bucket, Key="mp", ChecksumAlgorithm="CRC64NVME", ChecksumType="FULL_OBJECT"
    )["UploadId"]
    listed = _upload_parts(s3, bucket, "mp", up, parts, "CRC64NVME")
    done = s3.complete_multipart_upload(
        Bucket=bucket, Key="mp", UploadId=up, MultipartUpload={"Parts": listed}
    )
    whole = b64(crc64nvme_of(b"".join(parts)))
    assert done["ChecksumCRC64NVME"] == whole and done["ChecksumType"] == "FULL_OBJECT"
    got = s3.get_object(Bucket=bucket, Key="mp", ChecksumMode="ENABLED")
    assert got["ChecksumCRC64NVME"] == whole and got["Body"].read() == b"".join(parts)
    with pytest.raises(ClientError) as exc:
        s3.create_multipart_upload(
            Bucket=bucket, Key="x", ChecksumAlgorithm="SHA256", ChecksumType="FULL_OBJECT"
        )
    assert error_of(exc) == (400, "InvalidRequest")


def test_abort_and_list_multipart_uploads(server, bucket, s3):
    before = server.counts()
    up = s3.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
    s3.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=1, Body=b"part")
    assert [u["UploadId"] for u in s3.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [up]
    s3.abort_multipart_upload(Bucket=bucket, Key="mp", UploadId=up)
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert not exists(s3, bucket, "mp")
    assert delta(server, before) == {
        "CreateMultipartUpload": 1,
        "UploadPart": 1,
        "ListMultipartUploads": 2,
        "AbortMultipartUpload": 1,
        "HeadObject": 1,
    }


# ---------------------------------------------------------------- faults -----------
def test_fault_injection(server, bucket):
    c = server.client("path", **NO_RETRY)
    lota = server.client("virtual", "lota", **NO_RETRY)
    try:
        server.add_fault(
            op="PutObject", status=503, code="SlowDown", message="Reduce rate", times=2
        )
        for _ in range(2):
            with pytest.raises(ClientError) as exc:
                c.put_object(Bucket=bucket, Key="a", Body=b"1")
            assert error_of(exc) == (503, "SlowDown")
        c.put_object(Bucket=bucket, Key="a", Body=b"1")
        logged = log_of(server, bucket, "PutObject")
        assert [(r["status"], r["fault"]) for r in logged] == [
            (503, True),
            (503, True),
            (200, False),
        ]

        suspend_writes(server, key_prefix="quota/")
        for _ in range(3):
            with pytest.raises(ClientError) as exc:
                c.put_object(Bucket=bucket, Key="quota/x", Body=b"1")
            assert exc.value.response["Error"]["Message"] == WRITE_SUSPENDED
        c.put_object(Bucket=bucket, Key="other", Body=b"fine")
        assert not exists(c, bucket, "quota/x")

        server.add_fault(
            op="UploadPart", after=1, times=1, status=500, code="InternalError", message="boom"
        )
        up = c.create_multipart_upload(Bucket=bucket, Key="mp")["UploadId"]
        c.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=1, Body=b"p" * MiB)
        with pytest.raises(ClientError) as exc:
            c.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=2, Body=b"q")
        assert error_of(exc) == (500, "InternalError")
        c.upload_part(Bucket=bucket, Key="mp", UploadId=up, PartNumber=2, Body=b"q")

        server.add_fault(op="GetObject", endpoint="lota", status=503, code="SlowDown", times=-1)
        with pytest.raises(ClientError):
            lota.get_object(Bucket=bucket, Key="a")
        assert body(c, bucket, "a") == b"1"
        assert len(server._call("GET", "faults")) == 4
    finally:
        server.clear_faults()
    assert body(lota, bucket, "a") == b"1"
    c.put_object(Bucket=bucket, Key="quota/x", Body=b"now ok")


def test_slow_fault_paces_the_body_and_the_log_shows_a_client_that_hung_up(server, bucket):
    c = server.client("path", **NO_RETRY)
    data = os.urandom(9 * MiB)  # three 4 MiB chunks
    c.put_object(Bucket=bucket, Key="big", Body=data)
    server.add_fault(op="GetObject", bucket=bucket, phase="slow", delay=0.1, times=-1)
    try:
        start = time.monotonic()
        assert body(c, bucket, "big") == data
        assert time.monotonic() - start >= 0.3
        response = c.get_object(Bucket=bucket, Key="big")["Body"]
        response.read(MiB)
        response.close()  # hang up after the first chunk
        deadline = time.monotonic() + 10
        while (logged := log_of(server, bucket, "GetObject"))[-1]["body_complete"] is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        server.clear_faults()
    assert [(r["status"], r["fault"], r["body_complete"]) for r in logged] == [
        (200, False, True),
        (200, False, False),
    ]
    assert logged[0]["body_bytes"] == len(data) and logged[1]["body_bytes"] < len(data)


def test_after_fault_loses_the_response_of_a_conditional_put(server, bucket):
    retrying = server.client("path", retries={"total_max_attempts": 3, "mode": "standard"})
    single = server.client("path", **NO_RETRY)
    try:
        server.add_fault(
            op="PutObject",
            bucket=bucket,
            status=503,
            code="SlowDown",
            message="Reduce rate",
            phase="after",
        )
        with pytest.raises(ClientError) as exc:  # the retry meets its own first write
            retrying.put_object(Bucket=bucket, Key="k", Body=b"first", IfNoneMatch="*")
        assert error_of(exc) == (412, "PreconditionFailed")
        assert body(single, bucket, "k") == b"first"
        logged = log_of(server, bucket, "PutObject")
        assert [(r["status"], r["fault"]) for r in logged] == [(503, "after"), (412, False)]

        server.add_fault(
            op="PutObject",
            bucket=bucket,
            status=500,
            code="InternalError",
            message="lost",
            phase="after",
        )
        with pytest.raises(ClientError) as exc:
            single.put_object(Bucket=bucket, Key="k2", Body=b"second", IfNoneMatch="*")
        assert error_of(exc) == (500, "InternalError")
        assert body(single, bucket, "k2") == b"second"

        server.add_fault(
            op="DeleteObject", bucket=bucket, status=500, code="InternalError", phase="after"
        )
        with pytest.raises(ClientError):
            single.delete_object(Bucket=bucket, Key="k2")
        assert not exists(single, bucket, "k2")
        assert [r["phase"] for r in server.faults()] == ["after"] * 3
    finally:
        server.clear_faults()
    with pytest.raises(RuntimeError):
        server.add_fault(op="PutObject", phase="later")


def test_a_rule_with_a_rate_fires_on_that_fraction_reproducibly_by_seed(server, bucket):
    """A soak's background of faults: ``rate`` fires on about that share of the matching
    requests, the same ones again for the same ``seed``, and ``times`` still caps it."""
    c = server.client("path", **NO_RETRY)

    def outcomes(n: int) -> list[bool]:
        failed = []
        for _ in range(n):
            with pytest.raises(ClientError) as exc:
                c.head_object(Bucket=bucket, Key="missing")  # 404, unless the rule fires
            failed.append(error_of(exc)[0] == 503)
        return failed

    try:
        server.add_fault(op="HeadObject", bucket=bucket, rate=0.25, seed=7, times=-1)
        first = outcomes(200)
        assert 25 <= sum(first) <= 75, sum(first)
        assert server.faults()[0]["fired"] == sum(first)
        server.clear_faults()
        server.add_fault(op="HeadObject", bucket=bucket, rate=0.25, seed=7, times=-1)
        assert outcomes(200) == first
        server.clear_faults()
        server.add_fault(op="HeadObject", bucket=bucket, rate=0.5, seed=1, times=3)
        assert sum(outcomes(50)) == 3
        with pytest.raises(RuntimeError):
            server.add_fault(op="HeadObject", rate=1.5)
    finally:
        server.clear_faults()
    assert not any(outcomes(5))


# ---------------------------------------------------------------- control API ------
def test_control_reset_requests_and_seed(server, bucket, s3):
    seeded = server.seed(
        bucket,
        [
            {"key": "sized", "size": 3 * MiB + 1},
            {"key": "raw", "body_b64": base64.b64encode(b"\x00\x01raw").decode()},
        ],
    )
    assert [(o["key"], o["size"]) for o in seeded] == [("sized", 3 * MiB + 1), ("raw", 5)]
    assert body(s3, bucket, "sized") == pattern("sized", 3 * MiB + 1)
    assert body(s3, bucket, "raw") == b"\x00\x01raw"
    assert s3.head_object(Bucket=bucket, Key="raw")["ETag"] == seeded[1]["etag"]
    assert pattern("x", 3 * MiB)[: 1 << 20] != pattern("x", 3 * MiB)[1 << 20 : 2 << 20]
    server.reset()
    assert server.all_counts() == {"primary": {}, "lota": {}} and server.requests() == []
    s3.put_object(Bucket=bucket, Key="m", Body=b"1", Metadata={"mtime": "5"}, IfNoneMatch="*")
    entries = server.requests()
    assert len(entries) == 1
    entry = entries[0]
    assert entry["endpoint"] == "primary" and entry["op"] == "PutObject" and entry["status"] == 200
    assert entry["bucket"] == bucket and entry["key"] == "m"
    assert entry["headers"]["If-None-Match"] == "*" and entry["metadata"] == {"mtime": "5"}
    assert server.counts() == {"PutObject": 1}


def test_process_entry_point_and_demo():
    out = subprocess.run(
        [sys.executable, "-m", "cwfs.server", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "--lota-port" in out.stdout
    with EmbeddedServer.start(demo=True, buckets=("extra-bucket",)) as srv:
        assert srv.lota_url is None and srv.url.startswith("http://127.0.0.1:")
        c = srv.client("virtual")
        keys = {o["Key"] for o in c.list_objects_v2(Bucket="demo")["Contents"]}
        assert {"README.txt", "empty/", "docs/notes/todo.txt", "data/sample.bin"} <= keys
        assert len(body(c, "demo", "data/sample.bin")) > 5 * MiB
        c.head_bucket(Bucket="extra-bucket")
        process = srv._process
    assert process.returncode == 0  # clean exit on SIGTERM
