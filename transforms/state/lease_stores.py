"""Where a sync state's lease object lives: one small object that only
conditional operations change, on local disk, S3 or GCS.

Every store offers the same four operations (LeaseStore); a version names
one content of the object as the store saw it, and a conditional operation
fails, instead of acting, when the object is no longer at that version:

    create_if_absent(data) -> version, or None if the object exists
    read()                 -> (data, version), or None if there is none
    replace_if(data, v)    -> the new version, or None if not at v
    delete_if(v)           -> True, or False if not at v (or gone)

What makes each one atomic:

- local disk: every operation holds an exclusive flock on `<name>.lock`
  beside the object (never deleted, so that every process locks the same
  inode); the create is also an O_CREAT|O_EXCL open and a replace an
  os.replace of a complete temporary file. The version is the content's
  SHA-256. Needs a file system where flock is honoured between the
  processes involved (a local disk; not every network file system).
- S3: PutObject with If-None-Match: * (create) or If-Match: <ETag>
  (replace), DeleteObject with If-Match: <ETag>. AWS honours all three on
  general purpose buckets (conditional deletes since September 2025); an
  S3-compatible store that ignores these headers makes them unconditional.
- GCS: uploads and deletes with if_generation_match (0 for "must not
  exist"); a mismatch is 412 PreconditionFailed.

A client that retries a request which had in fact succeeded sees its own
write as a mismatch; the lease (transforms/state/lease.py) recognises its
own bytes when it reads the object again.
"""
import fcntl
import hashlib
import os
import tempfile
from contextlib import contextmanager
from typing import Iterator, Optional, Protocol

import boto3
from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, S3Options
from botocore.exceptions import ClientError
from google.api_core.exceptions import NotFound, PreconditionFailed
from google.cloud import storage

LEASE_NAME = 'LEASE'
LOCK_SUFFIX = '.lock'
# S3's answers when a condition does not hold: 412 (not at that ETag, or
# exists), 409 (a concurrent conditional write won), 404 (gone).
_S3_CONDITION_STATUSES = frozenset({404, 409, 412})


class LeaseStore(Protocol):
    location: str

    def create_if_absent(self, data: bytes) -> Optional[str]: ...

    def read(self) -> Optional[tuple]: ...

    def replace_if(self, data: bytes, version: str) -> Optional[str]: ...

    def delete_if(self, version: str) -> bool: ...


def lease_location(prefix: str) -> str:
    """The lease object of the state at `prefix`."""
    return f'{prefix.rstrip("/")}/{LEASE_NAME}'


def store_for(prefix: str, options: Optional[PipelineOptions] = None) -> LeaseStore:
    """The store of the state at `prefix`, by its scheme; S3 and GCS
    clients take the job's options (--s3_endpoint_url, --project, ...) so
    that they reach the same service as the job's file systems."""
    options = options or PipelineOptions([])
    if prefix.startswith('s3://'):
        bucket, key = _bucket_and_key(lease_location(prefix), 's3://')
        return S3Store(s3_client(options), bucket, key)
    if prefix.startswith('gs://'):
        bucket, name = _bucket_and_key(lease_location(prefix), 'gs://')
        client = storage.Client(project=options.view_as(GoogleCloudOptions).project)
        return GCSStore(client.bucket(bucket), name)
    if '://' in prefix:
        raise ValueError(f'a sync state lease needs a local path, gs:// or s3://, not {prefix}')
    return LocalStore(os.path.join(prefix, LEASE_NAME))


def _bucket_and_key(url: str, scheme: str) -> tuple:
    bucket, _, key = url[len(scheme):].partition('/')
    if not bucket or not key:
        raise ValueError(f'{url} names no bucket and object')
    return bucket, key


def s3_client(options: PipelineOptions):
    """A boto3 S3 client configured from Beam's S3Options, as Beam's own
    S3 file system configures its client."""
    s3 = options.view_as(S3Options)
    return boto3.session.Session().client(
        's3', region_name=s3.s3_region_name, api_version=s3.s3_api_version,
        use_ssl=not s3.s3_disable_ssl, verify=s3.s3_verify, endpoint_url=s3.s3_endpoint_url,
        aws_access_key_id=s3.s3_access_key_id, aws_secret_access_key=s3.s3_secret_access_key,
        aws_session_token=s3.s3_session_token)


class LocalStore:
    """The lease as a file on local disk."""

    def __init__(self, path: str):
        self.location = path
        self._lock_path = path + LOCK_SUFFIX

    def create_if_absent(self, data: bytes) -> Optional[str]:
        with self._locked():
            try:
                fd = os.open(self.location, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return None
            try:
                _write_whole(fd, data)
            except BaseException:
                # A half-written lease would read as damaged and stop every run.
                os.unlink(self.location)
                raise
            return _digest(data)

    def read(self) -> Optional[tuple]:
        with self._locked():
            data = self._read_unlocked()
        return None if data is None else (data, _digest(data))

    def replace_if(self, data: bytes, version: str) -> Optional[str]:
        with self._locked():
            current = self._read_unlocked()
            if current is None or _digest(current) != version:
                return None
            fd, temporary = tempfile.mkstemp(dir=os.path.dirname(self.location) or '.',
                                             prefix=LEASE_NAME + '.', suffix='.tmp')
            try:
                _write_whole(fd, data)
                os.replace(temporary, self.location)
            finally:
                if os.path.exists(temporary):
                    os.unlink(temporary)
            return _digest(data)

    def delete_if(self, version: str) -> bool:
        with self._locked():
            current = self._read_unlocked()
            if current is None or _digest(current) != version:
                return False
            os.unlink(self.location)
            return True

    @contextmanager
    def _locked(self) -> Iterator[None]:
        os.makedirs(os.path.dirname(self.location) or '.', exist_ok=True)
        with open(self._lock_path, 'a') as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def _read_unlocked(self) -> Optional[bytes]:
        try:
            with open(self.location, 'rb') as f:
                return f.read()
        except FileNotFoundError:
            return None


def _write_whole(fd: int, data: bytes) -> None:
    with os.fdopen(fd, 'wb') as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class S3Store:
    """The lease as an S3 object; versions are ETags."""

    def __init__(self, client, bucket: str, key: str):
        self.location = f's3://{bucket}/{key}'
        self._client, self._bucket, self._key = client, bucket, key

    def create_if_absent(self, data: bytes) -> Optional[str]:
        return self._put(data, IfNoneMatch='*')

    def read(self) -> Optional[tuple]:
        try:
            response = self._client.get_object(Bucket=self._bucket, Key=self._key)
        except ClientError as error:
            if _status(error) == 404:
                return None
            raise
        return response['Body'].read(), response['ETag']

    def replace_if(self, data: bytes, version: str) -> Optional[str]:
        return self._put(data, IfMatch=version)

    def delete_if(self, version: str) -> bool:
        try:
            self._client.delete_object(Bucket=self._bucket, Key=self._key, IfMatch=version)
        except ClientError as error:
            if _status(error) in _S3_CONDITION_STATUSES:
                return False
            raise
        return True

    def _put(self, data: bytes, **condition) -> Optional[str]:
        try:
            response = self._client.put_object(Bucket=self._bucket, Key=self._key, Body=data,
                                               ContentType='application/json', **condition)
        except ClientError as error:
            if _status(error) in _S3_CONDITION_STATUSES:
                return None
            raise
        return response['ETag']


def _status(error: ClientError) -> Optional[int]:
    return error.response.get('ResponseMetadata', {}).get('HTTPStatusCode')


class GCSStore:
    """The lease as a GCS object; versions are generations (as text)."""

    def __init__(self, bucket, name: str):
        self.location = f'gs://{bucket.name}/{name}'
        self._bucket, self._name = bucket, name

    def create_if_absent(self, data: bytes) -> Optional[str]:
        return self._upload(data, 0)

    def read(self) -> Optional[tuple]:
        blob = self._bucket.blob(self._name)
        try:
            data = blob.download_as_bytes()
        except NotFound:
            return None
        return data, str(blob.generation)

    def replace_if(self, data: bytes, version: str) -> Optional[str]:
        return self._upload(data, int(version))

    def delete_if(self, version: str) -> bool:
        try:
            self._bucket.blob(self._name).delete(if_generation_match=int(version))
        except (PreconditionFailed, NotFound):
            return False
        return True

    def _upload(self, data: bytes, generation: int) -> Optional[str]:
        blob = self._bucket.blob(self._name)
        try:
            blob.upload_from_string(data, content_type='application/json',
                                    if_generation_match=generation)
        except PreconditionFailed:
            return None
        return str(blob.generation)
