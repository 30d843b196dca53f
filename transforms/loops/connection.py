"""`LoopsConnection`: where and how fast a job writes to Loops, as picklable data.

The connection travels with the pipeline (Beam pickles it into the job), so
it holds the key only as an `ApiKey`, whose repr never shows it and which,
from Secret Manager, travels as the secret's name alone. Each writer builds
its own `LoopsClient` from it on its worker (`client()`), pacing at its share
of the job's rate limit.
"""
from dataclasses import dataclass
from typing import Optional

from transforms.loops.caller import check_base_url
from transforms.loops.client import LoopsClient
from transforms.loops.credentials import ApiKey
from transforms.loops.retry import RetryPolicy


@dataclass(frozen=True)
class LoopsConnection:
    """Where and how fast to write (picklable; the key stays hidden).

    rate_limit: requests per second for the whole job, shared equally by
    `write_shards` writers. max_attempts: HTTP attempts per request for
    transient failures. max_in_flight: concurrent requests per writer (None:
    enough for its rate at 500 ms latency). Timeouts in seconds;
    progress_interval: seconds between a writer's progress lines.
    """
    base_url: str
    api_key: ApiKey
    rate_limit: float = 10.0
    write_shards: int = 1
    max_attempts: int = 6
    max_in_flight: Optional[int] = None
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    progress_interval: float = 10.0

    def __post_init__(self):
        check_base_url(self.base_url)
        if not isinstance(self.api_key, ApiKey):
            raise TypeError('api_key must be an ApiKey (it keeps the key out of sight)')
        _require(self.rate_limit > 0, f'rate_limit must be positive, got {self.rate_limit!r}')
        _require(_is_count(self.write_shards, 1),
                 f'write_shards must be a whole number of at least 1, got {self.write_shards!r}')
        _require(_is_count(self.max_attempts, 1),
                 f'max_attempts must be a whole number of at least 1, got {self.max_attempts!r}')
        _require(self.max_in_flight is None or _is_count(self.max_in_flight, 1),
                 f'max_in_flight must be at least 1, got {self.max_in_flight!r}')
        for name in ('connect_timeout', 'read_timeout', 'progress_interval'):
            _require(getattr(self, name) > 0, f'{name} must be positive')

    @property
    def shard_rate(self) -> float:
        """Requests per second of one writer."""
        return self.rate_limit / self.write_shards

    def retry_policy(self) -> RetryPolicy:
        """The default retry policy: `max_attempts` attempts, backoff from 0.5 s."""
        return RetryPolicy(self.max_attempts)

    def client(self, rate: Optional[float] = None,
               policy: Optional[RetryPolicy] = None) -> LoopsClient:
        """A client pacing at `rate` (default: one writer's share)."""
        policy = policy or self.retry_policy()
        return LoopsClient(self.base_url, self.api_key.get(),
                           rate=rate if rate is not None else self.shard_rate,
                           max_attempts=policy.max_attempts,
                           backoff_base=policy.backoff_base, backoff_max=policy.backoff_max,
                           connect_timeout=self.connect_timeout,
                           read_timeout=self.read_timeout)

    def check_key(self) -> str:
        """GET /v1/api-key before reading any input: a wrong key fails in seconds."""
        client = self.client()
        try:
            return client.check_key()
        finally:
            client.close()


def _is_count(value: object, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)
