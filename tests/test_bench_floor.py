"""The benchmarks' floor writes what the backfill writes.

bench/processing.py times the backfill against bench/straightforward_loop.py,
the plain, obvious way to do the same job, and refuses to print figures when
they write different requests. This test holds them together on a small
archive, so that a change of the backfill's requests that the floor does not
follow fails here, not at the next benchmark run.
"""
import io
import os
import sys

from pipeline import backfill
from pipeline.local.samples import write_archive

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'bench')
sys.path.insert(0, BENCH)

import straightforward_loop  # noqa: E402  (bench/ is not a package)
from runs import requests_in  # noqa: E402


def test_the_straightforward_loop_writes_the_backfills_requests(tmp_path):
    write_archive(str(tmp_path / 'archive'), users=120, days=3, seed=11)
    pattern = str(tmp_path / 'archive' / 'segment-logs' / '*' / '*' / '*')
    backfill.run(['--input', pattern, '--types', 'identify,track', '--max_event_age', 'none',
                  '--dry_run', str(tmp_path / 'backfill' / 'requests'),
                  '--dead_letter', str(tmp_path / 'dead') + '/'], out=io.StringIO())
    straightforward_loop.run(pattern, str(tmp_path / 'floor'))

    written = requests_in(str(tmp_path / 'backfill'))
    assert len(written) > 300
    assert any('"fallback_email"' in request for request in written)
    assert requests_in(str(tmp_path / 'floor')) == written
