"""An API as an AsyncAPI document and back (CONTRACT §8, AsyncAPI 3.0.0 and 2.x).

Export describes the *gateway* as the application (AsyncAPI 3.0 §Operation Object): a
subscribe topic is an operation where the gateway ``send``s to clients, a publish topic
one where it ``receive``s from them. Addresses are full topic URL paths (CONTRACT §3)
under the server, so the server's ``pathname`` is only the path of ``public_url``.

Import maps any 2.x or 3.x document (YAML or JSON) onto a CREATED API; every reason it
cannot names where in the document, e.g. ``channels.orders.address: ...``.
Everything here is pure: text in, dicts and models out.
"""

from bridge.asyncapi.export import channel_keys, export_document, to_yaml
from bridge.asyncapi.mapping import import_document, topic_name
from bridge.errors import AsyncApiError

__all__ = [
    "AsyncApiError",
    "channel_keys",
    "export_document",
    "import_document",
    "to_yaml",
    "topic_name",
]
