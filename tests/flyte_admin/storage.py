"""Blob storage of the Flyte Admin stand-in: moto's S3 server on loopback (TEST DOUBLE).

Flyte keeps every piece of execution data in a blob store: the uploaded code (``pkl.gz``), the
inputs (``inputs.pb``), the outputs (``outputs.pb`` / ``error.pb``) and the raw data (DataFrames,
files).  Here that store is one bucket of ``moto.server.ThreadedMotoServer`` on 127.0.0.1, reached
by ``s3://<bucket>/...`` URLs with dummy credentials — by flytekit in the test process (through the
generated config file) and by the task subprocess (through ``FLYTE_AWS_*`` variables).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import time
import uuid
from typing import Any
from urllib.parse import urlparse

# Dummy credentials: moto accepts anything; they only have to be consistent.
ACCESS_KEY = "standin-access-key"
SECRET_KEY = "standin-secret-key"
REGION = "us-east-1"


def _quiet_moto_server(ip_address: str, timed: list[tuple[float, float]]) -> Any:
    """moto's ThreadedMotoServer without its per-request access log on stderr; ``timed`` gets
    (``time.perf_counter()`` at the start, seconds) of every request it answered."""
    from moto.server import (  # type: ignore[attr-defined]
        DomainDispatcherApplication,
        MotoRequestHandler,
        ThreadedMotoServer,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    class QuietHandler(MotoRequestHandler):
        def log_request(self, *args: Any, **kwargs: Any) -> None:
            pass

    class TimedApp(DomainDispatcherApplication):  # type: ignore[misc]
        def __call__(self, environ: Any, start_response: Any) -> Any:
            start = time.perf_counter()
            try:
                return list(super().__call__(environ, start_response))
            finally:
                timed.append((start, time.perf_counter() - start))

    class QuietServer(ThreadedMotoServer):
        def _server_entry(self) -> None:
            app = TimedApp(create_backend_app)
            self._server = make_server(
                self._ip_address, self._port, app, True, request_handler=QuietHandler
            )
            self._server_ready_event.set()
            self._server.serve_forever()

    return QuietServer(ip_address=ip_address, port=0, verbose=False)


class S3Store:
    """One bucket on a private moto S3 server bound to 127.0.0.1 on a free port."""

    def __init__(self) -> None:
        #: (``time.perf_counter()`` at the start, seconds) of every S3 request answered: the
        #: store's own share of a client's time (bench/bench_remote.py).
        self.request_times: list[tuple[float, float]] = []
        self._server = _quiet_moto_server("127.0.0.1", self.request_times)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        # moto keeps its state per process, not per server: a unique bucket keeps stand-ins apart.
        self.bucket = f"flyte-standin-{uuid.uuid4().hex[:12]}"
        self._client = self._make_client()
        self._client.create_bucket(Bucket=self.bucket)
        self._closed = False

    def _make_client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name=REGION,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
        )

    def _close_client_sessions(self) -> None:
        """Close the s3fs sessions that flytekit opened to this endpoint in this process.

        flytekit caches its S3 filesystems (fsspec's instance cache, asynchronous, on its own
        per-thread event loop) and never closes their aiohttp sessions: at interpreter exit that
        logs "Unclosed client session".  The endpoint dies with the stand-in, so its cached
        filesystems are closed, on flytekit's loop of this thread, and forgotten.
        """
        import s3fs
        from flytekit.utils.asyn import loop_manager

        async def aclose(fs: Any) -> None:
            creator = getattr(fs, "_s3creator", None)
            if hasattr(creator, "clear"):  # S3BucketRegionCache (cache_regions=True)
                await creator.clear()
            elif creator is not None:
                await creator.__aexit__(None, None, None)

        cache = s3fs.S3FileSystem._cache
        for token, fs in list(cache.items()):
            if (getattr(fs, "client_kwargs", None) or {}).get("endpoint_url") != self.endpoint:
                continue
            if getattr(fs, "asynchronous", False) and getattr(fs, "_s3", None) is not None:
                with contextlib.suppress(Exception):
                    loop_manager.run_sync(aclose, fs)
            cache.pop(token, None)

    # -- URLs ---------------------------------------------------------------------------------

    def url(self, key: str) -> str:
        """The native ``s3://`` URL of a key in the bucket."""
        return f"s3://{self.bucket}/{key.lstrip('/')}"

    def key(self, url: str) -> str:
        """The key of an ``s3://`` URL of this bucket (ValueError for anything else)."""
        parsed = urlparse(url)
        if parsed.scheme != "s3" or parsed.netloc != self.bucket:
            raise ValueError(f"{url!r} is not in the stand-in bucket s3://{self.bucket}")
        return parsed.path.lstrip("/")

    def presign_put(self, key: str, content_md5: bytes | None, expires_in: int) -> tuple[str, dict]:
        """A presigned PUT URL for ``key`` and the headers the uploader must send with it."""
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        headers: dict[str, str] = {}
        if content_md5:
            b64 = base64.b64encode(content_md5).decode()
            params["ContentMD5"] = b64
            headers["Content-MD5"] = b64
        signed = self._client.generate_presigned_url(
            "put_object", Params=params, ExpiresIn=expires_in
        )
        return signed, headers

    def presign_get(self, key: str, expires_in: int) -> str:
        return self._client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=expires_in
        )

    # -- objects ------------------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> str:
        self._client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentMD5=base64.b64encode(hashlib.md5(data).digest()).decode(),
        )
        return self.url(key)

    def get(self, key: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""
        try:
            return self._client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self._client.exceptions.NoSuchKey:
            return None

    def size(self, key: str) -> int | None:
        try:
            return int(self._client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except self._client.exceptions.ClientError:
            return None

    def keys(self, prefix: str = "") -> list[str]:
        keys: list[str] = []
        for page in self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix
        ):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return keys

    def close(self) -> None:
        """Empty and delete the bucket (moto's state outlives its server), then stop the server."""
        if self._closed:
            return
        self._closed = True
        try:
            with contextlib.suppress(Exception):  # hygiene, never a reason to fail
                self._close_client_sessions()
        finally:
            self._delete_bucket_and_stop()

    def _delete_bucket_and_stop(self) -> None:
        try:
            for key in self.keys():
                self._client.delete_object(Bucket=self.bucket, Key=key)
            self._client.delete_bucket(Bucket=self.bucket)
        finally:
            self._server.stop()
