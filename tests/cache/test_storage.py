"""Object storage through a real S3-compatible server on 127.0.0.1 (tests/s3_server.py): listing, versions,
streaming reads, retried dropped connections, and the messages for what cannot be read."""

from __future__ import annotations

import json
import socket
import struct
import threading

import pytest

from vtm.cache import storage
from vtm.cache.storage import StorageError
from vtm.pipeline.discover import content_digest, discover_videos

VIDEO_BYTES = bytes(range(256)) * 800  # 200 KB: several reads, and more than a dropped connection lets through


@pytest.fixture(scope="module")
def bucket(s3_server):
    client = s3_server.client()
    client.create_bucket(Bucket="storage-test")
    for key in ("cams/a.mp4", "cams/sub dir/b.MKV", "cams/notes.txt", "cams/.hidden.mp4", "other/c.mp4"):
        client.put_object(Bucket="storage-test", Key=key, Body=VIDEO_BYTES + key.encode())
    client.put_object(Bucket="storage-test", Key="cams/denied.mp4", Body=VIDEO_BYTES)
    deny = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": "s3:GetObject",
        "Resource": "arn:aws:s3:::storage-test/cams/denied.mp4",
    }
    client.put_bucket_policy(Bucket="storage-test", Policy=json.dumps({"Version": "2012-10-17", "Statement": [deny]}))
    return "s3://storage-test"


def test_listing_finds_the_videos_under_the_prefix_with_their_versions(bucket, tmp_path):
    found = discover_videos(f"{bucket}/cams/")
    assert [v.relpath for v in found] == ["a.mp4", "denied.mp4", "sub dir/b.MKV"]
    a = found[0]
    assert a.path == f"{bucket}/cams/a.mp4" and a.size_bytes == len(VIDEO_BYTES) + len(b"cams/a.mp4")
    assert a.etag and a.mtime_ns > 0
    # The same bytes on local disk have the same digest: an archive moved into the store is not re-extracted for it.
    local = tmp_path / "a.mp4"
    local.write_bytes(VIDEO_BYTES + b"cams/a.mp4")
    assert content_digest(a.path) == content_digest(local)


def test_streaming_reads_and_seeks_like_a_local_file(bucket):
    with storage.open_video(f"{bucket}/cams/a.mp4") as f:
        assert f.read(10) == VIDEO_BYTES[:10]
        f.seek(-5, 2)
        assert f.read() == b"a.mp4"
        f.seek(1000)
        assert f.read(3) == VIDEO_BYTES[1000:1003] and f.tell() == 1003


def test_a_bad_prefix_fails_the_run_with_what_to_do(bucket):
    with pytest.raises(StorageError, match="bucket does not exist.*AWS_ENDPOINT_URL"):
        discover_videos("s3://no-such-bucket/cams")
    with pytest.raises(StorageError, match="nothing found under s3://storage-test/typo"):
        discover_videos(f"{bucket}/typo")


def test_a_denied_or_missing_object_says_which_and_what_to_do(bucket):
    with pytest.raises(StorageError, match=r"s3://storage-test/cams/denied.mp4: access denied .*credentials"):
        storage.open_video(f"{bucket}/cams/denied.mp4").read(10)
    with pytest.raises(StorageError, match="access denied"):
        content_digest(f"{bucket}/cams/denied.mp4")
    with pytest.raises(StorageError, match=r"s3://storage-test/cams/gone.mp4: object not found .*Re-run `vtm extract`"):
        storage.stat_object(f"{bucket}/cams/gone.mp4")


def test_credentials_in_a_url_are_refused_and_never_repeated():
    with pytest.raises(StorageError) as e:
        storage.list_objects("s3://AKIAKEY:s3cr3t@bucket/prefix", (".mp4",))
    assert "s3cr3t" not in str(e.value) and "environment" in str(e.value)
    with pytest.raises(StorageError) as e:
        storage.check_url("https://host/archive?sig=s3cr3t")
    assert "s3cr3t" not in str(e.value)
    assert not storage.is_url("/data/archive") and not storage.is_url("file:///data") and storage.is_url("gs://b/p")


def test_an_unknown_store_says_what_is_missing():
    with pytest.raises(StorageError, match="nosuchproto"):
        storage.list_objects("nosuchproto://bucket/prefix", (".mp4",))


class DroppingProxy:
    """A TCP proxy to the S3 server that cuts the first `drops` responses after 1000 bytes (a reset connection)."""

    def __init__(self, upstream_port: int, drops: int):
        self.upstream_port, self.drops, self.dropped = upstream_port, drops, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src, dst, response):
        sent = 0
        try:
            while data := src.recv(65536):
                if response and self.dropped < self.drops and sent + len(data) > 1000:
                    self.dropped += 1
                    dst.send(data[: 1000 - sent])
                    for s in (src, dst):  # cut mid-body, like a dropped connection (shutdown also wakes the other pump)
                        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                        s.shutdown(socket.SHUT_RDWR)
                        s.close()
                    return
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.close()
                except OSError:
                    pass


def test_dropped_connections_are_retried(bucket, s3_server, monkeypatch):
    import s3fs

    proxy = DroppingProxy(int(s3_server.endpoint.rsplit(":", 1)[1]), drops=2)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{proxy.port}")
    s3fs.S3FileSystem.clear_instance_cache()  # a client for the proxy's endpoint
    try:
        with storage.open_video(f"{bucket}/cams/a.mp4") as f:
            assert f.read() == VIDEO_BYTES + b"cams/a.mp4"
        assert proxy.dropped == 2
    finally:
        proxy.listener.close()
        s3fs.S3FileSystem.clear_instance_cache()
