#!/usr/bin/env python3
"""//! WeChat Pay APIv3 conformance of the channel simulator, proven with an independent client:
//! the community SDK `wechatpayv3` (pinned in requirements.txt), not our own Rust code.
//!
//! Usage: python3 tests/sdk/wechatpay_sdk.py STATE_DIR
//!
//! STATE_DIR is the simulator's state dir; its channels.toml `[wechatpay]` table gives the gateway,
//! mchid, appid, merchant key and serial, APIv3 key and the platform public key (+ its id).
//!
//! What passing proves:
//! - the simulator accepts requests signed the way the SDK signs them (`Authorization:
//!   WECHATPAY2-SHA256-RSA2048 mchid=..,nonce_str=..,signature=..,timestamp=..,serial_no=..`,
//!   over "METHOD\nPATH?QUERY\nTIMESTAMP\nNONCE\nBODY\n");
//! - every 2xx answer (including the empty 204 of close) carries Wechatpay-Signature/-Timestamp/
//!   -Nonce/-Serial/-Signature-Type headers that verify against the platform public key (the SDK
//!   raises otherwise);
//! - native order, query (NOTPAY → SUCCESS), close (204 → CLOSED), refund and refund query answer
//!   with the shapes the SDK and merchants read;
//! - the payment notification verifies and decrypts (AEAD_AES_256_GCM with the APIv3 key) via
//!   `WeChatPay.callback`, and a tampered notification is rejected.
//!
//! Exit 0 on success; 1 with a `FAIL:` line naming the step and what was wrong; 2 on a crash.
"""

import base64
import copy
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import wechatpayv3.core as wx_core
from wechatpayv3 import WeChatPay, WeChatPayType
from wechatpayv3.utils import aes_decrypt, load_public_key, rsa_verify

from conformance import Fail, Receiver, run_script, channel_table, check, note, sim_order, sim_pay, step


# --------------------------------------------------------------------------------------------
# Configuration


def load_config(state_dir):
    wx, read = channel_table(state_dir, "wechatpay", ("gateway", "mchid", "appid", "merchant_serial_no", "merchant_key_file",
                                                       "apiv3_key_file", "platform_public_key_file", "platform_public_key_id"))

    apiv3_key = read(wx["apiv3_key_file"]).strip()
    check(len(apiv3_key.encode()) == 32, f"APIv3 key must be 32 bytes, got {len(apiv3_key.encode())}")
    return {
        "gateway": wx["gateway"].rstrip("/"),
        "mchid": str(wx["mchid"]),
        "appid": str(wx["appid"]),
        "serial_no": str(wx["merchant_serial_no"]),
        "private_key": read(wx["merchant_key_file"]),
        "apiv3_key": apiv3_key,
        "public_key": read(wx["platform_public_key_file"]),
        "public_key_id": str(wx["platform_public_key_id"]),
    }


# --------------------------------------------------------------------------------------------
# Diagnostics: the SDK only says "failed to verify the signature"; record the last response it
# saw (without changing behaviour) so a failure can say exactly what is wrong.


class RecordingRequests:
    def __init__(self, real):
        self._real = real
        self.last = None

    def __getattr__(self, name):
        fn = getattr(self._real, name)
        if name not in ("get", "post", "put", "patch", "delete"):
            return fn

        def wrapper(*args, **kwargs):
            r = fn(*args, **kwargs)
            self.last = r
            return r

        return wrapper


RECORDER = RecordingRequests(wx_core.requests)
wx_core.requests = RECORDER


def diagnose_signed(headers, body_text, conf, what):
    """Explains why WeChat-style response/notification signature headers do not verify."""
    lower = {k.lower(): v for k, v in headers.items()}
    problems = []
    names = ["Wechatpay-Signature", "Wechatpay-Timestamp", "Wechatpay-Nonce", "Wechatpay-Serial",
             "Wechatpay-Signature-Type"]
    for n in names:
        if n.lower() not in lower:
            problems.append(f"missing header {n}")
    if problems:
        return f"{what}: " + "; ".join(problems) + f" (headers: {dict(headers)})"
    if lower["wechatpay-signature-type"] != "WECHATPAY2-SHA256-RSA2048":
        problems.append(f"Wechatpay-Signature-Type is {lower['wechatpay-signature-type']!r}, "
                        "the SDK requires 'WECHATPAY2-SHA256-RSA2048'")
    if lower["wechatpay-serial"] != conf["public_key_id"]:
        problems.append(f"Wechatpay-Serial is {lower['wechatpay-serial']!r}, expected the platform public key id "
                        f"{conf['public_key_id']!r} (anything else makes the SDK fetch /v3/certificates)")
    pub = load_public_key(conf["public_key"])
    if not rsa_verify(lower["wechatpay-timestamp"], lower["wechatpay-nonce"], body_text, lower["wechatpay-signature"], pub):
        problems.append("SHA256withRSA signature does not verify over "
                        f"{(lower['wechatpay-timestamp'] + chr(10) + lower['wechatpay-nonce'] + chr(10) + body_text + chr(10))!r}"
                        " with the platform public key")
    if isinstance(headers, dict) and "Wechatpay-Signature" not in headers and "wechatpay-signature" not in headers:
        problems.append("header names are neither exactly 'Wechatpay-Signature' nor all lower case; the SDK "
                        f"looks names up case-sensitively in a plain dict: {list(headers)}")
    return f"{what}: " + ("; ".join(problems) if problems else "headers present and the signature verifies")


def sdk_call(label, conf, fn, *args, **kwargs):
    RECORDER.last = None
    try:
        return fn(*args, **kwargs)
    except Fail:
        raise
    except Exception as e:
        r = RECORDER.last
        if r is None:
            raise Fail(f"{label}: SDK raised before/without a response: {e!r}")
        detail = diagnose_signed(r.headers, r.text, conf, f"response {r.status_code}")
        raise Fail(f"{label}: SDK raised {e!r}\n     {detail}\n     body: {r.text[:500]!r}")


def parse_json(label, code, message):
    if isinstance(message, bytes):
        message = message.decode("utf-8", "replace")
    try:
        return json.loads(message)
    except ValueError:
        ct = RECORDER.last.headers.get("Content-Type") if RECORDER.last is not None else None
        raise Fail(f"{label}: HTTP {code} body is not JSON (Content-Type {ct!r}; the SDK returns text only "
                   f"for application/json): {message!r}")


def expect_code(label, got, want, message):
    check(got == want, f"{label}: expected HTTP {want}, got {got}: {message!r}")


# --------------------------------------------------------------------------------------------


def main(state_dir):
    conf = load_config(state_dir)
    gateway = conf["gateway"]
    receiver = Receiver("wechatpay", status=204)
    note(f"gateway {gateway}, notify receiver {receiver.url}")

    wxpay = WeChatPay(
        wechatpay_type=WeChatPayType.NATIVE,
        mchid=conf["mchid"],
        private_key=conf["private_key"],
        cert_serial_no=conf["serial_no"],
        apiv3_key=conf["apiv3_key"],
        appid=conf["appid"],
        notify_url=receiver.url,
        public_key=conf["public_key"],
        public_key_id=conf["public_key_id"],
        timeout=(5, 10),
    )
    wxpay._core._gate_way = gateway  # never contact api.mch.weixin.qq.com
    step("WeChatPay client built with the platform public key (no /v3/certificates download)")

    run = uuid.uuid4().hex[:12]
    otn_a = f"sdkwxa{run}"  # paid, refunded
    otn_b = f"sdkwxb{run}"  # closed
    check(len(otn_a) <= 32, "out_trade_no too long")

    # 1. Native order
    code, message = sdk_call("pay (native) A", conf, wxpay.pay, description="payonce sdk test A", out_trade_no=otn_a,
                             amount={"total": 123})
    expect_code("pay (native) A", code, 200, message)
    body = parse_json("pay (native) A", code, message)
    check(isinstance(body.get("code_url"), str) and body["code_url"],
          f"pay (native) A: answer lacks a code_url: {body}")
    step(f"native order {otn_a}: 200, code_url {body['code_url']}")

    # 2. Query → NOTPAY
    code, message = sdk_call("query A", conf, wxpay.query, out_trade_no=otn_a)
    expect_code("query A", code, 200, message)
    q = parse_json("query A", code, message)
    check(q.get("trade_state") == "NOTPAY", f"query A: trade_state should be NOTPAY before payment: {q}")
    check((q.get("amount") or {}).get("total") == 123, f"query A: amount.total should be 123: {q}")
    check(q.get("out_trade_no") == otn_a, f"query A: out_trade_no should be {otn_a}: {q}")
    check(q.get("mchid") == conf["mchid"] and q.get("appid") == conf["appid"],
          f"query A: mchid/appid should echo {conf['mchid']}/{conf['appid']}: {q}")
    step(f"query {otn_a}: NOTPAY, amount.total 123 (response signature verified by the SDK)")

    # 3. Second order, closed
    code, message = sdk_call("pay (native) B", conf, wxpay.pay, description="payonce sdk test B", out_trade_no=otn_b,
                             amount={"total": 200})
    expect_code("pay (native) B", code, 200, message)
    code, message = sdk_call("close B", conf, wxpay.close, out_trade_no=otn_b)
    expect_code("close B", code, 204, message)
    step(f"close {otn_b}: 204 (empty body, signature verified by the SDK)")
    code, message = sdk_call("query B", conf, wxpay.query, out_trade_no=otn_b)
    expect_code("query B", code, 200, message)
    q = parse_json("query B", code, message)
    check(q.get("trade_state") == "CLOSED", f"query B: trade_state should be CLOSED after close: {q}")
    step(f"query {otn_b}: CLOSED")

    # 4. Pay A, receive and verify the notification
    sim_pay(gateway, "wechatpay", otn_a)
    o = sim_order(gateway, "wechatpay", otn_a)
    check(o.get("state") == "SUCCESS", f"/sim/orders {otn_a}: state should be SUCCESS after /sim/pay: {o}")
    step(f"/sim/pay {otn_a}: paid (/sim/orders: {o})")

    def is_txn_success(n):
        try:
            return json.loads(n["body"]).get("event_type") == "TRANSACTION.SUCCESS"
        except ValueError:
            return False

    n = receiver.wait_for(is_txn_success, 10)
    if n is None:
        got = receiver.summary()
        raise Fail("no TRANSACTION.SUCCESS notification within 10 s at " + receiver.url
                   + (": received instead:\n     " + "\n     ".join(got) if got else " (nothing received)"))
    headers, raw = n["headers"], n["body"]
    check(n["path"] == urllib.parse.urlparse(receiver.url).path,
          f"notification POSTed to {n['path']}, expected the notify_url path")
    result = wxpay.callback(headers, raw)
    if not result:
        raise Fail("callback() rejected the payment notification: "
                   + diagnose_notification(headers, raw, conf))
    check(isinstance(result, dict), f"callback() should return a dict: {result!r}")
    check(result.get("event_type") == "TRANSACTION.SUCCESS", f"notification event_type: {result}")
    res = result.get("resource") or {}
    check(res.get("out_trade_no") == otn_a, f"notification resource.out_trade_no should be {otn_a}: {res}")
    check(res.get("trade_state") == "SUCCESS", f"notification resource.trade_state should be SUCCESS: {res}")
    check((res.get("amount") or {}).get("total") == 123, f"notification resource.amount.total should be 123: {res}")
    check(res.get("mchid") == conf["mchid"] and res.get("appid") == conf["appid"],
          f"notification resource mchid/appid should be {conf['mchid']}/{conf['appid']}: {res}")
    check(res.get("transaction_id"), f"notification resource lacks transaction_id: {res}")
    step(f"notification verified and decrypted by callback(): TRANSACTION.SUCCESS, {otn_a}, "
         f"transaction_id {res['transaction_id']}, amount.total 123")

    # 5. Tampering is rejected
    body_json = json.loads(raw)
    ct = body_json["resource"]["ciphertext"]
    i = 10
    tampered_ct = ct[:i] + ("B" if ct[i] != "B" else "C") + ct[i + 1:]
    tampered = copy.deepcopy(body_json)
    tampered["resource"]["ciphertext"] = tampered_ct
    text = raw.decode()
    if ct in text:  # keep every other byte as the simulator sent it
        tampered_raw = text.replace(ct, tampered_ct).encode()
    else:  # the ciphertext is JSON-escaped on the wire (e.g. "\/"): re-serialise instead
        tampered_raw = json.dumps(tampered, separators=(",", ":")).encode()
    check(tampered_raw != raw and json.loads(tampered_raw) == tampered, "could not build a tampered body")
    try:
        rejected = wxpay.callback(headers, tampered_raw)
    except Exception as e:  # a raised decrypt/verify error is also a rejection
        rejected = None
        note(f"tampered body raised {e!r} (counts as rejected)")
    check(not rejected, f"callback() accepted a notification whose ciphertext was altered: {rejected}")
    r = body_json["resource"]
    check(aes_decrypt(r["nonce"], tampered_ct, r.get("associated_data") or "", conf["apiv3_key"]) is None,
          "AES-256-GCM accepted an altered ciphertext (the tag is not being checked?)")
    lower = {k.lower(): k for k in headers}
    bad_headers = dict(headers)
    ts_key = lower["wechatpay-timestamp"]
    bad_headers[ts_key] = str(int(headers[ts_key]) + 1)
    check(not wxpay.callback(bad_headers, raw), "callback() accepted a notification with an altered timestamp")
    step("tampered notification rejected (altered ciphertext: signature and GCM tag; altered timestamp: signature)")

    code, message = sdk_call("query A (paid)", conf, wxpay.query, out_trade_no=otn_a)
    expect_code("query A (paid)", code, 200, message)
    q = parse_json("query A (paid)", code, message)
    check(q.get("trade_state") == "SUCCESS", f"query A after payment: trade_state should be SUCCESS: {q}")
    check(q.get("transaction_id") == res["transaction_id"],
          f"query A after payment: transaction_id should match the notification's {res['transaction_id']}: {q}")
    step(f"query {otn_a}: SUCCESS, transaction_id matches the notification")

    # 6. Refund and refund query
    out_refund_no = f"sdkwxr{run}"
    code, message = sdk_call("refund A", conf, wxpay.refund, out_refund_no=out_refund_no,
                             amount={"refund": 23, "total": 123, "currency": "CNY"}, out_trade_no=otn_a)
    expect_code("refund A", code, 200, message)
    rf = parse_json("refund A", code, message)
    check(rf.get("status") in ("SUCCESS", "PROCESSING"), f"refund A: status should be SUCCESS or PROCESSING: {rf}")
    check(rf.get("out_refund_no") == out_refund_no, f"refund A: out_refund_no should be {out_refund_no}: {rf}")
    check((rf.get("amount") or {}).get("refund") == 23 and (rf.get("amount") or {}).get("total") == 123,
          f"refund A: amount.refund/total should be 23/123: {rf}")
    step(f"refund {out_refund_no}: 200, status {rf['status']}, refund_id {rf.get('refund_id')}")

    code, message = sdk_call("query_refund", conf, wxpay.query_refund, out_refund_no=out_refund_no)
    expect_code("query_refund", code, 200, message)
    qr = parse_json("query_refund", code, message)
    check(qr.get("out_refund_no") == out_refund_no, f"query_refund: out_refund_no should be {out_refund_no}: {qr}")
    check(qr.get("status") in ("SUCCESS", "PROCESSING"), f"query_refund: status: {qr}")
    check((qr.get("amount") or {}).get("refund") == 23, f"query_refund: amount.refund should be 23: {qr}")
    step(f"query_refund {out_refund_no}: status {qr['status']}, amount.refund 23")
    note(f"/sim/orders after refund: {sim_order(gateway, 'wechatpay', otn_a)}")

    # 7. Every notification received (the refund carries notify_url too) must verify.
    time.sleep(0.5)
    with receiver.cond:
        notes = list(receiver.notes)
    kinds = []
    for n in notes:
        res = wxpay.callback(n["headers"], n["body"])
        if not res:
            raise Fail("a later notification failed callback(): " + diagnose_notification(n["headers"], n["body"], conf))
        kinds.append(res.get("event_type"))
    step(f"all {len(notes)} notification(s) received verify and decrypt: {kinds}")
    print("PASS wechatpay (wechatpayv3 SDK)")


def diagnose_notification(headers, raw, conf):
    text = raw.decode("utf-8", "replace")
    parts = [diagnose_signed(headers, text, conf, "signature")]
    try:
        body = json.loads(text)
    except ValueError:
        return parts[0] + f"; body is not JSON: {text[:300]!r}"
    if body.get("resource_type") != "encrypt-resource":
        parts.append(f"resource_type is {body.get('resource_type')!r}, the SDK requires 'encrypt-resource'")
    r = body.get("resource") or {}
    if r.get("algorithm") != "AEAD_AES_256_GCM":
        parts.append(f"resource.algorithm is {r.get('algorithm')!r}, must be 'AEAD_AES_256_GCM'")
    if r.get("nonce") and r.get("ciphertext"):
        try:
            plain = aes_decrypt(r["nonce"], r["ciphertext"], r.get("associated_data") or "", conf["apiv3_key"])
        except Exception as e:
            plain = None
            parts.append(f"decrypt raised {e!r}")
        if plain is None:
            parts.append("AES-256-GCM decryption fails (key = the 32 APIv3 key bytes, nonce = the nonce string's "
                         "UTF-8 bytes, AAD = associated_data, ciphertext = base64(ciphertext || 16-byte tag))")
        else:
            parts.append(f"decrypts fine to {plain[:200]!r}")
    else:
        parts.append(f"resource lacks nonce/ciphertext: {r}")
    return "; ".join(parts) + f"\n     headers: {headers}\n     body: {text[:500]!r}"


if __name__ == "__main__":
    run_script(main)
