"""Reading what a Loops account holds: its contact properties and mailing
lists, and one contact as Loops has it.

The schema itself (`AccountSchema`, transforms/mapping/conform.py) belongs to
the mapping, which fits requests to it; reading it is a call to Loops, so it
lives here, beside the client.
"""
from typing import Optional
from urllib.parse import quote

from transforms.loops.client import LoopsClient
from transforms.mapping.conform import AccountSchema

PROPERTIES_PATH = '/v1/contacts/properties?list=all'
LISTS_PATH = '/v1/lists'
FIND_PATH = '/v1/contacts/find'


def read_account(client: LoopsClient) -> AccountSchema:
    """Reads the account's properties (default and custom) and mailing lists.
    Raises AuthError, LoopsError, or ValueError for an unexpected answer."""
    return AccountSchema.from_json(client.get(PROPERTIES_PATH), client.get(LISTS_PATH))


def find_contact(client: LoopsClient, user_id: Optional[str] = None,
                 email: Optional[str] = None) -> Optional[dict]:
    """The contact of this userId, else of this email, as `GET
    /v1/contacts/find` returns it (a list: empty when there is none; one id
    per call, OAS 786-823); None when neither finds one. Raises AuthError,
    LoopsError (a 400 for an address Loops finds invalid), or ValueError for
    an answer that is not a list of contacts."""
    for name, value in (('userId', user_id), ('email', email)):
        if value is None:
            continue
        found = client.get(f'{FIND_PATH}?{name}={quote(value, safe="")}')
        if not isinstance(found, list) or not all(isinstance(item, dict) for item in found):
            raise ValueError(f'unexpected answer from GET {FIND_PATH}: expected a list of '
                             'contacts')
        if found:
            return found[0]
    return None
