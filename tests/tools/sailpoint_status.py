"""Reads provd's /access-request-status answer on stdin and parses every item with
SailPoint's own Python SDK (the `sailpoint` package's RequestedItemStatus model), as a
client built on that SDK would. Prints one JSON line per item with what the SDK read, so
the Rust test asserts on the SDK's view rather than on provd's own JSON. A field the SDK
rejects fails here with pydantic's message."""

import json
import sys

from sailpoint.access_requests.models.requested_item_status import RequestedItemStatus

for raw in json.load(sys.stdin):
    item = RequestedItemStatus.from_dict(raw)
    details = item.cancelled_request_details
    print(
        json.dumps(
            {
                "id": item.id,
                "state": str(item.state.value if hasattr(item.state, "value") else item.state),
                "cancelable": item.cancelable,
                "cancelled": None
                if details is None
                else {
                    "comment": details.comment,
                    "owner": details.owner.id if details.owner else None,
                    "ownerType": str(details.owner.type.value if hasattr(details.owner.type, "value") else details.owner.type)
                    if details.owner
                    else None,
                    "modified": details.modified.isoformat() if details.modified else None,
                },
            }
        )
    )
