"""An in-memory stand-in for the google-cloud-storage Bucket and Blob
methods the sync state's lease uses (we cannot reach GCS in tests).

It enforces generation preconditions as GCS documents them
(https://cloud.google.com/storage/docs/request-preconditions): every write
gives the object a new generation, never reused, even after a delete;
if_generation_match=0 means "only if there is no live object";
if_generation_match=N means "only if the live object is at generation N";
a failed precondition is 412 PreconditionFailed, and reading or deleting
an object that does not exist is 404 NotFound. Each call is atomic, as a
request to GCS is.
"""
import itertools
import threading
from typing import Optional, Union

from google.api_core.exceptions import NotFound, PreconditionFailed


class FakeBucket:
    def __init__(self, name: str):
        self.name = name
        self.objects = {}                    # name -> (data, generation)
        self._lock = threading.Lock()
        self._generations = itertools.count(1_700_000_000_000_000)

    def blob(self, name: str) -> 'FakeBlob':
        return FakeBlob(self, name)

    def _check(self, name: str, if_generation_match: Optional[int]) -> None:
        live = self.objects.get(name)
        if if_generation_match is None:
            return
        if (live[1] if live else 0) != if_generation_match:
            raise PreconditionFailed(f'412 gs://{self.name}/{name}: generation is '
                                     f'{live[1] if live else "absent"}, not {if_generation_match}')


class FakeBlob:
    def __init__(self, bucket: FakeBucket, name: str):
        self.bucket, self.name = bucket, name
        self.generation: Optional[int] = None

    def upload_from_string(self, data: Union[bytes, str], content_type: str = 'text/plain',
                           if_generation_match: Optional[int] = None) -> None:
        data = data.encode('utf-8') if isinstance(data, str) else bytes(data)
        with self.bucket._lock:
            self.bucket._check(self.name, if_generation_match)
            generation = next(self.bucket._generations)
            self.bucket.objects[self.name] = (data, generation)
        self.generation = generation

    def download_as_bytes(self) -> bytes:
        with self.bucket._lock:
            live = self.bucket.objects.get(self.name)
        if live is None:
            raise NotFound(f'404 gs://{self.bucket.name}/{self.name}')
        data, self.generation = live
        return data

    def delete(self, if_generation_match: Optional[int] = None) -> None:
        with self.bucket._lock:
            if self.name not in self.bucket.objects:
                raise NotFound(f'404 gs://{self.bucket.name}/{self.name}')
            self.bucket._check(self.name, if_generation_match)
            del self.bucket.objects[self.name]
