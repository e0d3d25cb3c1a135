"""A real S3-compatible server for the tests: moto's standalone server (what s3fs's own tests use), started
on 127.0.0.1 on a free port, in its own process. Everything talks to it over HTTP like to any S3 endpoint."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ACCESS = {
    "AWS_ACCESS_KEY_ID": "vtm-test",
    "AWS_SECRET_ACCESS_KEY": "vtm-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen

    @property
    def env(self) -> dict:
        """What a shell talking to this server holds: the standard AWS variables, nothing vtm-specific."""
        return {**ACCESS, "AWS_ENDPOINT_URL": self.endpoint}

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=ACCESS["AWS_SECRET_ACCESS_KEY"],
            region_name=ACCESS["AWS_DEFAULT_REGION"],
        )

    def upload(self, folder: Path, bucket: str, prefix: str) -> list[str]:
        """Create `bucket` (if needed) and put every file under `folder` at `prefix/<relative path>`."""
        client = self.client()
        if bucket not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
            client.create_bucket(Bucket=bucket)
        keys = []
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                key = f"{prefix}/{path.relative_to(folder).as_posix()}"
                client.upload_file(str(path), bucket, key)
                keys.append(key)
        return keys


def free_endpoint() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def start_server(endpoint: str) -> S3Server:
    port = endpoint.rsplit(":", 1)[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", port],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    server = S3Server(endpoint, process)
    deadline = time.time() + 60
    while True:
        try:
            server.client().list_buckets()
            return server
        except Exception as err:  # noqa: BLE001 - not listening yet
            if process.poll() is not None or time.time() > deadline:
                process.kill()
                raise RuntimeError(f"the moto S3 server did not start on {endpoint}") from err
            time.sleep(0.1)
