"""Any fsspec file system as a source (``file://`` staging, mounted or remote trees): one ``find(detail=True)``
listing, ranged ``cat_file`` reads in the reading threads."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from proximate.sync.sources.base import ObjectAddress, RemoteObject, Sink, ThreadedSource

#: Reads per ``cat_file`` call, in ``chunk`` units: each read opens the file, so local and mounted sources read
#: fewer, larger pieces.
CHUNKS_PER_READ = 4


class FsspecSource(ThreadedSource):
    """An fsspec tree opened for one run (see :class:`~proximate.sync.sources.base.Source`): its URL
    (``file:///staging/...``, ``memory://...``, a bare path for the local file system) and the file system's
    keyword arguments as storage options; arguments as :class:`~proximate.sync.sources.base.ThreadedSource` takes
    them."""

    def _configure(self, options: dict[str, Any]) -> None:
        import fsspec  # here only: an S3 source never needs it

        self.protocol = fsspec.core.split_protocol(self.url)[0] or "file"
        self.fs = fsspec.filesystem(self.protocol, skip_instance_cache=True, **options)
        self.root = self.fs._strip_protocol(self.url).rstrip("/")

    async def _list(self) -> list[RemoteObject]:
        return await asyncio.to_thread(self._find)

    def _find(self) -> list[RemoteObject]:
        if not self.fs.exists(self.root):
            raise FileNotFoundError(f"{self.root} does not exist")
        found = self.fs.find(self.root, detail=True)
        out = []
        base = self.root + "/"
        for name, info in found.items():
            if info.get("type") != "file" or not name.startswith(base):
                continue
            etag = info.get("ETag") or info.get("etag")
            etag = etag.strip('"') if isinstance(etag, str) else None
            if etag:
                fingerprint = f"etag:{etag}"
            elif info.get("version_id"):
                fingerprint = f"version:{info['version_id']}"
            else:
                fingerprint = f"mtime:{info.get('mtime') or info.get('LastModified') or info.get('last_modified')}"
            out.append(RemoteObject(name, name[len(base) :], int(info["size"]), fingerprint, etag))
        return out

    def _read(
        self, obj: RemoteObject, start: int, end: int, address: ObjectAddress | None, sink: Sink, chunk: int
    ) -> Mapping[str, str]:
        step = CHUNKS_PER_READ * chunk
        for off in range(start, end, step):
            sink.feed(self.fs.cat_file(obj.path, off, min(end, off + step)))
        return {}
