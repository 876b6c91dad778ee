"""icbc_callback: ICBC's notifies (posted to this function's URL, or POST /icbc/notify where a
gateway routes it): payment results and JFT account openings, each verified with the
algorithm its sign_type names (RSA or RSA2)."""

from __future__ import annotations

from caiyun.domain import icbc_notifies
from caiyun.runtime import Call, CloudFunction
from caiyun.runtime.dispatch import HttpResponse


def notify(call: Call) -> HttpResponse:
    """Verify and apply the notify, then answer in ICBC's signed form (success stops resends)."""
    if call.invocation.method != "POST":
        return 405, {"Content-Type": "text/plain; charset=utf-8"}, "method not allowed"
    outcome = icbc_notifies.receive(call.services, call.invocation.raw_body)
    call.log_fields.update(notify=outcome.outcome, reason=outcome.reason)
    body = call.services.icbc.notify_reply(
        outcome.success, outcome.msg_id, outcome.message, outcome.encrypted
    )
    return 200, {"Content-Type": "application/json; charset=utf-8"}, body


main_handler = CloudFunction("icbc_callback", {}, http=notify)
