"""schemathesis hooks for scripts/schemathesis.

Generated Idempotency-Keys repeat ("0", "a", …), so without this nearly every POST after the
first would meet 422 idempotency_key_reused before reaching validation or the engine. A valid
key is made specific to the request it comes with: an identical request still replays, a
different one gets its own key. (Invalid keys are left as generated: they must be refused.)
"""
import hashlib

import schemathesis


def _visible_ascii(key: str) -> bool:
    return 0 < len(key) <= 255 and all(0x21 <= ord(c) <= 0x7E for c in key)


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    headers = case.headers or {}
    key = headers.get("Idempotency-Key")
    if isinstance(key, str) and _visible_ascii(key):
        request = repr((case.method, case.path, sorted((case.path_parameters or {}).items()), case.body))
        headers["Idempotency-Key"] = f"{key[:238]}-{hashlib.sha256(request.encode()).hexdigest()[:16]}"
        case.headers = headers
