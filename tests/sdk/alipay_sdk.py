#!/usr/bin/env python3
"""//! Alipay OpenAPI conformance of the channel simulator, proven with two independent clients:
//! the community SDK `python-alipay-sdk` (module `alipay`, class `AliPay`) and Alipay's own
//! `alipay-sdk-python` (module `alipay.aop.api`), both pinned in requirements.txt.
//!
//! Usage: python3 tests/sdk/alipay_sdk.py STATE_DIR
//!
//! STATE_DIR is the simulator's state dir; its channels.toml `[alipay]` table gives the gateway,
//! app_id, the app private key (PKCS#8 PEM) and the Alipay public key (SPKI PEM).
//!
//! What passing proves, for each SDK:
//! - the simulator accepts requests signed the way that SDK signs them (RSA2 = SHA256withRSA over
//!   the sorted `k=v&...` of every parameter but `sign`); python-alipay-sdk sends everything in a
//!   GET query string, the official SDK POSTs common parameters in the query string and
//!   `biz_content` as an x-www-form-urlencoded body;
//! - every answer is `{"<method>_response":{...},"sign":"..."}` and the signature over the exact
//!   bytes of the `*_response` object verifies with the Alipay public key (both SDKs check it);
//! - precreate → 10000 + qr_code; query and close of an unscanned precreate → 40004
//!   ACQ.TRADE_NOT_EXIST; after the payer pays, query → TRADE_SUCCESS; refund and refund query → 10000;
//! - the asynchronous notification (form POST to notify_url) verifies, and a tampered copy does not.
//!
//! The official SDK cannot reach a gateway on a non-default port (WebUtils.get_http_connection
//! hard-codes port 80 and crashes on `str + int` when the URL has a port); this script replaces
//! that one function with a port-respecting copy. Nothing else in either SDK is altered.
//!
//! Exit 0 on success; 1 with a `FAIL:` line naming the step and what was wrong; 2 on a crash.
"""

import base64
import http.client
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from io import BytesIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

import alipay as alipay_pkg
from alipay import AliPay
from alipay.exceptions import AliPayException, AliPayValidationError

import alipay.aop.api.DefaultAlipayClient as aop_client_mod
import alipay.aop.api.util.WebUtils as aop_web
from alipay.aop.api.AlipayClientConfig import AlipayClientConfig
from alipay.aop.api.DefaultAlipayClient import DefaultAlipayClient
from alipay.aop.api.domain.AlipayTradeCloseModel import AlipayTradeCloseModel
from alipay.aop.api.domain.AlipayTradeFastpayRefundQueryModel import AlipayTradeFastpayRefundQueryModel
from alipay.aop.api.domain.AlipayTradePrecreateModel import AlipayTradePrecreateModel
from alipay.aop.api.domain.AlipayTradeQueryModel import AlipayTradeQueryModel
from alipay.aop.api.domain.AlipayTradeRefundModel import AlipayTradeRefundModel
from alipay.aop.api.request.AlipayTradeCloseRequest import AlipayTradeCloseRequest
from alipay.aop.api.request.AlipayTradeFastpayRefundQueryRequest import AlipayTradeFastpayRefundQueryRequest
from alipay.aop.api.request.AlipayTradePrecreateRequest import AlipayTradePrecreateRequest
from alipay.aop.api.request.AlipayTradeQueryRequest import AlipayTradeQueryRequest
from alipay.aop.api.request.AlipayTradeRefundRequest import AlipayTradeRefundRequest
from alipay.aop.api.response.AlipayTradeCloseResponse import AlipayTradeCloseResponse
from alipay.aop.api.response.AlipayTradeFastpayRefundQueryResponse import AlipayTradeFastpayRefundQueryResponse
from alipay.aop.api.response.AlipayTradePrecreateResponse import AlipayTradePrecreateResponse
from alipay.aop.api.response.AlipayTradeQueryResponse import AlipayTradeQueryResponse
from alipay.aop.api.response.AlipayTradeRefundResponse import AlipayTradeRefundResponse
from alipay.aop.api.util.SignatureUtils import get_sign_content, verify_with_rsa

from conformance import Fail, Receiver, run_script, channel_table, check, note, sim_order, sim_pay, step


# --------------------------------------------------------------------------------------------
# Configuration and keys


def load_config(state_dir):
    ali, read = channel_table(state_dir, "alipay", ("gateway", "app_id", "app_private_key_file", "alipay_public_key_file"))

    gateway = ali["gateway"]
    u = urllib.parse.urlparse(gateway)
    check(u.scheme in ("http", "https") and u.netloc, f"[alipay] gateway is not a URL: {gateway!r}")
    private_pem = read(ali["app_private_key_file"])
    public_pem = read(ali["alipay_public_key_file"])
    try:
        private_key = serialization.load_pem_private_key(private_pem.encode(), password=None)
        public_key = serialization.load_pem_public_key(public_pem.encode())
    except ValueError as e:
        raise Fail(f"cannot load the Alipay keys from channels.toml: {e}")
    return {
        "gateway": gateway,
        "control": f"{u.scheme}://{u.netloc}",
        "app_id": str(ali["app_id"]),
        "private_pem": private_pem,
        "public_pem": public_pem,
        "private_key": private_key,
        "public_key": public_key,
    }


def pem_body(pem_text):
    """The base64 body of a PEM block: what Alipay's console (and the official SDK) calls a key."""
    return "".join(line.strip() for line in pem_text.strip().splitlines() if not line.startswith("-----"))


def pkcs1_body(private_key):
    """The official SDK wraps the key in RSA PRIVATE KEY markers and parses PKCS#1 (python-rsa's
    load_pkcs1); a PKCS#8 body fails there, so hand it PKCS#1."""
    pem = private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption()).decode()
    return pem_body(pem)


def rsa2_ok(public_key, message, sign_b64):
    try:
        public_key.verify(base64.b64decode(sign_b64), message, padding.PKCS1v15(), hashes.SHA256())
        return True
    except (InvalidSignature, ValueError, TypeError):
        return False


def form(note_):
    """The notification as the merchant's framework hands it over (blank values kept)."""
    try:
        return dict(urllib.parse.parse_qsl(note_["body"].decode("utf-8"), keep_blank_values=True))
    except UnicodeDecodeError:
        return {}


def wait_notification(receiver, out_trade_no):
    def paid(n):
        f = form(n)
        return f.get("out_trade_no") == out_trade_no and f.get("trade_status") == "TRADE_SUCCESS"

    n = receiver.wait_for(paid, 10)
    if n is None:
        got = receiver.summary()
        raise Fail(f"no TRADE_SUCCESS notification for {out_trade_no} within 10 s at {receiver.url}"
                   + (": received instead:\n     " + "\n     ".join(got) if got else " (nothing received)"))
    ct = {k.lower(): v for k, v in n["headers"].items()}.get("content-type", "")
    check(ct.lower().startswith("application/x-www-form-urlencoded"),
          f"notification Content-Type should be application/x-www-form-urlencoded, got {ct!r}")
    check(n["path"] == urllib.parse.urlparse(receiver.url).path,
          f"notification POSTed to {n['path']}, expected the notify_url path")
    return n


def check_notification_fields(conf, data, out_trade_no):
    check(data.get("trade_status") == "TRADE_SUCCESS", f"notification trade_status: {data}")
    check(data.get("out_trade_no") == out_trade_no, f"notification out_trade_no should be {out_trade_no}: {data}")
    check(data.get("total_amount") == "1.23", f"notification total_amount should be '1.23': {data}")
    check(data.get("app_id") == conf["app_id"], f"notification app_id should be {conf['app_id']}: {data}")
    check(data.get("trade_no"), f"notification lacks trade_no: {data}")
    check(data.get("sign_type") == "RSA2", f"notification sign_type should be RSA2: {data}")


def diagnose_notification(conf, data, sign):
    """Which content (if any) the notification's signature covers."""
    base = {k: v for k, v in data.items() if k not in ("sign", "sign_type")}
    variants = {
        "sorted k=v of all params but sign and sign_type (python-alipay-sdk, blank values kept)":
            "&".join(f"{k}={v}" for k, v in sorted(base.items())),
        "same but blank values dropped (Alipay's Java SDK); python-alipay-sdk keeps them, so send no blank params":
            "&".join(f"{k}={v}" for k, v in sorted(base.items()) if v != ""),
        "sorted k=v including sign_type (that is the request rule, not the notification rule)":
            "&".join(f"{k}={v}" for k, v in sorted({**base, "sign_type": data.get("sign_type", "")}.items())),
    }
    for what, content in variants.items():
        if rsa2_ok(conf["public_key"], content.encode("utf-8"), sign):
            return f"the signature verifies over: {what}"
    return f"the signature verifies over none of the usual contents; params: {data}"


# --------------------------------------------------------------------------------------------
# Response diagnostics shared by both SDKs


def diagnose_response(conf, raw, response_type):
    if raw is None:
        return "no response recorded"
    parts = []
    try:
        obj = json.loads(raw)
    except ValueError:
        return f"response is not JSON: {raw[:500]!r}"
    keys = list(obj) if isinstance(obj, dict) else []
    if response_type not in keys:
        parts.append(f"top-level keys are {keys}, expected {response_type!r} (and 'sign')")
    if "sign" not in keys:
        parts.append("no top-level 'sign' (python-alipay-sdk raises AliPayException on unsigned answers)")
    if "error_response" in keys:
        parts.append("has 'error_response' (python-alipay-sdk raises on it)")
    m1 = re.search(r'"[a-zA-z_]+_response"[ \t\n]*:[ \t\n]*\{', raw)
    m2 = None
    for m in re.finditer(r'\}[ \t\n]*,[ \t\n]*"sign"[ \t\n]*:[ \t\n]*"', raw):
        m2 = m
    if not (m1 and m2):
        parts.append('official SDK needs `"..._response":{...}` immediately followed by `,"sign":"..."`')
    elif "sign" in keys:
        content = raw[m1.end() - 1:m2.start() + 1]
        if rsa2_ok(conf["public_key"], content.encode("utf-8"), obj["sign"]):
            parts.append("signature verifies over the *_response object bytes (so: other cause)")
        else:
            parts.append(f"signature does NOT verify over the exact *_response object bytes {content[:300]!r}")
    return "; ".join(parts) + f"\n     raw: {raw[:600]!r}"


# --------------------------------------------------------------------------------------------
# Pass 1: python-alipay-sdk (GET with everything in the query string)

LAST_RAW = {"text": None}
_real_urlopen = alipay_pkg.urlopen


def recording_urlopen(url, timeout=None):
    """Same call as the SDK's, but keeps the raw answer for diagnostics."""
    try:
        resp = _real_urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as e:
        raise Fail(f"gateway answered HTTP {e.code} (Alipay answers 200 even for business errors): "
                   f"{e.read()[:500]!r}")
    raw = resp.read()
    LAST_RAW["text"] = raw.decode("utf-8", "replace")
    return BytesIO(raw)


alipay_pkg.urlopen = recording_urlopen


def community_call(conf, label, response_type, fn, *args, **kwargs):
    LAST_RAW["text"] = None
    try:
        result = fn(*args, **kwargs)
    except Fail:
        raise
    except AliPayValidationError:
        raise Fail(f"{label}: python-alipay-sdk rejected the response signature; "
                   + diagnose_response(conf, LAST_RAW["text"], response_type))
    except AliPayException as e:
        raise Fail(f"{label}: python-alipay-sdk raised {e}; " + diagnose_response(conf, LAST_RAW["text"], response_type))
    except Exception as e:
        raise Fail(f"{label}: python-alipay-sdk raised {e!r}; " + diagnose_response(conf, LAST_RAW["text"], response_type))
    check(isinstance(result, dict), f"{label}: expected a dict, got {result!r}")
    return result


def run_community(conf, receiver, run):
    tag = "python-alipay-sdk"
    alipay = AliPay(appid=conf["app_id"], app_notify_url=receiver.url, app_private_key_string=conf["private_pem"],
                    alipay_public_key_string=conf["public_pem"], sign_type="RSA2")
    alipay._gateway = conf["gateway"]  # never contact openapi.alipay.com
    step(f"[{tag}] AliPay client built, gateway {conf['gateway']}")

    otn_a, otn_b = f"sdkali1a{run}", f"sdkali1b{run}"

    r = community_call(conf, "precreate A", "alipay_trade_precreate_response", alipay.api_alipay_trade_precreate,
                       subject="payonce sdk test A", out_trade_no=otn_a, total_amount="1.23")
    check(r.get("code") == "10000", f"[{tag}] precreate A: code should be 10000: {r}")
    check(r.get("qr_code"), f"[{tag}] precreate A: no qr_code: {r}")
    check(r.get("out_trade_no") == otn_a, f"[{tag}] precreate A: out_trade_no should be {otn_a}: {r}")
    step(f"[{tag}] precreate {otn_a}: 10000, qr_code {r['qr_code']} (response signature verified by the SDK)")

    r = community_call(conf, "query A (unscanned)", "alipay_trade_query_response", alipay.api_alipay_trade_query,
                       out_trade_no=otn_a)
    check(r.get("code") == "40004" and r.get("sub_code") == "ACQ.TRADE_NOT_EXIST",
          f"[{tag}] query of an unscanned precreate should be 40004 ACQ.TRADE_NOT_EXIST: {r}")
    step(f"[{tag}] query {otn_a} before the QR is scanned: 40004 ACQ.TRADE_NOT_EXIST")

    r = community_call(conf, "precreate B", "alipay_trade_precreate_response", alipay.api_alipay_trade_precreate,
                       subject="payonce sdk test B", out_trade_no=otn_b, total_amount="2.00")
    check(r.get("code") == "10000", f"[{tag}] precreate B: {r}")
    r = community_call(conf, "close B", "alipay_trade_close_response", alipay.api_alipay_trade_close,
                       out_trade_no=otn_b)
    check(r.get("code") == "40004" and r.get("sub_code") == "ACQ.TRADE_NOT_EXIST",
          f"[{tag}] close of an unscanned precreate should be 40004 ACQ.TRADE_NOT_EXIST: {r}")
    step(f"[{tag}] close {otn_b} (unscanned): 40004 ACQ.TRADE_NOT_EXIST")

    sim_pay(conf["control"], "alipay", otn_a)
    o = sim_order(conf["control"], "alipay", otn_a)
    check(o.get("state") == "TRADE_SUCCESS", f"/sim/orders {otn_a}: state should be TRADE_SUCCESS: {o}")
    step(f"[{tag}] /sim/pay {otn_a}: paid (/sim/orders: {o})")

    n = wait_notification(receiver, otn_a)
    data = form(n)
    check("sign" in data, f"notification has no sign: {data}")
    check_notification_fields(conf, data, otn_a)
    sign = data.pop("sign")
    if not alipay.verify(dict(data), sign):
        raise Fail(f"[{tag}] AliPay.verify() rejected the notification: "
                   + diagnose_notification(conf, {**data, "sign": sign}, sign))
    tampered = dict(data, total_amount="9.99")
    check(alipay.verify(tampered, sign) is False, f"[{tag}] verify() accepted a notification with total_amount altered")
    step(f"[{tag}] notification (form POST) verified by AliPay.verify(); altered total_amount rejected")
    trade_no = data["trade_no"]

    r = community_call(conf, "query A (paid)", "alipay_trade_query_response", alipay.api_alipay_trade_query,
                       out_trade_no=otn_a)
    check(r.get("code") == "10000", f"[{tag}] query A after payment: code should be 10000: {r}")
    check(r.get("trade_status") == "TRADE_SUCCESS", f"[{tag}] query A: trade_status should be TRADE_SUCCESS: {r}")
    check(r.get("total_amount") == "1.23", f"[{tag}] query A: total_amount should be '1.23': {r}")
    check(r.get("trade_no") == trade_no, f"[{tag}] query A: trade_no should match the notification's {trade_no}: {r}")
    step(f"[{tag}] query {otn_a}: TRADE_SUCCESS, total_amount 1.23, trade_no {trade_no}")

    out_request_no = f"sdkali1r{run}"
    r = community_call(conf, "refund A", "alipay_trade_refund_response", alipay.api_alipay_trade_refund,
                       refund_amount="0.23", out_trade_no=otn_a, out_request_no=out_request_no)
    check(r.get("code") == "10000", f"[{tag}] refund A: code should be 10000: {r}")
    step(f"[{tag}] refund 0.23 ({out_request_no}): 10000, refund_fee {r.get('refund_fee')}, "
         f"fund_change {r.get('fund_change')}")

    r = community_call(conf, "refund query", "alipay_trade_fastpay_refund_query_response",
                       alipay.api_alipay_trade_fastpay_refund_query, out_request_no=out_request_no, out_trade_no=otn_a)
    check(r.get("code") == "10000", f"[{tag}] refund query: code should be 10000: {r}")
    if "refund_amount" in r:
        check(r["refund_amount"] == "0.23", f"[{tag}] refund query: refund_amount should be '0.23': {r}")
    step(f"[{tag}] refund query {out_request_no}: 10000, refund_amount {r.get('refund_amount')}, "
         f"refund_status {r.get('refund_status')}")
    note(f"/sim/orders after refund: {sim_order(conf['control'], 'alipay', otn_a)}")

    time.sleep(0.5)
    notes = receiver.matching(lambda n: form(n).get("out_trade_no") == otn_a)
    for n in notes:
        d = form(n)
        s = d.pop("sign", "")
        check(alipay.verify(d, s), f"[{tag}] a later notification for {otn_a} fails verify(): "
              + diagnose_notification(conf, {**d, "sign": s}, s))
    step(f"[{tag}] all {len(notes)} notification(s) for {otn_a} verify")


# --------------------------------------------------------------------------------------------
# Pass 2: alipay-sdk-python, the official SDK (POST: common params in the query string,
# biz_content as a form body)


def port_respecting_get_http_connection(url, query_string, timeout):
    """WebUtils.get_http_connection with its bug fixed: the original always connects to port 80
    (443 for https) and then crashes on `url += url_parse_result.port` (str + int). Otherwise
    identical: an absolute-form request target `scheme://host[:port]/path?query`."""
    u = urllib.parse.urlparse(url)
    if url.startswith("https"):
        connection = http.client.HTTPSConnection(host=u.hostname, port=u.port or 443, timeout=timeout)
    else:
        connection = http.client.HTTPConnection(host=u.hostname, port=u.port or 80, timeout=timeout)
    return f"{u.scheme}://{u.netloc}{u.path}?{query_string}", connection


aop_web.get_http_connection = port_respecting_get_http_connection

LAST_OFFICIAL = {"text": None}
_real_do_post = aop_client_mod.do_post


def recording_do_post(*args, **kwargs):
    try:
        raw = _real_do_post(*args, **kwargs)
    except TypeError as e:
        # do_post builds its non-200 error message as str + bytes, so a non-200 status surfaces here.
        raise Fail(f"official SDK: the gateway answered a non-200 status (do_post crashed formatting it: {e}); "
                   "Alipay answers HTTP 200 even for business errors")
    LAST_OFFICIAL["text"] = raw.decode("utf-8", "replace")
    return raw


aop_client_mod.do_post = recording_do_post


def official_call(conf, client, label, request, response_cls, response_type):
    LAST_OFFICIAL["text"] = None
    try:
        text = client.execute(request)
    except Fail:
        raise
    except Exception as e:
        raise Fail(f"{label}: official SDK raised {e!r}; " + diagnose_response(conf, LAST_OFFICIAL["text"], response_type))
    try:
        body = json.loads(text)
    except (TypeError, ValueError):
        raise Fail(f"{label}: execute() returned something that is not the *_response JSON object: {text!r}")
    resp = response_cls()
    try:
        resp.parse_response_content(text)  # fills typed attributes; returns None
    except Exception as e:
        raise Fail(f"{label}: {response_cls.__name__} cannot parse {text!r}: {e!r}")
    return resp, body


def run_official(conf, receiver, run):
    tag = "alipay-sdk-python"
    config = AlipayClientConfig()
    config.server_url = conf["gateway"]
    config.app_id = conf["app_id"]
    config.app_private_key = pkcs1_body(conf["private_key"])
    config.alipay_public_key = pem_body(conf["public_pem"])
    config.sign_type = "RSA2"
    config.timeout = 10
    client = DefaultAlipayClient(alipay_client_config=config)
    step(f"[{tag}] DefaultAlipayClient built (app key as a PKCS#1 base64 body, Alipay key as an SPKI base64 body)")

    otn_a, otn_b = f"sdkali2a{run}", f"sdkali2b{run}"

    def precreate(otn, amount, subject):
        model = AlipayTradePrecreateModel()
        model.out_trade_no = otn
        model.total_amount = amount
        model.subject = subject
        req = AlipayTradePrecreateRequest(biz_model=model)
        req.notify_url = receiver.url
        return official_call(conf, client, f"precreate {otn}", req, AlipayTradePrecreateResponse,
                             "alipay_trade_precreate_response")

    def query(otn):
        model = AlipayTradeQueryModel()
        model.out_trade_no = otn
        return official_call(conf, client, f"query {otn}", AlipayTradeQueryRequest(biz_model=model),
                             AlipayTradeQueryResponse, "alipay_trade_query_response")

    resp, body = precreate(otn_a, "1.23", "payonce sdk test A")
    check(resp.code == "10000" and resp.qr_code, f"[{tag}] precreate A: code 10000 and a qr_code expected: {body}")
    check(resp.out_trade_no == otn_a, f"[{tag}] precreate A: out_trade_no should be {otn_a}: {body}")
    step(f"[{tag}] precreate {otn_a}: 10000, qr_code {resp.qr_code} (response signature verified by the SDK)")

    resp, body = query(otn_a)
    check(resp.code == "40004" and resp.sub_code == "ACQ.TRADE_NOT_EXIST",
          f"[{tag}] query of an unscanned precreate should be 40004 ACQ.TRADE_NOT_EXIST: {body}")
    step(f"[{tag}] query {otn_a} before the QR is scanned: 40004 ACQ.TRADE_NOT_EXIST")

    resp, body = precreate(otn_b, "2.00", "payonce sdk test B")
    check(resp.code == "10000", f"[{tag}] precreate B: {body}")
    model = AlipayTradeCloseModel()
    model.out_trade_no = otn_b
    resp, body = official_call(conf, client, "close B", AlipayTradeCloseRequest(biz_model=model),
                               AlipayTradeCloseResponse, "alipay_trade_close_response")
    check(resp.code == "40004" and resp.sub_code == "ACQ.TRADE_NOT_EXIST",
          f"[{tag}] close of an unscanned precreate should be 40004 ACQ.TRADE_NOT_EXIST: {body}")
    check(not resp.is_success(), f"[{tag}] close B: is_success() should be False")
    step(f"[{tag}] close {otn_b} (unscanned): 40004 ACQ.TRADE_NOT_EXIST")

    sim_pay(conf["control"], "alipay", otn_a)
    o = sim_order(conf["control"], "alipay", otn_a)
    check(o.get("state") == "TRADE_SUCCESS", f"/sim/orders {otn_a}: state should be TRADE_SUCCESS: {o}")
    step(f"[{tag}] /sim/pay {otn_a}: paid (/sim/orders: {o})")

    n = wait_notification(receiver, otn_a)
    data = form(n)
    check("sign" in data, f"notification has no sign: {data}")
    check_notification_fields(conf, data, otn_a)
    # Alipay's rule for notifications: drop sign and sign_type, sort, join k=v with &.
    # The official SDK has no notification helper; use its own sign-content and verify functions.
    sign = data["sign"]
    unsigned = {k: v for k, v in data.items() if k not in ("sign", "sign_type")}

    def official_verify(params):
        try:
            return verify_with_rsa(config.alipay_public_key, get_sign_content(params).encode("utf-8"), sign)
        except Exception:
            return False

    if not official_verify(unsigned):
        raise Fail(f"[{tag}] the notification does not verify with the SDK's verify_with_rsa: "
                   + diagnose_notification(conf, data, sign))
    check(not official_verify(dict(unsigned, total_amount="9.99")),
          f"[{tag}] verify_with_rsa accepted a notification with total_amount altered")
    step(f"[{tag}] notification verified with get_sign_content + verify_with_rsa; altered total_amount rejected")
    trade_no = data["trade_no"]

    resp, body = query(otn_a)
    check(resp.code == "10000" and resp.trade_status == "TRADE_SUCCESS",
          f"[{tag}] query A after payment: 10000 TRADE_SUCCESS expected: {body}")
    check(resp.total_amount == "1.23", f"[{tag}] query A: total_amount should be '1.23': {body}")
    check(resp.trade_no == trade_no, f"[{tag}] query A: trade_no should match the notification's {trade_no}: {body}")
    step(f"[{tag}] query {otn_a}: TRADE_SUCCESS, total_amount 1.23")

    out_request_no = f"sdkali2r{run}"
    model = AlipayTradeRefundModel()
    model.out_trade_no = otn_a
    model.refund_amount = "0.23"
    model.out_request_no = out_request_no
    resp, body = official_call(conf, client, "refund A", AlipayTradeRefundRequest(biz_model=model),
                               AlipayTradeRefundResponse, "alipay_trade_refund_response")
    check(resp.code == "10000", f"[{tag}] refund A: code should be 10000: {body}")
    step(f"[{tag}] refund 0.23 ({out_request_no}): 10000, refund_fee {body.get('refund_fee')}")

    model = AlipayTradeFastpayRefundQueryModel()
    model.out_trade_no = otn_a
    model.out_request_no = out_request_no
    resp, body = official_call(conf, client, "refund query", AlipayTradeFastpayRefundQueryRequest(biz_model=model),
                               AlipayTradeFastpayRefundQueryResponse, "alipay_trade_fastpay_refund_query_response")
    check(resp.code == "10000", f"[{tag}] refund query: code should be 10000: {body}")
    if "refund_amount" in body:
        check(body["refund_amount"] == "0.23", f"[{tag}] refund query: refund_amount should be '0.23': {body}")
    step(f"[{tag}] refund query {out_request_no}: 10000, refund_amount {body.get('refund_amount')}")
    note(f"/sim/orders after refund: {sim_order(conf['control'], 'alipay', otn_a)}")

    time.sleep(0.5)
    notes = receiver.matching(lambda n: form(n).get("out_trade_no") == otn_a)
    for n in notes:
        d = form(n)
        sign = d.get("sign", "")
        check(official_verify({k: v for k, v in d.items() if k not in ("sign", "sign_type")}),
              f"[{tag}] a later notification for {otn_a} does not verify: " + diagnose_notification(conf, d, sign))
    step(f"[{tag}] all {len(notes)} notification(s) for {otn_a} verify")


def main(state_dir):
    conf = load_config(state_dir)
    # The literal body `success` is what Alipay requires to stop retrying.
    receiver = Receiver("alipay", 200, b"success")
    note(f"gateway {conf['gateway']}, control {conf['control']}, notify receiver {receiver.url}")
    run = uuid.uuid4().hex[:12]
    run_community(conf, receiver, run)
    print("PASS alipay (python-alipay-sdk)", flush=True)
    run_official(conf, receiver, run)
    print("PASS alipay (alipay-sdk-python)", flush=True)


if __name__ == "__main__":
    run_script(main)
