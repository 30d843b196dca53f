import gzip
import json
import os

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that

from pipeline.local.samples import write_avro, write_ndjson
from transforms.segment.read import (AVRO, GZIP_NDJSON, NDJSON, UTF8_BOM, ReadSegmentArchive,
                                     archive_kind, in_date_range, read_archive_file,
                                     received_day_ms)

DAY = 86_400_000
NOV_1 = 1_761_955_200_000  # 2025-11-01T00:00:00Z


@pytest.mark.parametrize('path, kind', [
    ('s3://b/segment-logs/src/1761955200000/1761958800000.a1b2.c3d4.uuid.gz', GZIP_NDJSON),
    ('gs://b/x/events.json.gz', GZIP_NDJSON),
    ('/tmp/events.json', NDJSON),
    ('/tmp/events.JSONL', NDJSON),
    ('/tmp/events.ndjson', NDJSON),
    ('/tmp/export.avro', AVRO),
    ('s3://b/segment-logs/dummy-object.txt', None),
    ('/tmp/segment-logs/src/1761955200000/readme.md', None),
    ('/tmp/events.json.bak', None),
])
def test_archive_kind(path, kind):
    assert archive_kind(path) == kind


@pytest.mark.parametrize('path, day', [
    (f's3://b/segment-logs/src/{NOV_1}/f.gz', NOV_1),
    (f'/data/segment-logs/src/{NOV_1 + DAY}/f.gz', NOV_1 + DAY),
    (f'/data/segment-logs/src/{NOV_1 + 1}/f.gz', None),      # not midnight: not a day folder
    ('/data/segment-logs/src/latest/f.gz', None),
    ('f.gz', None),
    (f'C:\\data\\{NOV_1}\\f.gz', NOV_1),
])
def test_received_day_ms(path, day):
    assert received_day_ms(path) == day


@pytest.mark.parametrize('day, since, until, inside', [
    (NOV_1, None, None, True),
    (None, None, None, True),
    (None, NOV_1, None, False),           # a range was asked for: undated files are outside it
    (NOV_1, NOV_1, NOV_1, True),          # inclusive on both ends
    (NOV_1, NOV_1 + DAY, None, False),
    (NOV_1 + DAY, None, NOV_1, False),
    (NOV_1 + DAY, NOV_1, NOV_1 + 2 * DAY, True),
])
def test_in_date_range(day, since, until, inside):
    assert in_date_range(day, since, until) is inside


def _day_folder(root, day_ms):
    folder = os.path.join(root, 'segment-logs', 'src', str(day_ms))
    os.makedirs(folder, exist_ok=True)
    return folder


def _write_gzip(path, lines):
    with gzip.open(path, 'wb') as f:
        f.write(b''.join(line + b'\n' for line in lines))


def _run_read(patterns, check_items, check_failed, since=None, until=None):
    """Runs ReadSegmentArchive; the checks receive the outputs as lists, the
    chunks as (path, line number, item) triples."""
    with TestPipeline(runner='FnApiRunner') as p:
        chunks, failed = p | ReadSegmentArchive(patterns, since, until)
        items = chunks | beam.FlatMap(lambda chunk: list(chunk.events()))
        assert_that(items, check_items, label='CheckItems')
        assert_that(failed, check_failed, label='CheckFailed')


def _no_failures(failed):
    assert failed == []


def test_reads_gzip_plain_and_avro_with_sources_and_line_numbers(tmp_path):
    root = str(tmp_path)
    folder = _day_folder(root, NOV_1)
    _write_gzip(os.path.join(folder, 'a.gz'), [b'{"type":"identify","messageId":"m1"}', b'not json'])
    plain = os.path.join(root, 'plain.jsonl')
    write_ndjson(plain, [{'type': 'track', 'messageId': 'm2', 'event': 'E'}])
    avro = os.path.join(root, 'export.avro')
    write_avro(avro, [{'type': 'identify', 'messageId': 'm3', 'userId': 7, 'traits': {'a b?': 1}}])
    open(os.path.join(root, 'segment-logs', 'dummy-object.txt'), 'w').close()

    def check_items(items):
        by_source = {(os.path.basename(path), n): raw for path, n, raw in items}
        assert by_source[('a.gz', 1)].rstrip(b'\n') == b'{"type":"identify","messageId":"m1"}'
        assert by_source[('a.gz', 2)].rstrip(b'\n') == b'not json'
        assert json.loads(by_source[('plain.jsonl', 1)]) == {
            'type': 'track', 'messageId': 'm2', 'event': 'E'}
        assert by_source[('export.avro', 1)] == {
            'type': 'identify', 'messageId': 'm3', 'userId': 7, 'traits': {'a b?': 1}}
        assert len(items) == 4

    _run_read([os.path.join(root, 'segment-logs', '*', '*', '*'), plain, avro],
              check_items, _no_failures)


def test_unreadable_and_truncated_files_become_read_failures_after_what_could_be_read(tmp_path):
    folder = _day_folder(str(tmp_path), NOV_1)
    with open(os.path.join(folder, 'corrupt.gz'), 'wb') as f:
        f.write(b'this is not gzip at all')
    whole = gzip.compress(b''.join(b'{"type":"identify","messageId":"m%d"}\n' % i for i in range(2000)))
    with open(os.path.join(folder, 'truncated.gz'), 'wb') as f:
        f.write(whole[: len(whole) // 2])

    def check_items(items):
        assert 0 < len(items) < 2000
        assert all(os.path.basename(path) == 'truncated.gz' for path, _, _ in items)

    def check_failed(failed):
        reasons = sorted((os.path.basename(r['source']), r['stage'], r['reason']) for r in failed)
        assert reasons == [('corrupt.gz', 'read', 'unreadable_file'),
                           ('truncated.gz', 'read', 'truncated_file')]

    _run_read([os.path.join(folder, '*.gz')], check_items, check_failed)


def test_since_until_select_day_folders_without_opening_others(tmp_path):
    root = str(tmp_path)
    for offset in range(3):
        folder = _day_folder(root, NOV_1 + offset * DAY)
        _write_gzip(os.path.join(folder, 'f.gz'), [b'{"type":"identify","messageId":"d%d"}' % offset])
    # A corrupt file in an excluded day: opening it would produce a read failure.
    with open(os.path.join(_day_folder(root, NOV_1 + 5 * DAY), 'bad.gz'), 'wb') as f:
        f.write(b'corrupt')

    def check_items(items):
        assert sorted(json.loads(raw)['messageId'] for _, _, raw in items) == ['d1', 'd2']

    _run_read([os.path.join(root, 'segment-logs', '*', '*', '*.gz')], check_items, _no_failures,
              since=NOV_1 + DAY, until=NOV_1 + 2 * DAY)


def test_a_byte_order_mark_is_not_part_of_the_first_line(tmp_path):
    folder = _day_folder(str(tmp_path), NOV_1)
    _write_gzip(os.path.join(folder, 'bom.gz'),
                [UTF8_BOM + b'{"type":"identify","messageId":"m1"}', b'{"type":"page"}'])
    plain = os.path.join(str(tmp_path), 'bom.jsonl')
    with open(plain, 'wb') as f:
        f.write(UTF8_BOM + b'{"type":"track","messageId":"m2"}\n')

    def check_items(items):
        assert sorted(json.loads(raw).get('messageId', '-') for _, _, raw in items) == [
            '-', 'm1', 'm2']

    _run_read([os.path.join(folder, '*.gz'), plain], check_items, _no_failures)


def test_chunks_hold_consecutive_lines_numbered_from_one(tmp_path):
    folder = _day_folder(str(tmp_path), NOV_1)
    _write_gzip(os.path.join(folder, 'big.gz'),
                [b'{"type":"identify","messageId":"m%d"}' % i for i in range(2500)])
    chunks = list(read_archive_file(os.path.join(folder, 'big.gz'), size=1000))
    assert [(c.first_line, len(c.items)) for c in chunks] == [(1, 1000), (1001, 1000), (2001, 500)]
    last = list(chunks[-1].events())[-1]
    assert (last.line, json.loads(last.data)['messageId']) == (2500, 'm2499')
