// Drives Loops' official JS SDK (npm `loops`) against a Loops-compatible API
// and prints what each call returned or threw, as one JSON object.
// Our own script, run by tests/test_loops_js_sdk.py. Environment:
// LOOPS_SDK_ENTRY (the SDK's dist/index.esm.js), LOOPS_API_ROOT (the API's
// base URL ending in '/'), LOOPS_API_KEY, WORKFLOW_ID (one to get).
import { pathToFileURL } from 'node:url';

const sdk = await import(pathToFileURL(process.env.LOOPS_SDK_ENTRY).href);

function client(key) {
  const loops = new sdk.LoopsClient(key);
  // The SDK's base URL is a public field; pointing it at the API under test.
  loops.apiRoot = process.env.LOOPS_API_ROOT;
  return loops;
}

const loops = client(process.env.LOOPS_API_KEY);
const email = 'ada@example.com';
const steps = [
  ['testApiKey', () => loops.testApiKey()],
  ['createContact', () => loops.createContact({
    email, properties: { firstName: 'Ada', planTier: 'pro' },
    mailingLists: { list_news: true } })],
  ['createContactAgain', () => loops.createContact({ email })],
  ['updateContact', () => loops.updateContact({
    email, userId: 'u1', properties: { lastName: 'Lovelace' },
    mailingLists: { list_product: true } })],
  ['findContact', () => loops.findContact({ email })],
  ['findNobody', () => loops.findContact({ userId: 'nobody' })],
  ['sendEvent', () => loops.sendEvent({
    userId: 'u1', eventName: 'signup', eventProperties: { plan: 'pro', seats: 3 },
    headers: { 'Idempotency-Key': 'sdk-key-1' } })],
  ['sendEventAgain', () => loops.sendEvent({
    userId: 'u1', eventName: 'signup', headers: { 'Idempotency-Key': 'sdk-key-1' } })],
  ['sendEventNoContact', () => loops.sendEvent({ userId: 'ghost', eventName: 'signup' })],
  ['sendEventInvalid', () => loops.sendEvent({ email, eventName: 'Plan:Upgraded' })],
  ['createContactProperty', () => loops.createContactProperty('planTier', 'string')],
  ['createContactPropertyAgain', () => loops.createContactProperty('planTier', 'string')],
  ['listContactProperties', () => loops.listContactProperties()],
  ['listCustomProperties', () => loops.listContactProperties('custom')],
  ['listMailingLists', () => loops.listMailingLists()],
  ['listWorkflows', () => loops.listWorkflows({ perPage: 10 })],
  ['listWorkflowsNext', async () => {
    const first = await loops.listWorkflows({ perPage: 10 });
    return loops.listWorkflows({ perPage: 10, cursor: first.pagination.nextCursor });
  }],
  ['getWorkflow', () => loops.getWorkflow(process.env.WORKFLOW_ID)],
  ['getWorkflowMissing', () => loops.getWorkflow('nope')],
  ['listEventPatterns', () => loops.listEventPatterns()],
  ['getEventPatternByName', () => loops.getEventPatternByName('Order Paid / EU')],
  ['getEventPattern', async () => {
    const pattern = await loops.getEventPatternByName('signup');
    return loops.getEventPattern(pattern.id);
  }],
  ['deleteContact', () => loops.deleteContact({ email })],
  ['deleteContactAgain', () => loops.deleteContact({ email })],
  ['badKey', () => client('not-the-key').testApiKey()],
];

const results = {};
for (const [name, call] of steps) {
  try {
    results[name] = { value: (await call()) ?? null };
  } catch (error) {
    results[name] = { error: { name: error.name, message: error.message,
                               statusCode: error.statusCode ?? null,
                               json: error.json ?? null, rawBody: error.rawBody ?? null } };
  }
}
process.stdout.write(JSON.stringify(results));
