"""`backupctl dev s3-server`: prints its endpoint, serves S3 on 127.0.0.1, stops on SIGTERM with its child."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import boto3


def test_dev_s3_server_serves_and_stops():
    proc = subprocess.Popen([sys.executable, "-m", "backupctl", "dev", "s3-server", "--json"],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        text = ""
        while True:                 # read the JSON object the command prints once the server answers
            line = proc.stdout.readline()
            assert line, "s3-server exited before printing its endpoint"
            text += line
            if line.startswith("}"):
                break
        info = json.loads(text)
        assert info["endpoint"].startswith("http://127.0.0.1:")
        client = boto3.client("s3", endpoint_url=info["endpoint"], aws_access_key_id="x",
                              aws_secret_access_key="y", region_name="us-east-1")
        client.create_bucket(Bucket="trial", ObjectLockEnabledForBucket=True)
        assert [b["Name"] for b in client.list_buckets()["Buckets"]] == ["trial"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    # the moto child went with it
    stat = Path(f"/proc/{info['pid']}/stat")
    assert not stat.exists() or stat.read_text().split(")")[-1].split()[0] == "Z"


def test_embedded_server_takes_moto_settings():
    from backupctl.s3.server import EmbeddedS3

    with EmbeddedS3(env={"MOTO_S3_DEFAULT_KEY_BUFFER_SIZE": "1073741824"}) as server:
        assert server.proc is not None
        environ = Path(f"/proc/{server.proc.pid}/environ").read_bytes().split(b"\0")
    assert b"MOTO_S3_DEFAULT_KEY_BUFFER_SIZE=1073741824" in environ
    assert b"MOTO_ALLOW_NONEXISTENT_REGION=true" in environ
