"""How the sandbox words an error answer: the body shapes Loops' API
reference and official SDKs show, one chosen by the `error_shape` setting.

Loops has no machine-readable error codes (a client branches on the
status), but its words matter: a client reads "Contact not found." or the
name of a refused property from them, and must find them in every shape.

- 'documented' (the default): each endpoint as the OpenAPI spec (Loops'
  "Loops OpenAPI Spec" 1.21.6, loops-openapi.yaml, mirrored by
  api-evangelist/loops) documents it: `{"success": false, "message"}` for
  contacts, properties, lists and events (ContactFailureResponse 4357-4373,
  ContactPropertyFailureResponse 4518-4534, EventFailureResponse
  4593-4609); `{"message"}` alone for workflows and event patterns
  (WorkflowFailureResponse 8250-8258, EventPatternFailureResponse
  7529-7535); a 401 as `GET /v1/api-key` documents it, `{"success": false,
  "message", "error"}` with `error` deprecated (82-101; the other
  endpoints' 401s have no body schema).
- 'message': `{"success": false, "message"}` everywhere (the envelope of
  /work/shared/reference/loops-api.md).
- 'error': a 401 as `{"error": "Invalid API key"}` (JS SDK npm loops 7.3.0
  README "testApiKey", type `ApiKeyErrorResponse` dist/index.d.ts:5-7; Go
  SDK test mocks, Loops-so/loops-go contacts_test.go:96), anything else as
  `{"success": false, "error"}` (JS SDK test "should handle API error
  response", Loops-so/loops-js src/__tests__/LoopsClient.test.ts:407-410;
  loops-go api_key_test.go:29).
- 'nested': `{"success": false, "error": {"message"}}`, the transactional
  shape (JS SDK README sendTransactionalEmail, type
  `TransactionalNestedError` dist/index.d.ts:114-122) without its `path`,
  which names a transactional field.
- 'text': the words as plain text, not JSON: what a proxy or load balancer
  in front of the API answers (JS SDK README "Usage": "error.json may be
  null if the response was not valid JSON (e.g., from a load balancer)";
  loops-js tests "non-JSON error responses", LoopsClient.test.ts:566-621).
"""
from typing import Optional

from pipeline.local.server import Reply

ERROR_SHAPES = ('documented', 'message', 'error', 'nested', 'text')
# The endpoint families whose failure responses are `{"message"}` alone.
MESSAGE_ONLY_PREFIXES = ('/v1/workflows', '/v1/event-patterns')
KEY_REJECTED_STATUS = 401


def check_shape(shape: str) -> str:
    """`shape` if it is one of ERROR_SHAPES; ValueError otherwise."""
    if shape not in ERROR_SHAPES:
        raise ValueError(f'error_shape must be one of {", ".join(ERROR_SHAPES)}, '
                         f'got {shape!r}')
    return shape


def shaped_error(shape: str, status: int, message: str, path: str,
                remaining: Optional[int] = None) -> Reply:
    """The answer to a request for `path` (under /api) that failed with
    `status` and `message`, its body in `shape`."""
    if shape == 'text':
        return Reply(status, None, remaining, text=message)
    return Reply(status, _payload(shape, status, message, path), remaining)


def _payload(shape: str, status: int, message: str, path: str) -> dict:
    if shape == 'error':
        if status == KEY_REJECTED_STATUS:
            return {'error': message}
        return {'success': False, 'error': message}
    if shape == 'nested':
        return {'success': False, 'error': {'message': message}}
    if shape == 'documented':
        if path.startswith(MESSAGE_ONLY_PREFIXES):
            return {'message': message}
        if status == KEY_REJECTED_STATUS:
            return {'success': False, 'message': message, 'error': message}
    return {'success': False, 'message': message}
