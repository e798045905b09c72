"""ListObjectsV2 answers read without botocore; through the store, the same pages as
botocore's for awkward keys."""

from __future__ import annotations

import pytest
import trio

from cwfs.listxml import BadListing, parse_list_result
from cwfs.store import ObjectStore

NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'


def page(inner: str, ns: str = NS) -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult {ns}>{inner}</ListBucketResult>'.encode()


def test_a_page_with_and_without_the_s3_namespace():
    inner = (
        "<IsTruncated>true</IsTruncated><NextContinuationToken>t1</NextContinuationToken>"
        "<Contents><Key>d/a b</Key><Size>7</Size><LastModified>2026-12-03T10:00:00.000Z"
        "</LastModified><ETag>&quot;e1&quot;</ETag></Contents>"
        "<CommonPrefixes><Prefix>d/sub/</Prefix></CommonPrefixes>"
    )
    for ns in (NS, ""):
        result = parse_list_result(page(inner, ns))
        assert [(o.key, o.size, o.etag) for o in result.objects] == [("d/a b", 7, '"e1"')]
        assert result.objects[0].last_modified == "2026-12-03T10:00:00.000Z"
        assert (result.prefixes, result.next_token) == (["d/sub/"], "t1")


def test_url_encoded_keys_are_decoded_only_when_the_answer_says_so():
    inner = "<Contents><Key>a+b%2Bc%25%0A%C3%BC</Key><Size>1</Size></Contents>"
    encoded = parse_list_result(page("<EncodingType>url</EncodingType>" + inner))
    assert encoded.objects[0].key == "a b+c%\nü"
    assert parse_list_result(page(inner)).objects[0].key == "a+b%2Bc%25%0A%C3%BC"
    assert parse_list_result(page("<IsTruncated>false</IsTruncated>")).next_token is None


@pytest.mark.parametrize("body", [b"<Error><Code>x</Code></Error>", b"<ListBucketResult>", b""])
def test_anything_else_is_a_bad_listing(body):
    with pytest.raises(BadListing):
        parse_list_result(body)


ODD_KEYS = [
    "odd/a b",
    "odd/plus+sign",
    "odd/percent%2B",
    "odd/ünïcödé",
    "odd/tab\tname",
    "odd/new\nline",
    "odd/amp&lt;",
    "odd/sub/x",
    "odd/~tilde",
]


def test_pages_on_the_wire_equal_botocores(server, bucket, store_settings):
    server.seed(bucket, [{"key": key, "size": len(key)} for key in ODD_KEYS])

    async def pages(wire: bool) -> list[object]:
        store = ObjectStore(store_settings)
        if not wire:
            store._wire = None  # botocore's path, as through a proxy
        found, token = [], None
        for delimiter in ("/", ""):
            while True:
                listed = await store.list_page("odd/", token, delimiter, max_keys=3)
                found.append(listed)
                if (token := listed.next_token) is None:
                    break
        found.append(await store.list_page("odd/", None, "", start_after="odd/plus+sign"))
        return found

    server.reset()
    ours, theirs = trio.run(pages, True), trio.run(pages, False)
    assert ours == theirs
    assert {o.key for p in ours[:-1] for o in p.objects} >= set(ODD_KEYS) - {"odd/sub/x"}
    assert server.counts()["ListObjectsV2"] == 2 * len(ours)


OBJECT = (
    "<Contents><Key>{key}</Key><LastModified>2026-12-03T10:00:00.000Z</LastModified>"
    "<ETag>&quot;e1&quot;</ETag><ChecksumAlgorithm>CRC32</ChecksumAlgorithm><Size>7</Size>"
    "<Owner><ID>o</ID><DisplayName>d</DisplayName></Owner><StorageClass>STANDARD</StorageClass>"
    "</Contents>"
)
PAGES = {
    "s3 order": "<Prefix>p/</Prefix>" + OBJECT.format(key="p/a") + OBJECT.format(key="p/b"),
    "other order": "<Contents><Size>3</Size><ETag>x</ETag><Key>k</Key></Contents>",
    "indented": "\n  <Contents>\n    <Key>k</Key>\n    <Size> 3 </Size>\n  </Contents>\n",
    "references": OBJECT.format(key="a&amp;b&lt;&#233;&#x1F600;"),
    "url-encoded": "<EncodingType>url</EncodingType>" + OBJECT.format(key="a+b%0A%2F%C3%BC"),
    "prefixes": "<CommonPrefixes><Prefix>d/a%20b/</Prefix></CommonPrefixes>"
    "<CommonPrefixes><Prefix>d/c/</Prefix></CommonPrefixes><EncodingType>url</EncodingType>",
    "truncated": "<IsTruncated>true</IsTruncated><NextContinuationToken>a&amp;b"
    "</NextContinuationToken>" + OBJECT.format(key="k"),
    "no size": "<Contents><Key>k</Key></Contents>",
    # read with ElementTree: not written the way the scanner expects
    "prefixed root": "",
    "attribute": '<Contents><Key type="x">k</Key><Size>1</Size></Contents>',
    "spaced tag": "<Contents ><Key>k</Key></Contents >",
    "spaced field": "<Contents><Key>k</Key><Size >4</Size></Contents>",
    "empty field": "<Contents><Key>k</Key><ETag/></Contents>",
    "prefixed element": "<s3:Contents><s3:Key>k</s3:Key></s3:Contents>",
    "cdata": "<Contents><Key><![CDATA[a<b]]></Key></Contents>",
    "comment": "<Contents><!-- x --><Key>k</Key></Contents>",
    "carriage return": "<Contents><Key>a\r\nb</Key></Contents>",
}


@pytest.mark.parametrize("name", PAGES)
def test_a_scanned_page_reads_as_elementtree_reads_it(name):
    """The scanner and ElementTree agree on every page (the scanner falling back to
    ElementTree where it does not recognise how a page is written)."""
    from cwfs.listxml import _parse_tree, _plain, _scan

    bound = ' xmlns:s3="http://s3.amazonaws.com/doc/2006-03-01/"' if "prefixed" in name else ""
    body = page(PAGES[name], NS + bound)
    if name == "prefixed root":
        body = b'<s3:ListBucketResult xmlns:s3="x"><s3:Contents><s3:Key>k</s3:Key>'
        body += b"</s3:Contents></s3:ListBucketResult>"
    text = body.decode()
    scanned = _scan(text) if _plain(text) else None
    expect_scan = name in list(PAGES)[: list(PAGES).index("prefixed root")]
    assert (scanned is not None) == expect_scan
    assert parse_list_result(body) == _parse_tree(body)
    assert parse_list_result(body).objects or name == "prefixes"
