"""Reading what a Loops account holds: its contact properties and mailing lists.

The schema itself (`AccountSchema`, transforms/mapping/conform.py) belongs to
the mapping, which fits requests to it; reading it is a call to Loops, so it
lives here, beside the client.
"""
from transforms.loops.client import LoopsClient
from transforms.mapping.conform import AccountSchema

PROPERTIES_PATH = '/v1/contacts/properties?list=all'
LISTS_PATH = '/v1/lists'


def read_account(client: LoopsClient) -> AccountSchema:
    """Reads the account's properties (default and custom) and mailing lists.
    Raises AuthError, LoopsError, or ValueError for an unexpected answer."""
    return AccountSchema.from_json(client.get(PROPERTIES_PATH), client.get(LISTS_PATH))
