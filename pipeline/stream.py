"""`segment-loops stream`: a Pub/Sub subscription of Segment events -> Loops, continuously.

The pipeline, step by step:
  1. ReadFromPubSub        one Segment event per message (Segment's Pub/Sub destination)
  2. ProcessEvents         the backfill's parse, filter, map, hold back and fit to the
                           account, one event at a time (failures: parse, map, conform);
                           a Segment delete message becomes its contact's deletion
  3. DropRepeatedMessages  a message seen in the last --dedupe_seconds is dropped (each of
                           its requests, when several routes take it);
                           with --state, so is an event the state records as delivered
  4. KeepLatestPerContact  per contact: an upsert goes on with only the properties newer
                           than those already sent, an event gets the contact's latest email;
                           after a deletion, calls from before it are dropped
  5. WriteToLoops          per shard, batches of at most --max_buffering_seconds, merged
                           per contact; an event that reaches Loops before its contact
                           waits for it up to --contact_wait_seconds (failures: deliver);
                           with --state, what Loops accepted is recorded, so a backfill
                           sharing the state never sends a value older than the stream's,
                           nor a deleted contact's data from before its deletion (the
                           stream only adds log files: it takes no lease, and shares the
                           state with the one run that holds it, pipeline/state.py)
  6. failures              to --dead_letter_topic (JSON, attributes stage and reason)
                           and/or windowed Avro files under --dead_letter
"""
import math
import sys
import time
from dataclasses import dataclass, replace
from typing import Optional

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.gcp.pubsub import parse_subscription, parse_topic
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from pipeline import lifecycle
from pipeline import state as sync
from pipeline import summary as run_summary
from pipeline import workflow_guard
from pipeline.loops_options import (add_conform_options, add_loops_options, connect_to_loops,
                                    preflight, require_secret_on_remote_runner)
from pipeline.options import (UsageError, add_safety_options, add_selection_options, job_parser,
                              parse_job_args, require_cloud_paths, runs_locally, set_default_runner)
from pipeline.selection import (event_selection_from_args, parse_duration, policy_from_args,
                                print_skipped)
from pipeline.writable import require_writable
from transforms.contacts.stream_state import KeepLatestPerContact
from transforms.core.records import ContactSequence, RawEvent
from transforms.core.sinks import CountFailures, PublishFailures, WriteWindowedFailures
from transforms.delivery.contact_wait import ContactWait
from transforms.delivery.write import WriteToLoops, raise_if_key_rejected
from transforms.loops.connection import LoopsConnection
from transforms.mapping.conform import AccountSchema
from transforms.mapping.process import ProcessEvents
from transforms.mapping.processor import EventProcessor, Policy, Selection
from transforms.segment.dedupe import DropRepeatedMessages
from transforms.state.delivered_events import DropDeliveredEvents
from transforms.state.recorder import StateRecorder

DEFAULT_STREAM_RUNNER = 'DirectRunner'
DEFAULT_DEAD_LETTER = 'dead-letter/'
DEFAULT_CONTACT_STATE_TTL = '7d'
DEFAULT_CONTACT_WAIT_SECONDS = 600.0


@dataclass(frozen=True)
class ArrivalPolicy(Policy):
    """The stream's Policy: an event's age is taken when the stream reads it
    (a stream has no start to measure against: it runs for weeks)."""

    def too_old(self, request) -> bool:
        if self.max_event_age_ms is None:
            return False
        return Policy.too_old(replace(self, now_ms=int(time.time() * 1000)), request)


@dataclass(frozen=True)
class StreamJob:
    subscription: Optional[str]
    topic: Optional[str]
    selection: Selection
    policy: Policy
    resubscribe: bool
    dedupe_seconds: float
    contact_state_ttl_seconds: float
    contact_wait_seconds: float
    max_buffering_seconds: float
    batch_size: int
    dead_letter_topic: Optional[str]
    dead_letter: Optional[str]
    failure_window_seconds: int
    loops: LoopsConnection
    unknown_properties: str = 'send'
    recorder: Optional[StateRecorder] = None
    delivered: Optional[DropDeliveredEvents] = None


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
    add_ordering_options(parser)
    group = parser.add_argument_group('batching')
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
    add_safety_options(parser, max_event_age='none', resubscribe=True,
                       age_against='the time the stream reads the event')
    add_loops_options(parser)
    add_conform_options(parser)
    sync.add_state_options(parser)
    workflow_guard.add_watch_option(parser)
    return parser


def add_ordering_options(parser) -> None:
    """What the stream remembers per contact, and how long an event waits for its contact."""
    group = parser.add_argument_group('order of arrival')
    group.add_argument(
        '--contact_state_ttl', default=DEFAULT_CONTACT_STATE_TTL, metavar='DURATION',
        help='How long the stream remembers what it sent for a contact (the time of each '
             'property\'s value, and its latest email) after the contact\'s last event: an '
             'older call arriving within that time never overwrites a newer value. A '
             f'duration such as 7d or 24h. Default: {DEFAULT_CONTACT_STATE_TTL} (Pub/Sub keeps '
             'an unacknowledged message up to 7 days).')
    group.add_argument(
        '--contact_wait_seconds', type=float, default=DEFAULT_CONTACT_WAIT_SECONDS,
        metavar='SECONDS',
        help='How long an event that Loops refuses with "Contact not found" (it names only a '
             'userId, and the identify that creates the contact has not landed yet) is held '
             'and sent again (at once when the contact\'s upsert is delivered, else after 5 s, '
             '10 s, 20 s, ...) before it becomes a failure record; 0 never holds. '
             f'Default: {DEFAULT_CONTACT_WAIT_SECONDS:g}.')


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


def _check_durations(args) -> tuple:
    """-> (contact state TTL seconds, contact wait seconds)."""
    if args.max_buffering_seconds <= 0:
        raise UsageError('--max_buffering_seconds must be positive')
    if args.dedupe_seconds < 0:
        raise UsageError('--dedupe_seconds must not be negative')
    if not args.contact_wait_seconds >= 0:
        raise UsageError('--contact_wait_seconds must not be negative (0 never holds an event)')
    ttl = parse_duration(args.contact_state_ttl, '--contact_state_ttl')
    if ttl is None or ttl <= 0:
        raise UsageError('--contact_state_ttl must be a positive duration such as 7d')
    return ttl, args.contact_wait_seconds


def job_from_args(args, options: PipelineOptions) -> StreamJob:
    if not (args.subscription or args.topic):
        raise UsageError('--subscription (or --topic) is required')
    check_pubsub_names(args)
    require_cloud_paths(options, {'--dead_letter': args.dead_letter})
    require_secret_on_remote_runner(args, options)
    ttl, contact_wait = _check_durations(args)
    dead_letter = args.dead_letter
    if dead_letter is None and not args.dead_letter_topic:
        dead_letter = DEFAULT_DEAD_LETTER
    policy = policy_from_args(args)
    # The mapping's file may be on s3:// (the job's --s3_* options) or gs://.
    FileSystems.set_options(options)
    return StreamJob(
        subscription=args.subscription,
        topic=args.topic,
        selection=replace(event_selection_from_args(args, ('identify', 'track')), deletions=True),
        policy=ArrivalPolicy(policy.require_user_id, policy.max_event_age_ms, policy.now_ms,
                             policy.resubscribe),
        resubscribe=args.resubscribe,
        dedupe_seconds=args.dedupe_seconds,
        contact_state_ttl_seconds=ttl,
        contact_wait_seconds=contact_wait,
        max_buffering_seconds=args.max_buffering_seconds,
        batch_size=args.batch_size or default_batch_size(
            args.rate_limit / args.write_shards, args.max_buffering_seconds),
        dead_letter_topic=args.dead_letter_topic,
        dead_letter=dead_letter,
        failure_window_seconds=args.failure_window_seconds,
        loops=connect_to_loops(args),
        unknown_properties=args.unknown_properties,
        recorder=sync.recorder_from_args(args, options),
        delivered=sync.delivered_events_from_args(args),
    )


def to_raw_event(message) -> RawEvent:
    """A Pub/Sub message -> RawEvent (its id as the source, for failure records)."""
    return RawEvent(message.message_id or '', 0, message.data)


def build_stream(p: beam.Pipeline, job: StreamJob, account: AccountSchema) -> None:
    messages = p | 'ReadFromPubSub' >> beam.io.ReadFromPubSub(
        subscription=job.subscription, topic=job.topic, with_attributes=True)
    processor = EventProcessor(job.selection, job.policy, account, job.unknown_properties)
    requests, processing_failed = (messages
                                   | 'ToRawEvent' >> beam.Map(to_raw_event)
                                   | 'ProcessEvents' >> ProcessEvents(processor))
    contact_wait = (ContactWait(job.contact_wait_seconds) if job.contact_wait_seconds > 0
                    else None)
    requests = requests | 'DropRepeatedMessages' >> DropRepeatedMessages(job.dedupe_seconds)
    if job.delivered is not None:
        requests = requests | 'DropDeliveredEvents' >> job.delivered
    written = (
        requests
        | 'KeepLatestPerContact' >> KeepLatestPerContact(job.contact_state_ttl_seconds,
                                                         job.resubscribe)
        | 'AsSequences' >> beam.Map(lambda r: ContactSequence(r.contact, (r,)))
        | 'WriteToLoops' >> WriteToLoops(job.loops, label='stream',
                                         max_buffering_seconds=job.max_buffering_seconds,
                                         batch_size=job.batch_size,
                                         contact_wait=contact_wait, recorder=job.recorder))
    failures = ((processing_failed, written.failures)
                | 'AllFailures' >> beam.Flatten()
                | 'CountFailures' >> CountFailures())
    if job.dead_letter_topic:
        failures | 'FailuresToTopic' >> PublishFailures(job.dead_letter_topic)
    if job.dead_letter:
        failures | 'FailuresToFiles' >> WriteWindowedFailures(
            job.dead_letter, job.failure_window_seconds)


def start(argv=None, out=sys.stdout):
    """Validates, checks the key, and starts the stream; returns the Beam
    PipelineResult (cancel() stops it)."""
    return _launch(argv, out)[0]


def _launch(argv, out, signals: Optional[lifecycle.StopSignals] = None) -> tuple:
    """-> (PipelineResult, the job's PipelineOptions, its StreamJob, the
    WorkflowWatch to start while waiting)."""
    args, beam_args = parse_job_args(stream_parser(), argv)
    options = PipelineOptions(beam_args)
    options.view_as(StandardOptions).streaming = True
    set_default_runner(options, DEFAULT_STREAM_RUNNER)
    job = job_from_args(args, options)
    print_skipped(job.selection.mapping, out)
    require_writable(options, {'--state': args.state, '--dead_letter': job.dead_letter})
    team, account = preflight(job.loops)
    print(f'Loops API key accepted (team: {team}).', file=out)
    watch = workflow_guard.watch_stream(job.loops, job.selection, args.workflow_check_seconds,
                                        out)
    p = beam.Pipeline(options=options)
    build_stream(p, job, account)
    if signals is not None:
        signals.running(in_process=runs_locally(options))
    return p.run(), options, job, watch


def stream_counters(result) -> dict:
    counters = run_summary.pipeline_counters(result)
    return dict(sorted(counters.items()))


def run(argv=None, out=sys.stdout) -> int:
    """Runs until the job ends or is stopped (SIGINT, SIGTERM:
    pipeline/lifecycle.py), then prints its counters; raises AuthError when
    Loops rejected the API key while it ran, lifecycle.Stopped after a stop."""
    argv = list(sys.argv[1:] if argv is None else argv)
    with lifecycle.StopSignals('segment-loops stream', stop_steps=False) as signals:
        result, options, job, watch = _launch(argv, out, signals)
        if not runs_locally(options):
            print('Streaming job submitted; it runs until you drain or cancel it (on Dataflow: '
                  '`gcloud dataflow jobs drain JOB_ID --region REGION`).', file=out)
            return 0
        print('Streaming. Ctrl-C or SIGTERM stops the job.', file=out)
        watch.start()
        try:
            writers_stopped = lifecycle.wait_for_stream(result, signals)
        finally:
            watch.stop()
        counters = stream_counters(result)
        if counters:
            print(run_summary.format_table(counters, 'stream counters'), file=out)
        note = run_summary.integrations_note(counters)
        if note:
            print(note, file=out)
        raise_if_key_rejected(counters)
        stopped = signals.stopped(stop_line(job, writers_stopped, argv))
        if stopped is not None:
            raise stopped
        return 0


def stop_line(job: StreamJob, writers_stopped: bool, argv: list) -> str:
    """The one line of a stopped stream (after 'stopped by SIGTERM: ')."""
    if writers_stopped:
        done = (f'Loops did not answer within {lifecycle.STREAM_GRACE_SECONDS:g} s, so the '
                'requests of the batch being sent that had not gone out were dropped (the local '
                'runner acknowledged their messages when it read them)')
    else:
        done = 'the batch being sent was finished'
    if job.recorder is not None:
        done += ', what was delivered is in the sync state'
    waiting = ('messages not yet read wait in the subscription' if job.subscription
               else 'messages published while it is stopped are lost (--topic)')
    return f'{done}; {waiting}; start it again to go on: {lifecycle.command_line("stream", argv)}'
