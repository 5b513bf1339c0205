"""schemathesis hooks of tests/test_serve_contract.py (`SCHEMATHESIS_HOOKS=support.contract_hooks`).

A schema can say that a clip is bytes, not that the bytes are a video: a schema-valid upload
of random bytes is answered 422 with the decoder's verdict in `status` (`corrupt`), rightly,
and schemathesis reads that as a schema-valid request refused. That one failure is dropped,
and only when the answer says so; a 422 for a field (an `error` alone) still fails the run.
"""

from __future__ import annotations

import schemathesis
from schemathesis.openapi.checks import RejectedPositiveData

from phr_cli.data.statuses import Status

# The statuses of a clip that gave nothing to rank from.
NOT_A_VIDEO = {Status.CORRUPT, Status.UNREADABLE, Status.CRASHED, Status.TIMED_OUT}


@schemathesis.hook
def filter_failure(context: schemathesis.HookContext, failure: object, case: schemathesis.Case,
                   response: schemathesis.Response) -> bool:
    if not isinstance(failure, RejectedPositiveData) or response.status_code != 422:
        return True
    answer = response.json()
    return not (isinstance(answer, dict) and answer.get("status") in NOT_A_VIDEO and answer.get("error"))
