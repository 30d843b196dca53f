"""The Loops API key: where it comes from, and keeping it out of sight.

An `ApiKey` is picklable (workers need it) but its repr and str never show
the key. With a Secret Manager version, only the version's name travels with
the pipeline: each worker reads the key itself when it first needs it.
"""
from typing import Optional


class ApiKey:
    def __init__(self, value: Optional[str] = None, secret_version: Optional[str] = None):
        if (value is None) == (secret_version is None):
            raise ValueError('ApiKey needs exactly one of a value or a secret version')
        self._value = value.strip() if value is not None else None
        self._secret_version = secret_version

    def get(self) -> str:
        """The key (read from Secret Manager on first use when it lives there)."""
        if self._value is None:
            self._value = read_secret_version(self._secret_version)
        return self._value

    def __getstate__(self):
        # A key fetched from Secret Manager on one worker is not shipped on.
        value = None if self._secret_version else self._value
        return {'_value': value, '_secret_version': self._secret_version}

    def __repr__(self) -> str:
        if self._secret_version:
            return f'ApiKey(secret_version={self._secret_version!r})'
        return 'ApiKey(<hidden>)'

    __str__ = __repr__


def read_secret_version(name: str) -> str:
    """Reads `projects/P/secrets/S/versions/V` with the worker's credentials."""
    from google.cloud import secretmanager  # only jobs that use it need it loaded
    client = secretmanager.SecretManagerServiceClient()
    response = client.access_secret_version(name=name)
    return response.payload.data.decode('utf-8').strip()
