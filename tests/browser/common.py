"""What both browser scripts share: failing with a message, plain HTTP calls to payonce and the
simulator (urllib: nothing of payonce's own), and the headless Chromium they drive."""

import json
import urllib.error
import urllib.parse
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def http_call(method, url, body=None, bearer=None, headers=None, form=None):
    """(status, raw body) of one request: a JSON `body` or a urlencoded `form`."""
    headers = dict(headers or {})
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_json(method, url, body=None, bearer=None):
    status, raw = http_call(method, url, body, bearer=bearer)
    return status, json.loads(raw or b"null")


def chromium(*arguments, experimental=None):
    """Headless Chromium through ChromeDriver, both from the OS packages."""
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for a in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", *arguments]:
        opts.add_argument(a)
    for k, v in (experimental or {}).items():
        opts.add_experimental_option(k, v)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
