"""A small HTTP proxy in front of the moto server that injects faults for chosen keys: the real server keeps
the data, the proxy makes some requests fail (503), arrive corrupted, arrive cut short, or arrive slowly; and it
answers as real S3 does where moto does not: opaque ETags of SSE-KMS and SSE-C objects, SSE-C keys required,
CRC64NVME FULL_OBJECT checksums, a bucket in another region than the request was signed for, requester-pays
buckets, archived objects (403 InvalidObjectState) and a listing page truncated without a continuation token."""

from __future__ import annotations

import base64
import hashlib
import http.client
import re
import threading
import time
import urllib.parse
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anycrc

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
ERROR_503 = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>ServiceUnavailable</Code>'
    b"<Message>Injected fault</Message></Error>"
)
_SIGNED_REGION = re.compile(r"Credential=[^/,]+/\d{8}/([^/,]+)/s3/")
_CONTENTS = re.compile(rb"<Contents>.*?</Contents>", re.S)
_ETAG = re.compile(rb"<ETag>(?:&quot;|\")?([0-9a-f]{32}(?:-\d+)?)(?:&quot;|\")?</ETag>")
_KEY = re.compile(rb"<Key>(.*?)</Key>", re.S)


def error(code: str, message: str, **extra: str) -> bytes:
    fields = "".join(f"<{k}>{v}</{k}>" for k, v in extra.items())
    return (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{message}</Message>{fields}</Error>'
    ).encode()


def opaque(etag: str) -> str:
    """An ETag shaped like an MD5 (and ``-N`` for a multipart upload) that is not one, as S3 gives SSE-KMS and
    SSE-C objects."""
    digest, sep, parts = etag.partition("-")
    return hashlib.md5(b"encrypted:" + digest.encode()).hexdigest() + (f"-{parts}" if sep else "")


class FaultProxy:
    """``fail``: keys ("bucket/key") whose GETs always get 503; ``flaky``: key -> number of 503s before success;
    ``corrupt``: keys whose GET bodies get one byte flipped; ``truncate``: key -> number of GETs whose connection
    drops after half the body (the full Content-Length announced); ``delay``: seconds added to every object GET.

    Real-S3 behaviours, by "bucket/key" (or bucket): ``kms``: objects encrypted with SSE-KMS (opaque ETags in the
    listing, HEAD and GET; ``x-amz-server-side-encryption: aws:kms``); ``sse_c``: key -> the customer key the
    object was encrypted with (GET and HEAD refused with 400 without it, opaque ETags); ``crc64nvme``: objects
    whose only stored checksum is S3's full-object CRC64NVME (HEADs and whole GETs answer it, with
    ``x-amz-checksum-type: FULL_OBJECT``, and no other); ``bucket_region``: bucket -> its region (a request signed
    for another gets 400 AuthorizationHeaderMalformed with ``x-amz-bucket-region``; counted in ``wrong_region``);
    ``requester_pays``: buckets refusing (403) any request without ``x-amz-request-payer: requester``; ``cold``:
    objects archived in a tier the listing does not show (GET: 403 InvalidObjectState); ``restored``: archived
    objects whose restore finished (the listing's RestoreStatus says so when asked, as moto's does not);
    ``truncate_listing``: listing pages that say IsTruncated give no NextContinuationToken.

    Finding a bucket's region without s3:ListBucket: ``refuse_head_bucket``: bucket -> whether its HeadBucket's
    403 names the region in ``x-amz-bucket-region`` (as S3's does; ``False``: as an intermediary stripping it would);
    ``refuse_location``: buckets whose GetBucketLocation gets 403 (otherwise it is answered whatever region it was
    signed for, with the bucket's region, as S3 answers it); ``unnamed_region``: buckets whose answers never name
    their region (no ``x-amz-bucket-region``, no ``Region`` in error bodies), as a gateway that strips them would
    leave them. ``bucket_requests`` counts requests by kind ("HEAD bucket", "GET location", ...)."""

    def __init__(self, upstream: str) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream = (parsed.hostname, parsed.port)
        self.fail: set[str] = set()
        self.flaky: dict[str, int] = {}
        self.corrupt: set[str] = set()
        self.truncate: dict[str, int] = {}
        self.delay = 0.0
        self.kms: set[str] = set()
        self.sse_c: dict[str, bytes] = {}
        self.crc64nvme: set[str] = set()
        self.bucket_region: dict[str, str] = {}
        self.requester_pays: set[str] = set()
        self.cold: set[str] = set()
        self.restored: set[str] = set()
        self.truncate_listing = False
        self.refuse_head_bucket: dict[str, bool] = {}
        self.refuse_location: set[str] = set()
        self.unnamed_region: set[str] = set()
        self.bucket_requests: Counter[str] = Counter()
        self.wrong_region: Counter[str] = Counter()  # request kind ("GET bucket/key", "HEAD bucket") -> refusals
        self.signed_regions: Counter[str] = Counter()  # region each object GET was signed for
        self._real_etags: dict[str, str] = {}  # opaque ETag -> the server's
        self._crcs: dict[str, str] = {}
        self.gets: Counter[str] = Counter()
        self.get_sizes: dict[str, list[int]] = {}  # key -> body size of each successful GET relayed
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                split = urllib.parse.urlsplit(self.path)
                target = urllib.parse.unquote(split.path).lstrip("/")
                query = urllib.parse.parse_qs(split.query, keep_blank_values=True)  # "?location" has no value
                bucket = target.split("/")[0]
                is_object_read = self.command in ("GET", "HEAD") and "/" in target.rstrip("/")
                if self._refused(target, bucket, query, is_object_read):
                    return
                if is_object_read:
                    with proxy._lock:
                        proxy.gets[target] += 1
                        left = proxy.flaky.get(target, 0)
                        if left:
                            proxy.flaky[target] = left - 1
                    if target in proxy.fail or left:
                        self._reply(503, {"Content-Type": "application/xml"}, ERROR_503)
                        return
                    if proxy.delay:
                        time.sleep(proxy.delay)
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                path = self.path
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                    match = headers.get("If-Match", "").strip('"')
                    if match in proxy._real_etags:
                        headers["If-Match"] = f'"{proxy._real_etags[match]}"'
                    conn.request(self.command, path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    out = {k: v for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP | {"content-length"}}
                finally:
                    conn.close()
                if is_object_read and resp.status in (200, 206):
                    self._as_real_s3(target, out, query)
                if "list-type" in query and resp.status == 200:
                    data = self._listing(data, query)
                if self.command == "GET" and is_object_read and resp.status in (200, 206):
                    with proxy._lock:
                        proxy.get_sizes.setdefault(target, []).append(len(data))
                if self.command == "GET" and target in proxy.corrupt and data:
                    data = bytes([data[0] ^ 0xFF]) + data[1:]
                if self.command == "GET" and is_object_read and resp.status in (200, 206) and len(data) > 1:
                    with proxy._lock:
                        cut = proxy.truncate.get(target, 0)
                        if cut:
                            proxy.truncate[target] = cut - 1
                    if cut:
                        self._reply(resp.status, out, data, cut_at=len(data) // 2)
                        return
                if self.command == "HEAD":  # the object's length, as S3 says it; _reply sends no body
                    out["Content-Length"] = resp.getheader("Content-Length") or "0"
                self._reply(resp.status, out, data)

            def _refused(self, target: str, bucket: str, query: dict, is_object_read: bool) -> bool:
                """Answer as real S3 refuses a request moto would serve; True when it did."""
                signed = _SIGNED_REGION.search(self.headers.get("Authorization", ""))
                region = signed.group(1) if signed else None
                if region is None and "X-Amz-Credential" in query:
                    region = query["X-Amz-Credential"][0].split("/")[2]
                home = proxy.bucket_region.get(bucket)
                head = self.command == "HEAD"
                named = {} if bucket in proxy.unnamed_region or not home else {"x-amz-bucket-region": home}
                if not is_object_read:
                    kind = "location" if "location" in query else "bucket"
                    with proxy._lock:
                        proxy.bucket_requests[f"{self.command} {kind}"] += 1
                if head and not is_object_read and bucket in proxy.refuse_head_bucket:
                    self._reply(403, named if proxy.refuse_head_bucket[bucket] else {}, b"")
                    return True
                if self.command == "GET" and "location" in query and not is_object_read:
                    if bucket in proxy.refuse_location:
                        self._reply(403, {"Content-Type": "application/xml"}, error("AccessDenied", "Access Denied"))
                    else:
                        body = (
                            '<?xml version="1.0" encoding="UTF-8"?><LocationConstraint xmlns='
                            f'"http://s3.amazonaws.com/doc/2006-03-01/">{home or ""}</LocationConstraint>'
                        ).encode()
                        self._reply(200, {"Content-Type": "application/xml"}, body)
                    return True
                if home and region and region != home:
                    with proxy._lock:
                        proxy.wrong_region[f"{self.command} {'object' if is_object_read else 'bucket'}"] += 1
                    message = (
                        f"The authorization header is malformed; the region '{region}' is wrong; expecting '{home}'"
                    )
                    if bucket in proxy.unnamed_region:
                        message = "The authorization header is malformed; the region is wrong"
                        body = error("AuthorizationHeaderMalformed", message)
                    else:
                        body = error("AuthorizationHeaderMalformed", message, Region=home)
                    self._reply(400, {**named, "Content-Type": "application/xml"}, body)
                    return True
                if is_object_read and self.command == "GET" and region:
                    with proxy._lock:
                        proxy.signed_regions[region] += 1
                if bucket in proxy.requester_pays and self.headers.get("x-amz-request-payer") != "requester":
                    body = error("AccessDenied", "Access Denied")
                    self._reply(403, {"Content-Type": "application/xml"}, body)
                    return True
                if target in proxy.sse_c:
                    given = self.headers.get("x-amz-server-side-encryption-customer-key-MD5")
                    wanted = base64.b64encode(hashlib.md5(proxy.sse_c[target]).digest()).decode()
                    key = self.headers.get("x-amz-server-side-encryption-customer-key", "")
                    if given != wanted or base64.b64decode(key or "") != proxy.sse_c[target]:
                        message = (
                            "The object was stored using a form of Server Side Encryption. The correct parameters "
                            "must be provided to retrieve the object."
                        )
                        body = error("InvalidRequest", message)
                        self._reply(400, {"Content-Type": "application/xml"}, body)
                        return True
                if target in proxy.cold and self.command == "GET":
                    message = "The operation is not valid for the object's access tier"
                    self._reply(403, {"Content-Type": "application/xml"}, error("InvalidObjectState", message))
                    return True
                return False

            def _as_real_s3(self, target: str, out: dict[str, str], query: dict) -> None:
                """Response headers of an object read as real S3 gives them for the object's encryption and
                checksum."""
                etag_header = next((k for k in out if k.lower() == "etag"), None)
                if target in proxy.kms or target in proxy.sse_c:
                    if etag_header:
                        real = out[etag_header].strip('"')
                        fake = opaque(real)
                        proxy._real_etags[fake] = real
                        out[etag_header] = f'"{fake}"'
                    if target in proxy.kms:
                        out["x-amz-server-side-encryption"] = "aws:kms"
                        out["x-amz-server-side-encryption-aws-kms-key-id"] = "arn:aws:kms:eu-west-2:1:key/test"
                    else:
                        out["x-amz-server-side-encryption-customer-algorithm"] = "AES256"
                        key = proxy.sse_c[target]
                        out["x-amz-server-side-encryption-customer-key-MD5"] = base64.b64encode(
                            hashlib.md5(key).digest()
                        ).decode()
                if target in proxy.crc64nvme:
                    for k in [k for k in out if k.lower().startswith("x-amz-checksum-")]:
                        del out[k]
                    whole = "Range" not in self.headers and "partNumber" not in query
                    if whole and self.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED":
                        out["x-amz-checksum-crc64nvme"] = self._crc64nvme(target)
                        out["x-amz-checksum-type"] = "FULL_OBJECT"

            def _crc64nvme(self, target: str) -> str:
                if target not in proxy._crcs:
                    conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                    # the request's own credentials (moto checks who asks, not the signature), the whole object
                    keep = {"authorization", "x-amz-date", "x-amz-content-sha256", "x-amz-security-token"}
                    headers = {k: v for k, v in self.headers.items() if k.lower() in keep}
                    try:
                        conn.request("GET", "/" + urllib.parse.quote(target), headers=headers)
                        resp = conn.getresponse()
                        data = resp.read()
                        assert resp.status == 200, (resp.status, data[:200])
                    finally:
                        conn.close()
                    value = anycrc.Model("CRC64-NVME").calc(data)
                    proxy._crcs[target] = base64.b64encode(value.to_bytes(8, "big")).decode()
                return proxy._crcs[target]

            def _listing(self, data: bytes, query: dict) -> bytes:
                """A listing page with the ETags of encrypted objects made opaque, and cut off as asked."""
                bucket = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path).strip("/")
                hidden = proxy.kms | set(proxy.sse_c)
                asked = self.headers.get("x-amz-optional-object-attributes", "")

                def rewrite(block: re.Match[bytes]) -> bytes:
                    text = block.group(0)
                    key = _KEY.search(text)
                    if key and f"{bucket}/{key.group(1).decode()}" in hidden:
                        text = _ETAG.sub(hide, text)
                    if key and f"{bucket}/{key.group(1).decode()}" in proxy.restored and "RestoreStatus" in asked:
                        status = (
                            b"<RestoreStatus><IsRestoreInProgress>false</IsRestoreInProgress>"
                            b"<RestoreExpiryDate>2099-01-01T00:00:00.000Z</RestoreExpiryDate></RestoreStatus>"
                        )
                        text = text.replace(b"</Contents>", status + b"</Contents>")
                    return text

                def hide(etag: re.Match[bytes]) -> bytes:
                    real = etag.group(1).decode()
                    proxy._real_etags[opaque(real)] = real  # the If-Match of a GET names the opaque one
                    return b"<ETag>&quot;" + opaque(real).encode() + b"&quot;</ETag>"

                data = _CONTENTS.sub(rewrite, data)
                if proxy.truncate_listing:  # the page still says it is truncated, and gives no way on
                    data = re.sub(rb"<NextContinuationToken>.*?</NextContinuationToken>", b"", data)
                return data

            def _reply(self, status: int, headers: dict[str, str], data: bytes, cut_at: int | None = None) -> None:
                # An answer to a HEAD has no body, whatever the caller built: one written anyway would stay in the
                # keep-alive connection and garble whatever request used it next.
                head = self.command == "HEAD"
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if not head:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if data and not head:
                    self.wfile.write(data if cut_at is None else data[:cut_at])
                if cut_at is not None:
                    self.wfile.flush()
                    self.close_connection = True  # the peer sees EOF short of the announced length

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
