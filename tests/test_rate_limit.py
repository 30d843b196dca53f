"""TokenBucket: pacing, 429 back-off, recovery and contention, on an injected clock."""
import pickle
import threading
import time

import pytest

from transforms.loops.rate_limit import (CONTENTION_FLOOR, HEADROOM, MIN_SHARE, PAUSE_SECONDS,
                                         RECOVERY, TokenBucket)


class FakeTime:
    """A clock that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def bucket_at(rate: float) -> tuple:
    fake = FakeTime()
    return TokenBucket(rate, clock=fake.clock, sleep=fake.sleep), fake


def send_times(bucket: TokenBucket, fake: FakeTime, count: int) -> list:
    times = []
    for _ in range(count):
        bucket.acquire()
        times.append(fake.now)
    return times


@pytest.mark.parametrize('rate', [1.0, 10.0, 100.0])
def test_requests_are_evenly_spaced_just_under_the_rate(rate):
    bucket, fake = bucket_at(rate)
    times = send_times(bucket, fake, 21)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert gaps == pytest.approx([1 / (rate * HEADROOM)] * 20)
    # Never more than `rate` requests in any one-second window.
    assert all(times[i + int(rate)] - times[i] > 1.0 for i in range(len(times) - int(rate)))


def test_first_request_goes_at_once_and_waits_are_returned():
    bucket, fake = bucket_at(10)
    assert bucket.acquire() == 0
    assert bucket.acquire() == pytest.approx(1 / 9.7)


def test_idle_time_does_not_build_up_a_burst():
    bucket, fake = bucket_at(10)
    bucket.acquire()
    fake.now += 60
    times = send_times(bucket, fake, 3)
    assert times[1] - times[0] == pytest.approx(1 / 9.7)
    assert times[2] - times[1] == pytest.approx(1 / 9.7)


def test_rate_limited_halves_the_rate_and_pauses():
    bucket, fake = bucket_at(10)
    bucket.acquire()
    bucket.on_rate_limited()
    assert bucket.current_rate == pytest.approx(9.7 * 0.5)
    before = fake.now
    bucket.acquire()
    assert fake.now - before == pytest.approx(PAUSE_SECONDS)
    gap = bucket.acquire()
    assert gap == pytest.approx(1 / (9.7 * 0.5))


def test_a_burst_of_429s_cuts_once_per_window():
    bucket, fake = bucket_at(10)
    for _ in range(5):
        bucket.on_rate_limited()
    assert bucket.current_rate == pytest.approx(9.7 * 0.5)
    fake.now += 1.0
    bucket.on_rate_limited()
    assert bucket.current_rate == pytest.approx(9.7 * 0.25)


def test_rate_never_drops_below_its_floor():
    bucket, fake = bucket_at(10)
    for _ in range(20):
        bucket.on_rate_limited()
        fake.now += 1.0
    assert bucket.current_rate == pytest.approx(9.7 * MIN_SHARE)


def test_recovery_is_additive_after_one_window():
    bucket, fake = bucket_at(10)
    bucket.on_rate_limited()
    halved = bucket.current_rate
    fake.now += 1.0
    bucket.on_response(10, 5)
    assert bucket.current_rate == halved  # still within the cool-down window
    rates = []
    for _ in range(4):
        fake.now += 0.5
        bucket.on_response(10, 5)
        rates.append(bucket.current_rate)
    step = RECOVERY * 9.7 * 0.5
    assert rates == pytest.approx([halved + step * n for n in (1, 2, 3, 4)])
    fake.now += 10
    bucket.on_response(None, None)
    assert bucket.current_rate == pytest.approx(9.7)


@pytest.mark.parametrize('rate, limit, remaining, expected', [
    # Alone at the limit, a full window is by design: no slow-down.
    (10, 10, 0, 9.7),
    # A writer owning half the limit sees it full: others are sending.
    (5, 10, 0, 4.85 * 0.95),
    (5, 10, 1, 4.85),
    # No headers at all: nothing to learn.
    (5, None, None, 4.85),
    # A rate set above the team's advertised limit is capped by it.
    (20, 10, 3, 9.7),
])
def test_rate_limit_headers(rate, limit, remaining, expected):
    bucket, fake = bucket_at(rate)
    bucket.on_response(limit, remaining)
    assert bucket.current_rate == pytest.approx(expected)


def test_contention_slows_gently_once_per_window_down_to_a_floor_then_recovers():
    bucket, fake = bucket_at(5)
    for _ in range(3):
        bucket.on_response(10, 0)
    assert bucket.current_rate == pytest.approx(4.85 * 0.95)
    bucket.on_rate_limited()  # a 429 right after still cuts
    assert bucket.current_rate == pytest.approx(4.85 * 0.95 * 0.5)
    fake.now += 30
    bucket.on_response(10, 2)
    assert bucket.current_rate == pytest.approx(4.85)
    bucket.on_response(10, 0)
    rates = []
    for _ in range(3):
        fake.now += 1.0
        bucket.on_response(10, 0)
        rates.append(bucket.current_rate)
    floor = 4.85 * CONTENTION_FLOOR
    assert rates == pytest.approx([4.85 * 0.95 ** 2, floor, floor])
    bucket.on_rate_limited()  # a 429 still cuts below it
    assert bucket.current_rate == pytest.approx(floor / 2)
    fake.now += 30
    bucket.on_response(10, 2)
    assert bucket.current_rate == pytest.approx(4.85)


def test_a_429_voids_slots_reserved_before_it():
    fake = FakeTime()

    def sleep_then_hear_429(seconds):
        fake.sleep(seconds)
        bucket.on_rate_limited()  # another thread's request was answered 429

    bucket = TokenBucket(10, clock=fake.clock, sleep=sleep_then_hear_429)
    bucket.acquire()
    bucket.acquire()  # its slot is void: reserved again after the pause
    assert fake.sleeps == pytest.approx([1 / 9.7, PAUSE_SECONDS])


def test_throttled_seconds_add_up_every_wait():
    bucket, fake = bucket_at(10)
    send_times(bucket, fake, 11)
    bucket.on_rate_limited()
    bucket.acquire()
    assert fake.sleeps and bucket.throttled_seconds == pytest.approx(sum(fake.sleeps))
    assert bucket.throttled_seconds == pytest.approx(10 / 9.7 + PAUSE_SECONDS)


def test_a_voided_slot_still_counts_as_throttled():
    fake = FakeTime()

    def sleep_then_hear_429(seconds):
        fake.sleep(seconds)
        bucket.on_rate_limited()

    bucket = TokenBucket(10, clock=fake.clock, sleep=sleep_then_hear_429)
    bucket.acquire()
    bucket.acquire()
    assert bucket.throttled_seconds == pytest.approx(1 / 9.7 + PAUSE_SECONDS)


def test_threads_share_the_pace():
    bucket = TokenBucket(200)
    stamps = []
    lock = threading.Lock()

    def worker():
        for _ in range(10):
            bucket.acquire()
            with lock:
                stamps.append(time.monotonic())

    threads = [threading.Thread(target=worker) for _ in range(4)]
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(stamps) == 40
    assert time.monotonic() - start >= 39 / (200 * HEADROOM) - 0.01


def test_picklable_and_starts_afresh():
    bucket = TokenBucket(10)
    bucket.acquire()
    bucket.on_rate_limited()
    copy = pickle.loads(pickle.dumps(bucket))
    assert copy.rate == 10
    assert copy.current_rate == pytest.approx(9.7)
    assert copy.acquire() == 0
    assert copy.throttled_seconds == 0


@pytest.mark.parametrize('rate', [0, -1])
def test_rate_must_be_positive(rate):
    with pytest.raises(ValueError, match='positive'):
        TokenBucket(rate)
