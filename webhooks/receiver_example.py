"""How a receiver checks a webhook, with the standard library only (the README shows this file).

    ok = verify_webhook("whsec_...", request_headers, raw_body_bytes)

Check the signature on the raw bytes, before parsing the JSON; refuse (400) when it is False, and
deduplicate on the `webhook-id` header: a message can arrive more than once.
"""

import base64
import hashlib
import hmac
import time


def verify_webhook(
    secret: str, headers: dict, body: bytes, tolerance: int = 300, now: float | None = None
) -> bool:
    headers = {name.lower(): value for name, value in headers.items()}
    msg_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not (msg_id and timestamp.isdigit() and signatures):
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > tolerance:
        return False  # too old or too new: a replayed request
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{msg_id}.{timestamp}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    # Several signatures (space-separated) during a secret rotation: any valid one will do.
    return any(
        hmac.compare_digest(expected, signature.removeprefix("v1,"))
        for signature in signatures.split()
        if signature.startswith("v1,")
    )
