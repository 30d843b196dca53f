"""Reading an account's workflows and event patterns and creating
properties: the parsing as pure functions over the answers Loops documents,
then the reading against the sandbox over HTTP."""
import pytest

from pipeline.demo import DEMO_WORKFLOWS
from pipeline.local.sandbox import LoopsSandbox
from transforms.loops.client import LoopsClient
from transforms.loops.retry import LoopsError
from transforms.loops.workflows import (Comparison, EventPattern, PropertyExists, PropertyQuery,
                                        Trigger, Workflow, WorkflowsUnavailable,
                                        create_property, parse_event_pattern, parse_page,
                                        parse_workflow, read_event_pattern, read_event_patterns,
                                        read_workflows)

KEY = 'workflows-client-key'

# Answers as Loops documents them, transcribed as data.
# npm loops 7.3.0 README, getWorkflow:
README_WORKFLOW = {
    'id': 'clw1a3b5c7d9e1f3g5h7i9j1',
    'url': 'https://app.loops.so/workflows/clw1a3b5c7d9e1f3g5h7i9j1', 'status': 'Draft',
    'name': 'Onboarding', 'mailingListId': None, 'rootNodeId': 'cf16k73gq014h3mmj5b6jdi9r',
    'workflowRevisionId': 'clrev0w0r1k2f3l4o5w6',
    'nodes': {'cf16k73gq014h3mmj5b6jdi9r': {'typeName': 'SignupTrigger',
                                            'nextNodeIds': ['cf16k73gq014h3mmj5b4jdifg']},
              'cf16k73gq014h3mmj5b4jdifg': {'typeName': 'ExitAction', 'nextNodeIds': []}}}
# loops-openapi.yaml 6507-6523 (SimplifiedWorkflow example: no url)
OAS_WORKFLOW = {
    'id': 'clw1a3b5c7d9e1f3g5h7i9j1', 'status': 'Draft', 'name': 'Welcome series',
    'description': 'Onboarding emails for new signups', 'mailingListId': 'clm2k8j4h6g0f8d6s4a2b0z8',
    'rootNodeId': 'cln8p0q2r4s6t8u0v2w4x6z8',
    'nodes': {'cln8p0q2r4s6t8u0v2w4x6z8': {'typeName': 'SignupTrigger',
                                           'nextNodeIds': ['cln1a3b5c7d9e1f3g5h7i9j1']},
              'cln1a3b5c7d9e1f3g5h7i9j1': {'typeName': 'SendEmailAction', 'nextNodeIds': [],
                                           'emailMessageId': 'cle5f7g9h1i3j5k7l9m1n3p5',
                                           'subject': 'Welcome to Acme!'}}}
# loops-openapi.yaml 7565-7592 (SimplifiedEventTriggerWorkflowNode example)
EVENT_NODE = {'typeName': 'EventTrigger', 'nextNodeIds': ['cln1a3b5c7d9e1f3g5h7i9j1'],
              'eventName': 'signup', 'reEligible': False}
PLAN_QUERY = {'key': 'planName', 'is': {'value': 'pro', 'operator': 'equal'},
              'was': {'value': 'pro', 'operator': 'not_equal'}}


def with_root(node: dict, status: str = 'Sending') -> dict:
    return {'id': 'w1', 'status': status, 'mailingListId': None, 'rootNodeId': 'r',
            'workflowRevisionId': None, 'nodes': {'r': node}}


# ------------------------------------------------------------------ parsing, pure

def test_the_readme_workflow():
    assert parse_workflow(README_WORKFLOW) == Workflow(
        'clw1a3b5c7d9e1f3g5h7i9j1', 'Onboarding',
        'https://app.loops.so/workflows/clw1a3b5c7d9e1f3g5h7i9j1', 'Draft', None,
        (Trigger('SignupTrigger'),))
    assert parse_workflow(README_WORKFLOW).live is False


def test_a_workflow_without_url_gets_the_apps_link_and_the_summarys_name():
    workflow = parse_workflow({k: v for k, v in OAS_WORKFLOW.items() if k != 'name'},
                              {'id': OAS_WORKFLOW['id'], 'name': 'From the list'})
    assert (workflow.name, workflow.url, workflow.mailing_list_id) == (
        'From the list', 'https://app.loops.so/workflows/clw1a3b5c7d9e1f3g5h7i9j1',
        'clm2k8j4h6g0f8d6s4a2b0z8')


@pytest.mark.parametrize('node, trigger', [
    (EVENT_NODE, Trigger('EventTrigger', event_name='signup')),
    ({'typeName': 'EventTrigger', 'nextNodeIds': [], 'eventName': None,
      'eventPatternId': 'cle1a2b3c004yl70d5e6f7g8h', 'reEligible': True},
     Trigger('EventTrigger', event_pattern_id='cle1a2b3c004yl70d5e6f7g8h', re_eligible=True)),
    ({'typeName': 'ContactPropertyTrigger', 'nextNodeIds': [], 'contactPropertyQuery': PLAN_QUERY,
      'reEligible': False},
     Trigger('ContactPropertyTrigger', property_query=PropertyQuery(
         'planName', Comparison('equal', 'pro'), Comparison('not_equal', 'pro')))),
    ({'typeName': 'ContactPropertyTrigger', 'nextNodeIds': [], 'contactPropertyQuery': None,
      'reEligible': False}, Trigger('ContactPropertyTrigger')),
    ({'typeName': 'AddToListTrigger', 'nextNodeIds': [], 'mailingListId': 'list_news',
      'reEligible': True}, Trigger('AddToListTrigger', list_id='list_news', re_eligible=True)),
    ({'typeName': 'BlankTrigger', 'nextNodeIds': []}, Trigger('BlankTrigger')),
    ({'typeName': 'WebhookTrigger', 'nextNodeIds': [], 'platform': 'x'},
     Trigger('WebhookTrigger')),
])
def test_triggers(node, trigger):
    assert parse_workflow(with_root(node)).triggers == (trigger,)


@pytest.mark.parametrize('status, live', [('Sending', True), ('Draft', False),
                                          ('Paused', False), ('PausedAndQueueing', False)])
def test_only_sending_is_live(status, live):
    assert parse_workflow(with_root(EVENT_NODE, status)).live is live


def test_the_root_trigger_comes_first_and_actions_are_no_triggers():
    detail = {**OAS_WORKFLOW, 'rootNodeId': 'b', 'nodes': {
        'a': {'typeName': 'AddToListTrigger', 'nextNodeIds': [], 'mailingListId': 'l',
              'reEligible': False},
        'b': EVENT_NODE, 'c': {'typeName': 'TimerAction', 'nextNodeIds': [], 'amount': 1,
                               'unit': 'd'}}}
    assert [t.kind for t in parse_workflow(detail).triggers] == ['EventTrigger',
                                                                'AddToListTrigger']


@pytest.mark.parametrize('answer', [
    [], {'id': 'w1'}, {'id': 'w1', 'status': 'Sending', 'nodes': {'r': {'nextNodeIds': []}}},
    with_root({'typeName': 'ContactPropertyTrigger', 'contactPropertyQuery': {'key': 'k'}}),
])
def test_a_workflow_of_another_shape_is_a_value_error(answer):
    with pytest.raises(ValueError, match='unexpected answer from Loops'):
        parse_workflow(answer)


def test_pages():
    # npm loops 7.3.0 README, listEventPatterns; and a later page's cursor
    # (loops-openapi.yaml 6403-6411).
    last = {'pagination': {'totalResults': 1, 'returnedResults': 1, 'perPage': 20,
                           'totalPages': 1, 'nextCursor': None, 'nextPage': None},
            'data': [{'id': 'cle1a2b3c004yl70d5e6f7g8h', 'eventName': 'signup',
                      'incomingWebhookPlatform': None}]}
    assert parse_page(last) == (last['data'], None)
    more = {**last, 'pagination': {**last['pagination'], 'nextCursor': 'clp9k2m4n6p8q0r2s4t6u8v0'}}
    assert parse_page(more)[1] == 'clp9k2m4n6p8q0r2s4t6u8v0'
    # The Go SDK's reading: an empty cursor is the last page.
    assert parse_page({**last, 'pagination': {'nextCursor': ''}})[1] is None
    with pytest.raises(ValueError):
        parse_page({'data': [{'name': 'no id'}], 'pagination': {}})


def test_event_patterns():
    # npm loops 7.3.0 README, getEventPattern
    assert parse_event_pattern({
        'id': 'cle1a2b3c004yl70d5e6f7g8h', 'eventName': 'signup',
        'eventProperties': [{'name': 'plan', 'type': 'string'},
                            {'name': 'trialDays', 'type': 'number'}],
        'incomingWebhookPlatform': None}) == EventPattern(
        'cle1a2b3c004yl70d5e6f7g8h', 'signup', (('plan', 'string'), ('trialDays', 'number')))
    assert parse_event_pattern({'id': 'p', 'eventName': 'paid',
                                'incomingWebhookPlatform': 'stripe'}).webhook_platform == 'stripe'
    with pytest.raises(ValueError):
        parse_event_pattern({'id': 'p', 'eventName': 'x', 'eventProperties': [{'name': 1}]})


# ------------------------------------------------------------ against the sandbox

def workflow_fixture(number: int, status: str = 'Sending') -> dict:
    return {'id': f'wf{number:03}', 'name': f'Workflow {number}', 'status': status,
            'updatedAt': f'2026-01-01T00:{number // 60:02}:{number % 60:02}.000Z',
            'trigger': {'typeName': 'EventTrigger', 'eventName': f'event {number}',
                        'reEligible': number % 2 == 0}}


@pytest.fixture
def sandbox():
    workflows = [workflow_fixture(n, 'Sending' if n % 3 else 'Paused') for n in range(1, 61)]
    patterns = [{'eventName': 'signup', 'eventProperties': [{'name': 'plan', 'type': 'string'}]},
                {'eventName': 'Order Paid / EU', 'eventProperties': []}]
    with LoopsSandbox(KEY, rate_limit=None, workflows=workflows,
                      event_patterns=patterns) as running:
        yield running


@pytest.fixture
def client(sandbox):
    return LoopsClient(sandbox.base_url, KEY, rate=1000)


def test_every_workflow_is_read_across_pages(sandbox, client):
    workflows = read_workflows(client)
    assert [w.id for w in workflows] == [f'wf{n:03}' for n in range(60, 0, -1)]
    third = next(w for w in workflows if w.id == 'wf003')
    assert third == Workflow('wf003', 'Workflow 3', 'https://app.loops.so/workflows/wf003',
                             'Paused', None, (Trigger('EventTrigger', event_name='event 3'),))
    assert sum(w.live for w in workflows) == 40
    lists = [r['path'] for r in sandbox.state()['requests'] if r['path'] == '/v1/workflows']
    assert len(lists) == 2   # two pages of 50


def test_event_patterns_by_name(client):
    patterns = read_event_patterns(client)
    assert set(patterns) == {'signup', 'Order Paid / EU'}
    assert patterns['signup'].properties == (('plan', 'string'),)
    assert read_event_pattern(client, 'Order Paid / EU') == patterns['Order Paid / EU']
    assert read_event_pattern(client, 'Signup') is None


@pytest.mark.parametrize('setting, says', [
    ('forbidden', 'refused this API key access to workflows (HTTP 403: This API key has no '
                  'access to workflows.)'),
    ('missing', 'has no workflows endpoints (HTTP 404 on GET /v1/workflows)'),
])
def test_no_access_to_workflows_is_a_distinct_error(sandbox, client, setting, says):
    sandbox.configure(workflow_endpoints=setting)
    with pytest.raises(WorkflowsUnavailable) as raised:
        read_workflows(client)
    assert says in str(raised.value) and KEY not in str(raised.value)
    with pytest.raises(WorkflowsUnavailable, match='event patterns'):
        read_event_patterns(client)


@pytest.mark.parametrize('error_shape', ['documented', 'error', 'nested'])
def test_creating_a_property(sandbox, client, error_shape):
    sandbox.configure(error_shape=error_shape)
    create_property(client, 'planTier', 'string')
    assert client.get('/v1/contacts/properties?list=custom') == [
        {'key': 'planTier', 'label': 'Plan Tier', 'type': 'string'}]
    for name in ('planTier', 'createdAt'):
        with pytest.raises(PropertyExists, match='Property already exists.'):
            create_property(client, name, 'string')
    with pytest.raises(LoopsError, match='reserved') as raised:
        create_property(client, 'teamId', 'string')
    assert not isinstance(raised.value, PropertyExists)
    with pytest.raises(ValueError, match='property type'):
        create_property(client, 'seats', 'integer')


def test_the_demo_account_has_a_live_welcome_workflow():
    with LoopsSandbox(KEY, rate_limit=None, workflows=DEMO_WORKFLOWS) as sandbox:
        [welcome] = read_workflows(LoopsClient(sandbox.base_url, KEY, rate=1000))
    assert (welcome.name, welcome.live, welcome.triggers) == (
        'Welcome', True, (Trigger('SignupTrigger'),))
