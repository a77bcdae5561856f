"""The hosted cashier page in a real browser (headless Chromium through ChromeDriver, driven by
Selenium): the payer's side of the defence, judged by the simulator's ledger, not by payonce.

  python3 tests/browser/checkout.py BASE_URL SIM_URL APP_SECRET ARTIFACT_DIR

Scenarios (each ends with a screenshot in ARTIFACT_DIR):
  1. a double click, then 20 rapid clicks on "WeChat Pay" -> exactly one WeChat order at the
     simulator; paying it there -> the page shows "paid" without a reload, and offers return_url;
  2. WeChat, then Alipay -> the WeChat order is closed at the simulator;
  3. an order that expires while its page is open -> the page says so and no button works;
  4. every notification lost -> the page still reaches "paid" (its status calls ask the channel).
Deadlines are generous (30 s) and nothing is timed.
"""

import sys
import time
from pathlib import Path

from common import Fail, check, chromium, http_json
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

BASE, SIM, SECRET, ARTIFACTS = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
ARTIFACTS.mkdir(parents=True, exist_ok=True)
DEADLINE = 30


def call(method, url, body=None, auth=True):
    return http_json(method, url, body, bearer=SECRET if auth else None)


def new_order(no, expire_in=1800):
    status, order = call("POST", f"{BASE}/v1/orders", {"merchant_order_no": no, "amount": 1234, "currency": "CNY", "subject": f"Browser {no}", "expire_in_seconds": expire_in})
    check(status == 201, f"create order {no}: {status} {order}")
    status, link = call("POST", f"{BASE}/v1/orders/{order['id']}/checkout", {"return_url": "http://127.0.0.1:9/thanks", "locale": "en"})
    check(status == 200, f"checkout link {no}: {status} {link}")
    # Kept for scripts/browser-check, which proves no token reached the server's log.
    with open(ARTIFACTS / "tokens.txt", "a") as f:
        f.write(link["url"].rsplit("/", 1)[1] + "\n")
    return order["id"], link["url"]


def attempts(order_id):
    status, order = call("GET", f"{BASE}/v1/orders/{order_id}")
    check(status == 200, f"get order: {status}")
    return order["attempts"]


def sim_orders(channel, out_trade_no):
    status, v = call("GET", f"{SIM}/sim/orders?channel={channel}&out_trade_no={out_trade_no}", auth=False)
    return status, v


def ledger_orders(channel):
    status, ledger = call("GET", f"{SIM}/sim/ledger", auth=False)
    check(status == 200, "ledger")
    return [o for o in ledger["orders"] if o["channel"] == channel]


def browser():
    # A phone's screen: 360 CSS pixels wide (desktop windows cannot be made that narrow).
    return chromium("--disable-gpu", "--lang=en-US", experimental={"mobileEmulation": {"deviceMetrics": {"width": 360, "height": 780, "pixelRatio": 2}}})


def wait_phase(d, phase):
    WebDriverWait(d, DEADLINE).until(lambda d: d.find_element(By.ID, "checkout").get_attribute("data-phase") == phase,
                                     f"the page never reached {phase!r}")


def shot(d, name):
    d.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    print(f"ok   {name} (screenshot {ARTIFACTS / (name + '.png')})", flush=True)


def scenario_clicks_then_pay(d):
    order_id, url = new_order("BROWSER-1")
    d.get(url)
    width, scroll = d.execute_script("return [window.innerWidth, document.documentElement.scrollWidth]")
    check(width == 360 and scroll <= 360, f"at 360 px the page scrolls sideways (viewport {width}, content {scroll})")
    button = d.find_element(By.ID, "pay-wechatpay")
    # A double click, then 20 rapid clicks (as fast as the driver can: no waits in between).
    d.execute_script("arguments[0].click(); arguments[0].click();", button)
    for _ in range(20):
        d.execute_script("arguments[0].click();", button)
    WebDriverWait(d, DEADLINE).until(lambda d: d.find_element(By.ID, "qr").is_displayed(), "no QR code shown")
    time.sleep(1)  # let any click still in flight land before counting
    wx = ledger_orders("wechatpay")
    check(len(wx) == 1, f"expected exactly one WeChat order at the simulator, found {len(wx)}: {wx}")
    no = wx[0]["out_trade_no"]
    status, _ = call("POST", f"{SIM}/sim/pay", {"channel": "wechatpay", "out_trade_no": no}, auth=False)
    check(status == 200, "pay at the simulator")
    wait_phase(d, "paid")
    check("Paid" in d.find_element(By.ID, "message").text, "the page does not say paid")
    link = d.find_element(By.ID, "return-link")
    check(link.is_displayed() and link.get_attribute("href") == "http://127.0.0.1:9/thanks", "no way back to the shop")
    check(d.find_element(By.ID, "checkout").get_attribute("data-phase") == "paid", "not paid")
    shot(d, "1-paid-after-21-clicks")


def scenario_switch(d):
    order_id, url = new_order("BROWSER-2")
    d.get(url)
    d.find_element(By.ID, "pay-wechatpay").click()
    WebDriverWait(d, DEADLINE).until(lambda d: d.find_element(By.ID, "qr").is_displayed(), "no WeChat QR")
    wx_no = next(a["out_trade_no"] for a in attempts(order_id) if a["channel"] == "wechatpay")
    WebDriverWait(d, DEADLINE).until(lambda d: d.find_element(By.ID, "pay-alipay").is_enabled(), "buttons stay locked")
    d.find_element(By.ID, "pay-alipay").click()
    WebDriverWait(d, DEADLINE).until(lambda d: any(a["channel"] == "alipay" for a in attempts(order_id)), "no Alipay attempt")
    status, wx = sim_orders("wechatpay", wx_no)
    check(status == 200 and wx.get("state") == "CLOSED", f"the WeChat order is not closed at the simulator: {wx}")
    shot(d, "2-switched-to-alipay")


def scenario_expired(d):
    order_id, url = new_order("BROWSER-3", expire_in=5)
    d.get(url)
    check(d.find_element(By.ID, "pay-sandbox").is_enabled(), "an open order's buttons work")
    wait_phase(d, "expired")
    buttons = d.find_elements(By.CSS_SELECTOR, "button.channel")
    check(all(not b.is_enabled() for b in buttons) or not d.find_element(By.ID, "choose").is_displayed(), "a button still works on an expired order")
    check("expired" in d.find_element(By.ID, "message").text, "the page does not say the order expired")
    before = len(attempts(order_id))
    d.execute_script("document.querySelectorAll('button.channel').forEach(function (b) { b.click(); });")
    time.sleep(1)
    check(len(attempts(order_id)) == before, "a click on an expired order made a channel order")
    shot(d, "3-expired")


def scenario_notifications_lost(d):
    status, _ = call("POST", f"{SIM}/sim/faults", {"notify_drop_rate": 1.0}, auth=False)
    check(status in (200, 204), "faults")
    try:
        order_id, url = new_order("BROWSER-4")
        d.get(url)
        d.find_element(By.ID, "pay-sandbox").click()
        WebDriverWait(d, DEADLINE).until(lambda d: d.find_element(By.ID, "pay-link").is_displayed(), "no sandbox pay link")
        # The payer pays on the sandbox's own page (a real navigation, in a second tab).
        href = d.find_element(By.ID, "pay-link").get_attribute("href")
        main = d.current_window_handle
        d.switch_to.new_window("tab")
        d.get(href)
        d.find_element(By.ID, "pay").click()
        WebDriverWait(d, DEADLINE).until(lambda d: d.find_element(By.ID, "result").text == "paid", "the sandbox page did not pay")
        d.close()
        d.switch_to.window(main)
        wait_phase(d, "paid")
        shot(d, "4-paid-with-every-notification-lost")
    finally:
        call("POST", f"{SIM}/sim/faults", {"notify_drop_rate": 0.0}, auth=False)


def main():
    d = browser()
    failed = False
    try:
        for s in [scenario_clicks_then_pay, scenario_switch, scenario_expired, scenario_notifications_lost]:
            try:
                s(d)
            except Exception as e:  # one line per failure, then the next scenario
                failed = True
                d.save_screenshot(str(ARTIFACTS / f"FAILED-{s.__name__}.png"))
                print(f"FAIL: {s.__name__}: {e}", flush=True)
    finally:
        d.quit()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
