"""A server-side "system" user with far more events than anyone else.

Some Segment sources send most of their calls for one userId: a bot, a
cron job, a health check. `HotUser` plays one: every other call an identify
whose traits move on (a counter, a plan, a last-seen time...), and between
them a track call ('Heartbeat', now and then 'Job Finished'), each with its
own messageId. Times come from `received_offsets`, which streams a day's
receive times in order, so any number of calls takes constant memory.
"""
import random
from typing import Iterator

from pipeline.local.clock import iso_ms
from pipeline.local.events import EventFactory, uuid4_text
from pipeline.local.traits import PLANS, User
from transforms.segment.timestamps import DAY_MS

HOT_USER_ID = 'bot_000001'
HOT_USER_EMAIL = 'system.bot@example.com'
# The hot user's calls are numbered from here, so that messageIds built from
# the number (pipeline/local/events.py) never equal an ordinary user's.
FIRST_HOT_COUNT = 10 ** 12
PLAN_EVERY = 1000            # identifies between two changes of plan
JOB_EVERY = 4                # every 4th track is a 'Job Finished'


class HotUser:
    """The system user and its next call, received at a given time."""

    def __init__(self, rng: random.Random, start_ms: int):
        self.rng = rng
        self.factory = EventFactory(rng, start_ms, first_count=FIRST_HOT_COUNT)
        self.user = User(index=1, user_id=HOT_USER_ID, anonymous_id=uuid4_text(rng),
                         first_name='Acme', last_name='System', email=HOT_USER_EMAIL,
                         channel='server', group_id='grp_000',
                         signed_up_ms=start_ms - 400 * DAY_MS)
        self.calls = 0

    def event(self, received_ms: int) -> dict:
        """The next call: identifies and tracks in turn."""
        number = self.calls // 2
        is_identify = self.calls % 2 == 0
        self.calls += 1
        if is_identify:
            return self.factory.envelope(self.user, received_ms, 'identify',
                                         traits=self._traits(number, received_ms))
        if number % JOB_EVERY == JOB_EVERY - 1:
            name = 'Job Finished'
            properties = {'jobId': f'job_{number:09d}', 'status': 'ok',
                          'durationMs': self.rng.randrange(50, 60_000)}
        else:
            name = 'Heartbeat'
            properties = {'host': f'worker-{number % 8}', 'uptimeSeconds': number * 60}
        return self.factory.envelope(self.user, received_ms, 'track', event=name,
                                     properties=properties)

    def _traits(self, number: int, received_ms: int) -> dict:
        return {'email': HOT_USER_EMAIL, 'firstName': 'Acme', 'lastName': 'System',
                'checkIns': number + 1,
                'plan': PLANS[number // PLAN_EVERY % len(PLANS)],
                'lastSeenAt': iso_ms(received_ms),
                'queueDepth': self.rng.randrange(0, 500)}

    def received_offsets(self, count: int) -> Iterator[int]:
        """`count` receive times within a day (ms after its midnight), in order:
        one at a random moment of each of `count` equal slices of the day."""
        for slot in range(count):
            yield int((slot + self.rng.random()) * DAY_MS / count)


def calls_on_day(total: int, days: int, day_number: int) -> int:
    """How many of `total` calls spread evenly over `days` fall on day `day_number`."""
    return total * (day_number + 1) // days - total * day_number // days
