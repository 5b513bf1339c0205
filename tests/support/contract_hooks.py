"""schemathesis hooks of tests/test_serve_contract.py (`SCHEMATHESIS_HOOKS=support.contract_hooks`).

Two findings say more about what a schema can express than about the server, and are dropped,
each only when the exchange shows it:
- A schema can say that a clip is bytes, not that the bytes are a video: a schema-valid upload
  of random bytes is answered 422 with the decoder's verdict in `status` (`corrupt`), rightly,
  and schemathesis reads that as a schema-valid request refused. A 422 for a field (an `error`
  alone) still fails the run.
- A form's parts are all text: a "negative" form whose only violation is a part's type (a
  caption sent as `null`, an id as `false`) arrives as the text "null" or "false", a valid
  string, and is rightly accepted. Any other violation of a form (a pattern, a missing part)
  still fails the run.
"""

from __future__ import annotations

import re

import schemathesis
from schemathesis.core.failures import AcceptedNegativeData
from schemathesis.openapi.checks import RejectedPositiveData

from phr_cli.data.statuses import Status

# The statuses of a clip that gave nothing to rank from.
NOT_A_VIDEO = {Status.CORRUPT, Status.UNREADABLE, Status.CRASHED, Status.TIMED_OUT}
VIOLATION = re.compile(r"violates `(\w+)`")


@schemathesis.hook
def filter_failure(context: schemathesis.HookContext, failure: object, case: schemathesis.Case,
                   response: schemathesis.Response) -> bool:
    if isinstance(failure, AcceptedNegativeData) and case.media_type == "multipart/form-data":
        violated = set(VIOLATION.findall(failure.message))
        return not (violated and violated <= {"type"})
    if not isinstance(failure, RejectedPositiveData) or response.status_code != 422:
        return True
    answer = response.json()
    return not (isinstance(answer, dict) and answer.get("status") in NOT_A_VIDEO and answer.get("error"))
