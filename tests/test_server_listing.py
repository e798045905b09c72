"""The embedded server's listings come from a sorted index of each bucket's keys.

In-process: the index follows every change of moto's key store, a page reads O(page)
names whatever the bucket holds, and pages equal moto's own for any keys and request
(hypothesis). Over HTTP: the XML equals that of a server listing as moto does
(``--moto-listing``) for a varied bucket, ListObjects (v1) pages prefixes as S3 does, the
index stays right through every kind of write, and 100,000 keys list in 100 pages.
"""

from __future__ import annotations

import itertools
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from hypothesis import given, settings
from hypothesis import strategies as st
from moto.s3.models import FakeDeleteMarker, FakeKey, S3Backend

from cwfs.server.control import EmbeddedServer
from cwfs.server.keyindex import (
    IndexedKeyStore,
    list_objects,
    list_objects_v2,
    list_page,
    past_prefix,
)

# moto's own listings: nothing in the test process installs the index over them.
MOTO_LIST_V1 = S3Backend.list_objects
MOTO_LIST_V2 = S3Backend.list_objects_v2
_names = itertools.count()


# ---------------------------------------------------------------- in-process -------
class CountingList(list):
    """A list that counts the items read from it (bisect reads through __getitem__ too)."""

    reads = 0

    def __getitem__(self, index):
        self.reads += 1
        return super().__getitem__(index)


def stored(backend: S3Backend, keys: list[str], versioned: bool = False):
    """A new bucket of ``backend`` with an indexed key store holding ``keys``."""
    name = f"bucket-{next(_names)}"
    bucket = backend.create_bucket(name, "us-east-1")
    bucket.keys = IndexedKeyStore()
    if versioned:
        backend.put_bucket_versioning(name, "Enabled")
    for key in keys:
        backend.put_object(name, key, b"x", disable_notification=True)
    return bucket


@pytest.fixture(scope="module")
def backend() -> S3Backend:
    return S3Backend("us-east-1", "123456789012")


def live_names(store: IndexedKeyStore) -> list[str]:
    return sorted(n for n, v in dict.items(store) if v and not isinstance(v[-1], FakeDeleteMarker))


def test_index_follows_every_change_of_the_store(backend):
    bucket = stored(backend, ["b", "a", "c/d", "c"])
    store, name = bucket.keys, bucket.name
    assert store.names == ["a", "b", "c", "c/d"]
    backend.put_object(name, "a", b"again", disable_notification=True)
    backend.delete_object(name, "b")
    backend.copy_object(store["c"], name, "aa")
    key = store["c/d"]
    store.detach("c/d")
    key.name = "z"
    store.setlist("z", [key])
    assert store.names == live_names(store) == ["a", "aa", "c", "z"]
    with pytest.raises(KeyError):
        store.pop("missing")
    assert store.names == ["a", "aa", "c", "z"]


def test_index_leaves_out_names_whose_latest_version_is_a_delete_marker(backend):
    bucket = stored(backend, ["d/x", "d/y", "e"], versioned=True)
    backend.delete_object(bucket.name, "d/x")
    backend.put_object(bucket.name, "e", b"2", disable_notification=True)
    assert bucket.keys.names == live_names(bucket.keys) == ["d/y", "e"]
    backend.delete_object(bucket.name, "d/y")
    assert list_page(bucket.keys, "", "/", None, 1000) == [bucket.keys["e"]]
    version = bucket.keys.getlist("d/y")[-1].version_id  # the delete marker's
    backend.delete_object(bucket.name, "d/y", version_id=version)
    assert bucket.keys.names == ["d/y", "e"]


def test_past_prefix():
    assert past_prefix("a/") == "a0"
    assert past_prefix("a\U0010ffff") == "b"
    assert past_prefix("\U0010ffff") is None


def counted_store(count: int, folders: int) -> IndexedKeyStore:
    """``count`` names spread over ``folders`` folders, values stood in by one object."""
    store = IndexedKeyStore()
    value = object()
    for folder in range(folders):
        for i in range(folder, count, folders):
            store[f"f{folder:03d}/k{i:07d}"] = value
    store.names = CountingList(store.names)
    return store


@pytest.mark.parametrize("count", [10_000, 200_000])
def test_a_page_reads_o_page_names_however_big_the_bucket(count):
    store = counted_store(count, folders=100)
    after = store.names[count // 2]
    store.names.reads = 0
    page = list_page(store, "", None, after, 1000)
    assert len(page) == 1001
    assert store.names.reads <= 1001 + 2 * count.bit_length()
    store.names.reads = 0
    page = list_page(store, "", "/", None, 1000)  # one common prefix per folder
    assert page == [f"f{i:03d}/" for i in range(100)]
    assert store.names.reads <= 101 * (1 + count.bit_length())


SEGMENTS = ["a", "b", "a b", "ü", "%", "+", "a-b", "\U0010ffff", ""]
names = st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=4).map("/".join)


@st.composite
def cut(draw, texts):
    """A leading part of a drawn text (a prefix or StartAfter near the keys)."""
    text = draw(texts)
    return text[: draw(st.integers(0, len(text)))]


def entry_names(entries) -> list[str]:
    return [e.name if isinstance(e, FakeKey) else e for e in entries]


@settings(max_examples=150, deadline=None)
@given(
    keys=st.lists(names.filter(bool), max_size=25, unique=True),
    prefix=st.one_of(st.none(), cut(names)),
    delimiter=st.sampled_from([None, "", "/", "-", "b/"]),
    after=st.one_of(st.none(), cut(names)),
    max_keys=st.sampled_from([0, 1, 2, 3, 1000]),
)
def test_pages_equal_moto_s(backend, keys, prefix, delimiter, after, max_keys):
    """Page by page: V2 as moto's; v1 as moto's without a delimiter, else as V2's."""
    bucket = stored(backend, keys)
    token = None
    for _ in range(len(keys) + 2):
        args = (bucket, prefix, delimiter, token, after if token is None else None, max_keys)
        entries, truncated, next_token = list_objects_v2(backend, *args)
        expected = MOTO_LIST_V2(backend, *args)
        assert (entry_names(entries), truncated, next_token) == (
            entry_names(expected[0]),
            expected[1],
            expected[2],
        )
        v1 = list_objects(backend, bucket, prefix, delimiter, token or after, max_keys)
        assert (sorted(entry_names(v1[0] + v1[1])), v1[2], v1[3]) == (
            sorted(entry_names(entries)),
            truncated,
            next_token,
        )
        if not delimiter:
            assert entry_names(MOTO_LIST_V1(backend, *args[:3], token or after, max_keys)[0]) == (
                entry_names(v1[0])
            )
        token = next_token
        if not truncated:
            break
    assert not truncated


# ---------------------------------------------------------------- over HTTP --------
@pytest.fixture(scope="module")
def moto_server() -> Iterator[EmbeddedServer]:
    """A server that lists as moto does, walking the whole bucket."""
    with EmbeddedServer.start(extra_args=["--moto-listing"]) as srv:
        yield srv


def get_xml(server: EmbeddedServer, bucket: str, query: dict[str, str]) -> tuple[int, bytes]:
    """A signed GET on the bucket with exactly this query; (status, body)."""
    encoded = urllib.parse.urlencode(query, quote_via=urllib.parse.quote, safe="")
    url = f"{server.url}/{bucket}?{encoded}"
    req = AWSRequest(method="GET", url=url)
    S3SigV4Auth(Credentials(server.access_key, server.secret_key), "s3", "us-east-1").add_auth(req)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url, method="GET", headers=dict(req.headers))
    try:
        with opener.open(request) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def comparable(xml: bytes) -> bytes:
    """The XML without what differs between two servers holding the same objects."""
    xml = re.sub(rb"<LastModified>\d{4}(-\d\d){2}T(\d\d:){2}\d\d\.000Z<", b"<LastModified><", xml)
    return re.sub(rb"<RequestId>[^<]*</RequestId>", b"<RequestId/>", xml)


def xml_pages(server: EmbeddedServer, bucket: str, query: dict[str, str]) -> list[bytes]:
    """Every page of a listing, following NextContinuationToken / NextMarker."""
    pages = []
    for _ in range(100):
        status, xml = get_xml(server, bucket, query)
        pages.append(str(status).encode() + b" " + comparable(xml))
        found = re.search(rb"<Next(ContinuationToken|Marker)>([^<]*)<", xml)
        if status != 200 or found is None:
            return pages
        name = "continuation-token" if found[1] == b"ContinuationToken" else "marker"
        query = {**query, name: found[2].decode()}
    raise AssertionError(f"more than 100 pages: {pages[-3:]}")


VARIED_KEYS = [
    "a",
    "a/",
    "a/b",
    "a/b/",
    "a/b/c",
    "a/b/c/d.txt",
    "a/b c/ü.txt",
    "a//double",
    "a b",
    "a%20b",
    "a%2Fb/x",
    "a+b",
    "a+b/c+d",
    "b/",
    "b/x",
    "dir with space/file one",
    "100%/x",
    "quote'\"&<>/q",
    "ü",
    "ü/ñ/é.txt",
    "日本/語.txt",
    "z-1",
    "z-2/x",
    *(f"many/{i:04d}" for i in range(30)),
    *(f"pages/d{i:02d}/x" for i in range(25)),
]
PREFIXES = ["", "a", "a/", "a/b", "a/b/c/d.txt", "a%", "a+", "ü", "dir with space/"]
PREFIXES += ["many/", "pages/", "quote'", "nope"]
VARIANTS = [
    {},
    {"max-keys": "3", "encoding-type": "url"},
    {"max-keys": "7", "start-after": "a/b", "fetch-owner": "true"},
    {"max-keys": "2", "start-after": "many/0010", "encoding-type": "url"},
]


@pytest.fixture(scope="module")
def varied(server, moto_server) -> str:
    """The same varied bucket on both servers."""
    name = f"varied-{next(_names)}"
    for srv in (server, moto_server):
        srv.seed(name, [{"key": k, "text": k} for k in VARIED_KEYS])
        srv.client().put_object(Bucket=name, Key="a/crc", Body=b"c", ChecksumAlgorithm="CRC32C")
    return name


@pytest.mark.parametrize("delimiter", [None, "/", "b"])
@pytest.mark.parametrize("prefix", PREFIXES)
def test_v2_xml_equals_moto_s(server, moto_server, varied, prefix, delimiter):
    for variant in VARIANTS:
        query = {"list-type": "2", "prefix": prefix, **variant}
        if delimiter:
            query["delimiter"] = delimiter
        assert xml_pages(server, varied, query) == xml_pages(moto_server, varied, query)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_v1_xml_equals_moto_s(server, moto_server, varied, prefix):
    """Without a delimiter, page by page; with one, where moto's answer fits one page."""
    queries = [
        {"prefix": prefix},
        {"prefix": prefix, "max-keys": "3", "marker": "a/b", "encoding-type": "url"},
        {"prefix": prefix, "delimiter": "/"},
        {"prefix": prefix, "delimiter": "/", "encoding-type": "url"},
    ]
    for query in queries:
        assert xml_pages(server, varied, query) == xml_pages(moto_server, varied, query)


def test_bad_continuation_token_and_max_keys_cap(server, bucket, s3):
    server.seed(bucket, [{"key": f"k{i:04d}", "size": 0} for i in range(1001)])
    with pytest.raises(ClientError) as exc:
        s3.list_objects_v2(Bucket=bucket, ContinuationToken="not-a-token")
    assert exc.value.response["Error"]["Code"] == "InvalidArgument"
    page = s3.list_objects_v2(Bucket=bucket, MaxKeys=5000)
    assert page["KeyCount"] == 1000 and page["IsTruncated"]
    page = s3.list_objects(Bucket=bucket, MaxKeys=5000)
    assert len(page["Contents"]) == 1000 and page["IsTruncated"]


def test_v1_pages_common_prefixes_as_s3_does(server, bucket, s3):
    """Common prefixes count toward MaxKeys and follow the marker, each listed once."""
    keys = [f"d{i:04d}/x" for i in range(1500)] + [f"d{i:04d}" for i in range(0, 1500, 3)]
    server.seed(bucket, [{"key": k, "size": 0} for k in keys])
    listed, pages = [], 0
    marker = ""
    while True:
        page = s3.list_objects(Bucket=bucket, Delimiter="/", Marker=marker)
        entries = [c["Prefix"] for c in page.get("CommonPrefixes", [])]
        entries += [o["Key"] for o in page.get("Contents", [])]
        assert len(entries) <= 1000
        listed += entries
        pages += 1
        if not page["IsTruncated"]:
            break
        marker = page["NextMarker"]
    assert pages == 2 and sorted(listed) == sorted(k.rstrip("x") for k in keys)


def listed(s3, bucket: str, version: int = 2, **params) -> list[str]:
    """Every key and common prefix of a listing, through boto3's paginator."""
    op = "list_objects_v2" if version == 2 else "list_objects"
    out = []
    for page in s3.get_paginator(op).paginate(Bucket=bucket, **params):
        out += [o["Key"] for o in page.get("Contents", [])]
        out += [c["Prefix"] for c in page.get("CommonPrefixes", [])]
    return sorted(out)


def test_index_stays_right_through_every_write(server, bucket, s3):
    server.seed(bucket, [{"key": k, "size": 1} for k in ("seeded/1", "seeded/2", "gone")])
    s3.put_object(Bucket=bucket, Key="put", Body=b"1", IfNoneMatch="*")
    s3.copy_object(Bucket=bucket, Key="copied", CopySource={"Bucket": bucket, "Key": "put"})
    upload = s3.create_multipart_upload(Bucket=bucket, Key="multi")["UploadId"]
    etag = s3.upload_part(Bucket=bucket, Key="multi", UploadId=upload, PartNumber=1, Body=b"m")
    parts = {"Parts": [{"PartNumber": 1, "ETag": etag["ETag"]}]}
    s3.complete_multipart_upload(Bucket=bucket, Key="multi", UploadId=upload, MultipartUpload=parts)
    s3.delete_object(Bucket=bucket, Key="gone")
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "seeded/1"}]})
    s3.rename_object(Bucket=bucket, Key="renamed/x", RenameSource=f"{bucket}/copied")
    expected = ["multi", "put", "renamed/x", "seeded/2"]
    assert listed(s3, bucket) == listed(s3, bucket, version=1) == expected
    assert listed(s3, bucket, Delimiter="/") == ["multi", "put", "renamed/", "seeded/"]
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in expected]})
    s3.delete_bucket(Bucket=bucket)
    s3.create_bucket(Bucket=bucket)
    assert listed(s3, bucket) == []


def test_index_of_a_versioned_bucket(server, bucket, s3):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    for key in ("v/1", "v/2", "w"):
        s3.put_object(Bucket=bucket, Key=key, Body=b"1")
    s3.put_object(Bucket=bucket, Key="w", Body=b"2")
    s3.delete_object(Bucket=bucket, Key="v/1")
    assert listed(s3, bucket) == ["v/2", "w"]
    s3.delete_object(Bucket=bucket, Key="v/2")
    assert listed(s3, bucket, Delimiter="/") == ["w"]
    marker = s3.list_object_versions(Bucket=bucket, Prefix="v/2")["DeleteMarkers"][0]
    s3.delete_object(Bucket=bucket, Key="v/2", VersionId=marker["VersionId"])
    assert listed(s3, bucket, Delimiter="/") == ["v/", "w"]


def test_a_hundred_thousand_keys_list_in_a_hundred_pages():
    """On a server of its own, which takes the 100,000 objects away when it stops."""
    keys = [f"dir{i % 100:02d}/file-{i:06d}" for i in range(100_000)]
    with EmbeddedServer.start() as srv:
        srv.seed("big", [{"key": k, "size": 0} for k in keys])
        s3 = srv.client()
        assert listed(s3, "big") == sorted(keys)
        assert srv.counts()["ListObjectsV2"] == 100
        assert listed(s3, "big", Delimiter="/") == [f"dir{i:02d}/" for i in range(100)]
        assert listed(s3, "big", version=1, Prefix="dir07/") == sorted(keys[7::100])
