"""The store's one filesystem layer: the location of a store, a plain path or a URI (`file://`, `s3://`, `gs://`,
`az://`), through `pyarrow.fs`. Local files are written atomically with `tgdp.core.atomic` (the tmp-then-rename every
writer of tgdp uses).

Why `pyarrow.fs` and not fsspec (docs/STORE.md, "Remote stores"): the shards are Arrow IPC files and pyarrow is
already what reads and writes them; its S3, GCS and Azure filesystems are compiled (multi-part uploads, range reads,
retries) and follow each cloud SDK's standard credential and config chain (AWS_* variables including
`AWS_ENDPOINT_URL`, ~/.aws/config, instance roles; GOOGLE_APPLICATION_CREDENTIALS; AZURE_* ), with no extra
dependency. fsspec stays what `datasets` uses for its own `storage_options`.

Credentials are never held in a `Location`, printed, or put in an error: a URI with user info
(`s3://KEY:SECRET@bucket`) is refused, and `redact` strips any that slips into an exception message.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tgdp.core.atomic import atomic_write
from tgdp.core.errors import TgdpError

__all__ = ["Location", "RemoteError", "file_sha256", "is_remote", "location", "redact", "remote_errors"]

REMOTE_SCHEMES = ("s3", "gs", "gcs", "az", "abfs", "abfss")
S3_MAX_ATTEMPTS = 5  # per request, by the AWS SDK (5xx, throttling, resets), with its exponential backoff


class RemoteError(TgdpError, RuntimeError):
    """An object store could not be reached or refused a request; the message names the URI (never a secret)."""


def file_sha256(path: Path | str) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (the identity recorded for raw clips and shards)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# -- locations ---------------------------------------------------------------------------------------------

_SECRETS = re.compile(r"(?i)((?:secret|access|session)[_-]?(?:access[_-]?)?key|token|password|signature)=([^&\s'\"]+)")
_USERINFO = re.compile(r"([a-z][a-z0-9+.-]*://)[^/@\s]+@")


def redact(text: str) -> str:
    """`text` with URI user info and `key=value` secrets replaced by `***` (for messages about remote stores)."""
    return _SECRETS.sub(r"\1=***", _USERINFO.sub(r"\1***@", text))


def is_remote(path: str | os.PathLike) -> bool:
    """Whether `path` names an object store (`s3://`, `gs://`, `az://`…) rather than a POSIX path."""
    text = str(path)
    return "://" in text and text.split("://", 1)[0].lower() in REMOTE_SCHEMES


@dataclass(frozen=True)
class Location:
    """Where a store (or one of its splits) lives: a local directory (`local` set) or an object-store prefix.

    `uri` is what the user gave, normalised (no trailing slash) and free of credentials; `fs` is the
    `pyarrow.fs.FileSystem` and `base` the path inside it. `endpoint_url` overrides the S3 endpoint (else the AWS
    chain: AWS_ENDPOINT_URL, ~/.aws/config)."""

    uri: str
    endpoint_url: str | None = None

    @property
    def remote(self) -> bool:
        return is_remote(self.uri)

    @property
    def local(self) -> Path:
        """The directory of a local location (ValueError for a remote one)."""
        if self.remote:
            raise ValueError(f"{self.uri} is not a local path")
        return Path(self.uri[7:] if self.uri.startswith("file://") else self.uri)

    @property
    def scheme(self) -> str:
        return self.uri.split("://", 1)[0].lower() if self.remote else "file"

    @property
    def base(self) -> str:
        """The path inside the filesystem: `bucket/prefix` for object stores, the directory for local ones."""
        return self.uri.split("://", 1)[1] if self.remote else str(self.local)

    @property
    def bucket(self) -> str:
        return self.base.split("/", 1)[0]

    def child(self, *names: str) -> Location:
        return Location("/".join([self.uri.rstrip("/"), *names]), self.endpoint_url)

    @property
    def name(self) -> str:
        return self.uri.rstrip("/").rsplit("/", 1)[-1]

    def key(self, *names: str) -> str:
        """The filesystem path of `names` under this location."""
        return "/".join([self.base.rstrip("/"), *names])

    def __str__(self) -> str:
        return self.uri

    def filesystem(self) -> Any:
        """The `pyarrow.fs.FileSystem` of this location (one per process and endpoint, cached)."""
        return _filesystem(self.scheme, self.endpoint_url)

    # -- object I/O (local paths take the plain POSIX route) --------------------------------------------------
    def size(self, *names: str) -> int | None:
        """Byte size of the object/file `names` under this location, None when absent."""
        if not self.remote:
            path = self.local.joinpath(*names)
            return path.stat().st_size if path.is_file() else None
        import pyarrow.fs as pafs

        with remote_errors(self.child(*names)):
            info = self.filesystem().get_file_info(self.key(*names))
        return info.size if info.type == pafs.FileType.File else None

    def read_bytes(self, *names: str, missing: str | None = None) -> bytes:
        """The bytes of `names` under this location; FileNotFoundError(`missing` or a default) when absent."""
        if not self.remote:
            path = self.local.joinpath(*names)
            if not path.is_file():
                raise FileNotFoundError(missing or f"{path}: no such file")
            return path.read_bytes()
        if self.size(*names) is None:
            raise FileNotFoundError(missing or f"{self.child(*names)}: no such object")
        with remote_errors(self.child(*names)), self.filesystem().open_input_stream(self.key(*names)) as fh:
            return fh.read()

    def write_bytes(self, data: bytes | str, *names: str) -> None:
        """Write one object/file whole (a local file atomically; an object PUT is atomic by itself)."""
        data = data.encode("utf-8") if isinstance(data, str) else data
        if not self.remote:
            atomic_write(self.local.joinpath(*names), data)
            return
        with remote_errors(self.child(*names)), self.filesystem().open_output_stream(self.key(*names)) as out:
            out.write(data)

    def upload(self, src: Path, *names: str) -> None:
        """Copy the local file `src` to `names` under this (remote) location, streamed in 8 MiB blocks."""
        with remote_errors(self.child(*names)), open(src, "rb") as fh:
            with self.filesystem().open_output_stream(self.key(*names)) as out:
                for block in iter(lambda: fh.read(8 << 20), b""):
                    out.write(block)

    def download(self, dest: Path, *names: str) -> None:
        """Copy `names` under this (remote) location to the local file `dest` (the caller makes it atomic)."""
        with remote_errors(self.child(*names)), self.filesystem().open_input_stream(self.key(*names)) as src:
            with open(dest, "wb") as out:
                for block in iter(lambda: src.read(8 << 20), b""):
                    out.write(block)

    def delete(self, *names: str) -> None:
        """Remove `names` under this location if present."""
        if not self.remote:
            self.local.joinpath(*names).unlink(missing_ok=True)
            return
        if self.size(*names) is not None:
            with remote_errors(self.child(*names)):
                self.filesystem().delete_file(self.key(*names))

    def exists(self) -> bool:
        """Whether this location is a directory (local) or a prefix/bucket that can be listed (remote)."""
        if not self.remote:
            return self.local.is_dir()
        import pyarrow.fs as pafs

        with remote_errors(self):
            info = self.filesystem().get_file_info(self.base)
        return info.type != pafs.FileType.NotFound

    def check_bucket(self) -> None:
        """Raise RemoteError naming the bucket when it does not exist or cannot be listed with these credentials."""
        if not self.remote:
            return
        import pyarrow.fs as pafs

        with remote_errors(self):
            info = self.filesystem().get_file_info(self.bucket)
        if info.type == pafs.FileType.NotFound:
            raise RemoteError(f"{self}: bucket {self.bucket!r} does not exist; create it or check the URI")


@contextmanager
def remote_errors(where: Location | str) -> Iterator[None]:
    """Turn a pyarrow/SDK OSError from an object store into a one-line RemoteError naming `where` (redacted)."""
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as exc:
        detail = " ".join(redact(str(exc)).split())
        hint = ""
        low = detail.lower()
        if (
            "access denied" in low
            or "access_denied" in low
            or "signature" in low
            or "invalidaccesskeyid" in low
            or "forbidden" in low
        ):
            hint = "; check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the AWS profile)"
        elif "connect" in low or "timed out" in low or "curl" in low:
            hint = "; is the endpoint reachable (store.endpoint_url / AWS_ENDPOINT_URL)?"
        raise RemoteError(f"{where}: {detail[:300]}{hint}") from None


def location(path: str | os.PathLike | Location, endpoint_url: str | None = None) -> Location:
    """A `Location` for a plain path, `file://` URI or object-store URI; credentials in the URI are refused."""
    if isinstance(path, Location):
        return path if endpoint_url is None else Location(path.uri, endpoint_url)
    text = os.fspath(path)
    if "://" in text:
        scheme, rest = text.split("://", 1)
        if scheme.lower() not in (*REMOTE_SCHEMES, "file"):
            raise ValueError(f"{redact(text)}: unsupported store URI scheme {scheme!r} (s3, gs, az, file or a path)")
        if "@" in rest.split("/", 1)[0]:
            raise ValueError(
                f"{redact(text)}: credentials in a store URI are refused; use the environment or the cloud config"
            )
        if scheme.lower() != "file" and not rest.strip("/"):
            raise ValueError(f"{text}: a store URI needs a bucket (s3://bucket/prefix)")
        text = f"{scheme.lower()}://{rest.rstrip('/')}" if scheme.lower() != "file" else text
    return Location(text, endpoint_url)


_FILESYSTEMS: dict[tuple[str, str | None, int], Any] = {}


def _filesystem(scheme: str, endpoint_url: str | None) -> Any:
    import pyarrow.fs as pafs

    key = (scheme, endpoint_url, os.getpid())  # a forked worker builds its own client
    if key in _FILESYSTEMS:
        return _FILESYSTEMS[key]
    if scheme == "file":
        fs = pafs.LocalFileSystem()
    elif scheme == "s3":
        fs = _s3(endpoint_url)
    elif scheme in ("gs", "gcs"):
        fs = pafs.GcsFileSystem()
    else:
        fs = pafs.AzureFileSystem(account_name=os.environ.get("AZURE_STORAGE_ACCOUNT_NAME", ""))
    _FILESYSTEMS[key] = fs
    return fs


def _s3(endpoint_url: str | None) -> Any:
    """An `S3FileSystem` from the AWS chain; `endpoint_url` (or AWS_ENDPOINT_URL) for S3-compatible servers."""
    import pyarrow.fs as pafs

    endpoint = endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    kw: dict[str, Any] = {
        "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=S3_MAX_ATTEMPTS),
        "connect_timeout": 5,
        "request_timeout": 30,
    }
    if endpoint:
        scheme = endpoint.split("://", 1)[0] if "://" in endpoint else "https"
        kw.update(endpoint_override=endpoint, scheme=scheme, force_virtual_addressing=False)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kw["region"] = region
    elif endpoint:
        kw["region"] = "us-east-1"  # S3-compatible servers ignore it; skips the SDK's region lookup
    return pafs.S3FileSystem(**kw)
