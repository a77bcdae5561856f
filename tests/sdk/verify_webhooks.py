"""Verifies webhooks payonce sent with the official Standard Webhooks library (PyPI
`standardwebhooks`): an independent judge of payonce's signing.

Usage: verify_webhooks.py FILE, where FILE is JSON:
  {"deliveries": [{"headers": {...}, "body": "...", "secrets": ["whsec_...", ...],
                   "wrong_secrets": ["whsec_...", ...]}]}
Every delivery must verify with every secret listed for it, and with none of its
`wrong_secrets` (optional: another tenant's secret). Exit 0 on success.
"""
import json
import sys

from standardwebhooks.webhooks import Webhook


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        spec = json.load(f)
    n = 0
    for d in spec["deliveries"]:
        for secret in d["secrets"]:
            payload = Webhook(secret).verify(d["body"], d["headers"])
            assert payload["id"] == d["headers"]["webhook-id"], "webhook-id is the event id"
            n += 1
        for secret in d.get("wrong_secrets", []):
            try:
                Webhook(secret).verify(d["body"], d["headers"])
            except Exception:
                n += 1
            else:
                print("FAIL: verified with a secret that is not its app's", file=sys.stderr)
                return 1
        # A tampered body must not verify.
        try:
            Webhook(d["secrets"][0]).verify(d["body"].replace('"', "'", 1), d["headers"])
        except Exception:
            pass
        else:
            print("FAIL: a tampered body verified", file=sys.stderr)
            return 1
    print(f"PASS standardwebhooks judged {n} signature(s) over {len(spec['deliveries'])} webhook(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
