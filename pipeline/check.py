"""`segment-loops check`: what a backfill would send, and what the Loops account would lose.

A preflight that writes nothing to Loops but what --create_properties asks
for (it reads the account's contact properties, mailing lists, workflows and
event patterns, and with --lookup contacts). It runs the backfill's own steps on the input
(all of it, or the first --sample lines) as one plain loop
(pipeline/plain_backfill.py): the same file selection, the same
EventProcessor, the same contact model, lead resolution, consent and event
ordering, so its figures are the backfill's summary by construction. Between
the processor's two halves it looks at each request, and reports: events by
type and track name; the requests a backfill would make and how long they
take at the rate limit; contacts unsubscribed, leads created and merged;
what the backfill holds back by default (old track events, subscribed: true)
and the option that sends it; every contact property the mapping would send,
with its count, an example, its inferred type and whether the account has it
with a compatible type; the parts the account would refuse; values reshaped;
events that would fail, by reason.

Exit status 4 (EXIT_DATA_LOSS) when something would lose data (a property
the account lacks, a value its type cannot hold, an unknown mailing list),
unless --warn_only; held-back items are the safe default, not data loss.

It also reads the account's workflows and reports, per live workflow, how
many contacts the run would set it off for (pipeline/workflow_report.py,
pipeline/trigger_scan.py; --lookup N looks contacts up so that the counts
are exact for them), and the event properties the account's event patterns
do not list. With --create_properties it first creates the custom
properties the data needs and the account lacks (pipeline/account_setup.py),
then reports on the account as it is after.

A plain loop rather than a Beam pipeline: a preflight runs on one machine,
and --sample stops after a few lines.
"""
import collections
import json
import sys
from dataclasses import dataclass
from typing import Optional

from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipeline import account_setup
from pipeline import state as sync
from pipeline.check_report import CheckRun, Observations, build_report
from pipeline.check_text import format_report
from pipeline.loops_options import (add_conform_options, add_loops_options, connect_to_loops,
                                    preflight)
from pipeline.options import (DEFAULT_MAX_EVENT_AGE, UsageError, add_input_options,
                              add_safety_options, add_selection_options, job_parser,
                              parse_job_args)
from pipeline.plain_backfill import PlainBackfill, archive_paths, read_events
from pipeline.selection import (ArchiveInput, archive_input_from_args, event_selection_from_args,
                                policy_from_args, print_skipped)
from pipeline.trigger_scan import ContactLookup, TriggerScan
from pipeline.workflow_report import (AccountWorkflows, format_workflows,
                                      read_account_workflows, workflows_section)
from transforms.loops.connection import LoopsConnection
from transforms.mapping.conform import AccountSchema
from transforms.mapping.processor import EventProcessor, Policy, Selection
from transforms.segment.read import Unreadable
from transforms.state.files import StateListing

EXIT_OK = 0
# Not 1: the CLI uses 1 for a job that failed; a script must tell them apart.
EXIT_DATA_LOSS = 4
# What lead resolution and consent read of a contact: check keeps only these
# (merging is per property, so they merge as they would in full).
CONTACT_KEYS = frozenset({'userId', 'email', 'subscribed'})


@dataclass(frozen=True)
class CheckJob:
    """What one check reads and compares, validated before anything is read."""
    input: ArchiveInput
    selection: Selection
    policy: Policy
    max_event_age: str
    resubscribe: bool
    unknown_properties: str
    sample: Optional[int]
    report_path: Optional[str]
    warn_only: bool
    loops: LoopsConnection
    state: Optional[StateListing] = None
    lookup: int = 0
    create_properties: bool = False


def check_parser():
    parser = job_parser('segment-loops check', __doc__.split('\n\n')[0])
    add_input_options(parser)
    add_selection_options(parser)
    add_conform_options(parser)
    add_safety_options(parser, max_event_age=DEFAULT_MAX_EVENT_AGE, resubscribe=False)
    group = parser.add_argument_group('check')
    group.add_argument(
        '--sample', type=int, default=None, metavar='N',
        help='Read only the first N lines (files in path order), for a quick look.')
    group.add_argument(
        '--report', default=None, metavar='PATH',
        help='Also write the report as a JSON object to PATH.')
    group.add_argument(
        '--warn_only', action='store_true', default=False,
        help='Exit 0 even when the check finds data that would be lost.')
    group.add_argument(
        '--lookup', type=int, default=0, metavar='N',
        help='Look the first N contacts up in Loops (GET /v1/contacts/find: one or two '
             'requests each, at the rate limit), so that what the run sets off in the '
             "account's workflows is counted exactly for them (default 0: counts say "
             '"at most" where the sync state does not know).')
    group.add_argument(
        '--create_properties', action='store_true', default=False,
        help='Create the custom contact properties the data needs and the account lacks, '
             'each typed from its values (a property seen with several types is reported, '
             'not created), after listing them; existing properties are left alone. Then '
             'report on the account as it is after.')
    add_loops_options(parser)
    sync.add_state_options(parser, records=False)
    return parser


# check reads the account, so it needs a key even though it sends nothing.
NO_KEY_HINT = ("check reads the account's contact properties and mailing lists and writes "
               'nothing; to see the requests without a key: segment-loops backfill --dry_run '
               'PREFIX')


def job_from_args(args, options: PipelineOptions) -> CheckJob:
    """Validates what the user asked for; raises UsageError with what to fix."""
    if not args.input:
        raise UsageError('--input is required (e.g. --input "archive/segment-logs/*/*/*.gz")')
    if args.sample is not None and args.sample < 1:
        raise UsageError('--sample must be a positive number of lines')
    if args.lookup < 0:
        raise UsageError('--lookup must be a number of contacts (0 for none)')
    archive_input = archive_input_from_args(args, options)
    policy = policy_from_args(args)
    return CheckJob(
        input=archive_input,
        selection=event_selection_from_args(args, ('identify',)),
        policy=policy,
        max_event_age=args.max_event_age,
        resubscribe=args.resubscribe,
        unknown_properties=args.unknown_properties,
        sample=args.sample,
        report_path=args.report,
        warn_only=args.warn_only,
        loops=connect_to_loops(args, NO_KEY_HINT),
        state=state_listing(args, options, policy),
        lookup=args.lookup,
        create_properties=args.create_properties,
    )


def state_listing(args, options: PipelineOptions, policy: Policy) -> Optional[StateListing]:
    """The files of --state a backfill with these options would read, or
    None; UsageError when they are not what the state's manifest lists."""
    return sync.read_listing(args, options, policy)


def scan(job: CheckJob, account: AccountSchema, workflows: tuple = (),
         lookup: Optional[ContactLookup] = None) -> CheckRun:
    """Runs the backfill's steps on the input as one plain loop, looking at
    each request as mapped (`to_requests`) and as fitted (`fit`), and holding
    what it sends against `workflows` (their counts in the run's `triggers`)."""
    counts = collections.Counter()
    processor = EventProcessor(job.selection, job.policy, account, job.unknown_properties)
    delivered = sync.read_state_facts(job.state) if job.state else None
    triggers = TriggerScan(workflows, delivered, lookup) if workflows else None
    # Against a sync state every property is compared; without, leads and
    # consent need only these, and the workflows their triggers' properties.
    kept = None if job.state else CONTACT_KEYS | (triggers.keys if triggers else frozenset())
    backfill = PlainBackfill(job.resubscribe, counts, keep_requests=triggers is not None,
                             kept_properties=kept, delivered=delivered)
    seen = Observations(account)
    shapes = account_setup.EventShapes()
    paths = archive_paths(job.input.patterns, job.input.since_ms, job.input.until_ms, counts)
    for raw in read_events(paths, counts, job.sample):
        if type(raw) is Unreadable:
            seen.unreadable(raw.failure)
            continue
        mapped = processor.to_requests(raw, counts)
        fitted = processor.fit(mapped, counts) if mapped.requests else mapped
        seen.event(mapped, fitted)
        for request in fitted.requests:
            backfill.add(request if triggers is None else triggers.slim(request))
            shapes.add(request)
    for upsert in backfill.upserts():
        seen.upsert(upsert)
        if triggers is not None:
            triggers.upsert(upsert)
    for _, contact, requests in backfill.event_sends():   # counts them
        seen.event_sends(requests)
        if triggers is not None:
            triggers.events(contact, requests)
    return CheckRun(counts, seen, triggers, shapes)


def write_report(report: dict, path: str) -> None:
    with FileSystems.create(path) as out:
        out.write(json.dumps(report, indent=2, ensure_ascii=False).encode('utf-8'))


def main(argv: Optional[list] = None, out=sys.stdout) -> int:
    """Runs the check; returns the exit status: EXIT_DATA_LOSS (4) when data
    would be lost (0 with --warn_only), else 0. Raises UsageError, AuthError,
    LoopsError."""
    args, beam_args = parse_job_args(check_parser(), argv)
    job = job_from_args(args, PipelineOptions(beam_args))
    print_skipped(job.selection.mapping, out)
    team, account = preflight(job.loops)
    created = None
    if job.create_properties:
        created = create_properties(job, account, team, out)
        if account_setup.CREATED in created['results'].values():
            team, account = preflight(job.loops)   # the report is of the account as it is now
    workflows = read_account_workflows(job.loops)
    run = run_scan(job, account, workflows)
    report = build_report(run, job, team)
    report['workflows'] = workflows_section(workflows, run.triggers, job.state is not None)
    report['event_patterns'] = account_setup.event_patterns_section(job.loops, run.events)
    report['created_properties'] = created
    print('\n'.join([format_report(report)] + format_workflows(report['workflows'])
                    + account_setup.format_event_patterns(report['event_patterns'])), file=out)
    if job.report_path:
        write_report(report, job.report_path)
    if report['data_loss'] and not job.warn_only:
        return EXIT_DATA_LOSS
    return EXIT_OK


def create_properties(job: CheckJob, account: AccountSchema, team: str, out) -> dict:
    """--create_properties: a first pass finds the properties the data needs,
    then they are created, the list printed before; -> the report's
    `created_properties`."""
    plan = account_setup.creation_plan(build_report(scan(job, account), job, team)['properties'])
    print('\n'.join(account_setup.plan_lines(plan)), file=out)
    results = account_setup.create_properties(job.loops, plan)
    print('\n'.join(account_setup.result_lines(plan, results)), file=out)
    return account_setup.created_section(plan, results)


def run_scan(job: CheckJob, account: AccountSchema, workflows: AccountWorkflows) -> CheckRun:
    """scan, holding the requests against the live workflows, with --lookup."""
    lookup = None
    if job.lookup and workflows.live:
        lookup = ContactLookup(job.loops.client(), job.lookup)
    try:
        return scan(job, account, workflows.live, lookup)
    finally:
        if lookup is not None:
            lookup.close()
