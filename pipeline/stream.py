"""`segment-loops stream`: a Pub/Sub subscription of Segment events -> Loops, continuously.

The pipeline, step by step:
  1. ReadFromPubSub        one Segment event per message (Segment's Pub/Sub destination)
  2. SegmentToLoops        the backfill's parse, filter and map (failures: parse, map)
  3. DropRepeatedMessages  a messageId seen in the last --dedupe_seconds is dropped
  4. WriteToLoops          per shard, batches of at most --max_buffering_seconds,
                           merged per contact in event-time order (failures: deliver)
  5. failures              to --dead_letter_topic (JSON, attributes stage and reason)
                           and/or windowed Avro files under --dead_letter
"""
import math
import sys
from dataclasses import dataclass
from typing import Optional

import apache_beam as beam
from apache_beam.io.gcp.pubsub import parse_subscription, parse_topic
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline import summary as run_summary
from pipeline.loops_options import (add_conform_options, add_loops_options, connect_to_loops,
                                    preflight, require_secret_on_remote_runner)
from pipeline.options import (UsageError, add_selection_options, job_parser,
                              require_cloud_paths, runs_locally, set_default_runner)
from pipeline.selection import EventSelection, event_selection_from_args
from transforms.coalesce import ContactSequence
from transforms.conform import AccountSchema, ConformToAccount
from transforms.dedupe import DropRepeatedMessages
from transforms.process import SegmentToLoops
from transforms.sinks import PublishFailures, WriteWindowedFailures
from transforms.write import LoopsConnection, WriteToLoops

DEFAULT_STREAM_RUNNER = 'DirectRunner'
DEFAULT_DEAD_LETTER = 'dead-letter/'



@dataclass(frozen=True)
class StreamJob:
    subscription: Optional[str]
    topic: Optional[str]
    selection: EventSelection
    dedupe_seconds: float
    max_buffering_seconds: float
    batch_size: int
    dead_letter_topic: Optional[str]
    dead_letter: Optional[str]
    failure_window_seconds: int
    loops: LoopsConnection
    unknown_properties: str = 'send'


def stream_parser():
    parser = job_parser('segment-loops stream', __doc__.split('\n\n')[0])
    group = parser.add_argument_group('Pub/Sub')
    source = group.add_mutually_exclusive_group()
    source.add_argument('--subscription', metavar='projects/P/subscriptions/S',
                        help='Subscription to read Segment events from (recommended: it keeps '
                             'messages while the job is down).')
    source.add_argument('--topic', metavar='projects/P/topics/T',
                        help='Topic to read from through a temporary subscription.')
    group.add_argument('--dedupe_seconds', type=float, default=600.0,
                       help='How long a messageId is remembered to drop repeats (default 600).')
    group.add_argument('--max_buffering_seconds', type=float, default=1.0,
                       help='No request waits longer than this before it is sent (default 1).')
    group.add_argument('--batch_size', type=int, default=None,
                       help='Requests per shard batch at most (sent as soon as it is full). '
                            'Default: what one writer sends in two --max_buffering_seconds '
                            '(2 x rate_limit / write_shards x max_buffering_seconds).')
    failures = parser.add_argument_group('failures')
    failures.add_argument('--dead_letter_topic', metavar='projects/P/topics/T',
                          help='Publish failure records here as JSON, with attributes stage '
                               'and reason.')
    failures.add_argument('--dead_letter', metavar='PREFIX', default=None,
                          help='Write failure records as windowed Avro files under PREFIX. '
                               f'Default: {DEFAULT_DEAD_LETTER} unless --dead_letter_topic is set.')
    failures.add_argument('--failure_window_seconds', type=int, default=60,
                          help='Window of the Avro failure files (default 60).')
    add_selection_options(parser)
    add_loops_options(parser)
    add_conform_options(parser)
    return parser


def check_pubsub_names(args) -> None:
    """Beam's own name rules, checked before anything starts."""
    try:
        if args.subscription:
            parse_subscription(args.subscription)
        if args.topic:
            parse_topic(args.topic)
        if args.dead_letter_topic:
            parse_topic(args.dead_letter_topic)
    except ValueError as error:
        raise UsageError(f'{error} (expected projects/PROJECT/subscriptions/NAME or '
                         'projects/PROJECT/topics/NAME; a project id has 6 to 30 characters)'
                         ) from None


BATCH_BUFFERING_PERIODS = 2


def default_batch_size(shard_rate: float, max_buffering_seconds: float) -> int:
    """What one writer sends in two buffering periods. Under a backlog a batch
    this size fills (and goes) without waiting for the buffering bound, while
    waiting for a batch's last answers before the next batch is spread over
    two periods of sending. Measured locally at 10/s under a backlog: 500 ->
    43% of the limit (batches go on the timer), 10 -> 67%, 20 -> 70%,
    30 -> 72%, 50 -> 43% (bench/stream_latency.py --batch_size N)."""
    return max(1, math.ceil(BATCH_BUFFERING_PERIODS * shard_rate * max_buffering_seconds))


def job_from_args(args, options: PipelineOptions) -> StreamJob:
    if not (args.subscription or args.topic):
        raise UsageError('--subscription (or --topic) is required')
    check_pubsub_names(args)
    require_cloud_paths(options, {'--dead_letter': args.dead_letter})
    require_secret_on_remote_runner(args, options)
    if args.max_buffering_seconds <= 0:
        raise UsageError('--max_buffering_seconds must be positive')
    dead_letter = args.dead_letter
    if dead_letter is None and not args.dead_letter_topic:
        dead_letter = DEFAULT_DEAD_LETTER
    return StreamJob(
        subscription=args.subscription,
        topic=args.topic,
        selection=event_selection_from_args(args, ('identify', 'track')),
        dedupe_seconds=args.dedupe_seconds,
        max_buffering_seconds=args.max_buffering_seconds,
        batch_size=args.batch_size or default_batch_size(
            args.rate_limit / args.write_shards, args.max_buffering_seconds),
        dead_letter_topic=args.dead_letter_topic,
        dead_letter=dead_letter,
        failure_window_seconds=args.failure_window_seconds,
        loops=connect_to_loops(args),
        unknown_properties=args.unknown_properties,
    )


def build_stream(p: beam.Pipeline, job: StreamJob, account: AccountSchema) -> None:
    messages = p | 'ReadFromPubSub' >> beam.io.ReadFromPubSub(
        subscription=job.subscription, topic=job.topic, with_attributes=True)
    raw = messages | 'ToRawEvent' >> beam.Map(lambda m: (m.message_id or '', 0, m.data))
    requests, processing_failed = raw | 'SegmentToLoops' >> SegmentToLoops(
        job.selection.types, job.selection.event_names, job.selection.mapping)
    requests, conform_failed = requests | 'ConformToAccount' >> ConformToAccount(
        account, job.unknown_properties)
    _, delivery_failed = (
        requests
        | 'DropRepeatedMessages' >> DropRepeatedMessages(job.dedupe_seconds)
        | 'AsSequences' >> beam.Map(lambda r: ContactSequence(r.contact, (r,)))
        | 'WriteToLoops' >> WriteToLoops(job.loops, label='stream',
                                         max_buffering_seconds=job.max_buffering_seconds,
                                         batch_size=job.batch_size))
    failures = ((processing_failed, conform_failed, delivery_failed)
                | 'AllFailures' >> beam.Flatten())
    if job.dead_letter_topic:
        failures | 'FailuresToTopic' >> PublishFailures(job.dead_letter_topic)
    if job.dead_letter:
        failures | 'FailuresToFiles' >> WriteWindowedFailures(
            job.dead_letter, job.failure_window_seconds)


def start(argv=None, out=sys.stdout):
    """Validates, checks the key, and starts the stream; returns the Beam
    PipelineResult (cancel() stops it)."""
    return _launch(argv, out)[0]


def _launch(argv, out) -> tuple:
    """-> (PipelineResult, the job's PipelineOptions)."""
    args, beam_args = stream_parser().parse_known_args(argv)
    options = PipelineOptions(beam_args)
    options.view_as(StandardOptions).streaming = True
    set_default_runner(options, DEFAULT_STREAM_RUNNER)
    job = job_from_args(args, options)
    team, account = preflight(job.loops)
    print(f'Loops API key accepted (team: {team}).', file=out)
    p = beam.Pipeline(options=options)
    build_stream(p, job, account)
    return p.run(), options


def stream_counters(result) -> dict:
    counters = run_summary.pipeline_counters(result)
    return dict(sorted(counters.items()))


def run(argv=None, out=sys.stdout) -> int:
    """Runs until the job ends or Ctrl-C, then prints its counters."""
    result, options = _launch(argv, out)
    if not runs_locally(options):
        print('Streaming job submitted; it runs until you cancel it.', file=out)
        return 0
    print('Streaming. Ctrl-C stops the job.', file=out)
    try:
        result.wait_until_finish()
    except KeyboardInterrupt:
        result.cancel()
    counters = stream_counters(result)
    if counters:
        print(run_summary.format_table(counters, 'stream counters'), file=out)
    return 0
