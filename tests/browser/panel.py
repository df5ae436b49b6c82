"""The admin panel in a real browser: headless Chromium driven through WebDriver (Selenium and
Debian's chromedriver), as an operator would use it.

Opens the routes page, then a route's rules; adds a rule through the form and sees the core's
problem for an origin S3 refuses, then its lint for a catch-all origin, appear next to the field;
fixes it; edits the XML and sees the form
follow; tries a request against the draft and the rules in force; applies; checks that the next
preflight through the gateway follows the new rule; then meets a concurrent change (409) and
takes the newer rules. A screenshot of each page goes to --screenshots.

Run by tests/panel_browser.rs, which starts corsgate and checks what this prints: one JSON object
on the last line of stdout. Exits non-zero, with a screenshot named failure.png, when a step fails.
"""

import argparse
import base64
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

APP = "https://app.example.com"
CONCURRENT_RULE = (
    "<CORSRule><ID>added-elsewhere</ID><AllowedOrigin>https://b.example</AllowedOrigin>"
    "<AllowedMethod>GET</AllowedMethod></CORSRule>"
)


def arguments():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--admin", required=True, help="the admin listener, http://127.0.0.1:PORT")
    parser.add_argument("--gateway", required=True, help="the gateway listener, http://127.0.0.1:PORT")
    parser.add_argument("--rules", required=True, help="route 1's rules file")
    parser.add_argument("--screenshots", required=True, help="where the screenshots go")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    return parser.parse_args()


def browser(args, profile):
    options = Options()
    options.binary_location = args.chromium
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-dev-shm-usage",
        "--window-size=1440,1000",
        "--user-data-dir=" + profile,
    ):
        options.add_argument(flag)
    # Console messages, to catch what the Content-Security-Policy blocks.
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The driver is Debian's: Selenium must not look for (or download) another.
    return webdriver.Chrome(service=Service(executable_path=args.chromedriver), options=options)


def preflight(gateway, origin, method):
    """The status of a preflight through the gateway."""
    request = urllib.request.Request(
        gateway + "/cat.jpg",
        method="OPTIONS",
        headers={"Origin": origin, "Access-Control-Request-Method": method},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


class Panel:
    def __init__(self, driver, screenshots):
        self.driver = driver
        self.screenshots = screenshots
        self.wait = WebDriverWait(driver, 20)

    def shot(self, name):
        """The whole page, however tall (DevTools captures beyond the window)."""
        size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": max(size["height"], 900), "scale": 1}
        png = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )
        with open(os.path.join(self.screenshots, name + ".png"), "wb") as f:
            f.write(base64.b64decode(png["data"]))

    def find(self, css):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css):
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def until(self, what, check):
        """Waits until check() is truthy and returns it; says what was awaited when it is not.

        The page redraws parts of itself whenever the server's judgement of the draft comes back:
        an element found a moment ago may be gone, which only means "look again".
        """

        def attempt(_):
            try:
                return check()
            except StaleElementReferenceException:
                return False

        try:
            return self.wait.until(attempt)
        except TimeoutException:
            raise AssertionError("timed out waiting until " + what) from None

    def click(self, css):
        """Clicks the element once it is there and enabled, as it is when the click happens."""

        def clicked():
            element = self.find(css) if self.all(css) else None
            if element is None or not element.is_enabled():
                return False
            element.click()
            return True

        self.until(css + " can be clicked", clicked)

    def present(self, css):
        return self.until(css + " is on the page", lambda: (self.all(css) or [None])[0])

    def text_now(self, css):
        """The text of the first element matching css, "" when there is none."""
        elements = self.all(css)
        return elements[0].text if elements else ""

    def type_into(self, css, text):
        field = self.find(css)
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(Keys.DELETE)
        field.send_keys(text)
        return field

    def draft_is(self, status):
        return self.until(
            "the draft is " + status,
            lambda: status in self.text_now("#draft-status"),
        )


def scenario(panel, args):
    out = {}
    driver = panel.driver

    # Routes: the route, its file, its generation.
    driver.get(args.admin + "/")
    row = panel.present("#routes tr[data-route='1']")
    assert args.rules in row.text, row.text
    panel.shot("1-routes")

    # The route's rules.
    row.find_element(By.CSS_SELECTOR, "a.button").click()
    panel.present("#rules tr[data-rule='1']")
    panel.draft_is("valid")
    panel.shot("2-rules")

    # A new rule. An origin S3 refuses: the core's problem, with its S3 code, next to the field.
    panel.click("#add-rule")
    panel.present("#rules tr[data-rule='2']")
    panel.type_into("#f-AllowedOrigins", "https://*.*.example.com")
    problem = panel.present("[data-field='AllowedOrigins'] li.issue[data-code='InvalidRequest']")
    out["problem"] = problem.text
    panel.draft_is("1 problem")
    panel.shot("3-problem")

    # Every https site: accepted by S3, but the core's lint shows next to the field.
    panel.type_into("#f-AllowedOrigins", "https://*")
    panel.click("#f-AllowedMethods input[value='PUT']")
    lint = panel.present("[data-field='AllowedOrigins'] li.issue[data-kind='echoed-catch-all']")
    out["lint"] = lint.text
    panel.shot("4-lint")

    # Fixed: one origin, and ETag exposed for uploads; no warning remains.
    panel.type_into("#f-AllowedOrigins", APP)
    panel.type_into("#f-ExposeHeaders", "ETag")
    panel.until("every warning is gone", lambda: not panel.all("#all-issues li"))
    xml = panel.until(
        "the XML shows the new origin",
        lambda: "<AllowedOrigin>" + APP + "</AllowedOrigin>" in panel.find("#xml").get_attribute("value")
        and panel.find("#xml").get_attribute("value"),
    )

    # The XML side drives the form too.
    edited = xml.replace(
        "<ExposeHeader>ETag</ExposeHeader>",
        "<ExposeHeader>ETag</ExposeHeader>\n    <MaxAgeSeconds>600</MaxAgeSeconds>",
    )
    panel.type_into("#xml", edited)
    panel.until(
        "the form shows the MaxAgeSeconds typed in the XML",
        lambda: panel.find("#f-MaxAgeSeconds").get_attribute("value") == "600",
    )
    panel.draft_is("valid")
    panel.shot("5-rules-fixed")

    # Try a request: the draft allows what the rules in force refuse.
    panel.click("#tab-try")
    panel.type_into("#try-origin", APP)
    Select(panel.find("#try-acrm")).select_by_value("PUT")
    panel.click("#explain")
    change = panel.until(
        "the change is explained",
        lambda: "newly allow" in panel.text_now("#change") and panel.text_now("#change"),
    )
    out["change"] = change
    out["draft_answer"] = panel.until("the draft's answer is shown", lambda: panel.text_now("#draft-report .answer-line"))
    out["live_answer"] = panel.until("the answer in force is shown", lambda: panel.text_now("#live-report .answer-line"))
    panel.shot("6-try")

    # Apply, and the very next preflight follows the new rule.
    panel.click("#tab-apply")
    panel.until("the impact is listed", lambda: "newly allows" in panel.text_now("#impact"))
    panel.shot("7-apply")
    panel.click("#apply")
    out["applied"] = panel.until("the apply is confirmed", lambda: panel.text_now("#applied"))
    out["preflight_after_apply"] = preflight(args.gateway, APP, "PUT")
    panel.shot("8-applied")

    # Another editor changes the file meanwhile: the next apply is refused, the newer rules shown.
    panel.click("#tab-rules")
    panel.click("#rules tr[data-rule='1'] button[aria-label='Delete']")
    with open(args.rules, encoding="utf-8") as f:
        current = f.read()
    with open(args.rules, "w", encoding="utf-8") as f:
        f.write(current.replace("</CORSConfiguration>", CONCURRENT_RULE + "</CORSConfiguration>"))
    panel.click("#tab-apply")
    panel.click("#apply")
    out["stale"] = panel.until("the stale apply is refused", lambda: panel.text_now("#stale"))
    panel.until(
        "the rules in force now are shown",
        lambda: "added-elsewhere" in panel.text_now("#live-xml"),
    )
    panel.shot("9-stale")
    panel.click("#stale button")
    panel.click("#tab-rules")
    panel.present("#rules tr[data-rule='3']")
    out["rules_after_stale"] = [row.text.split("\n")[0] for row in panel.all("#rules tbody tr")]

    # Nothing the policy blocked, nothing that failed (but the 409 this scenario asked for).
    out["console_errors"] = [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and "status of 409" not in entry["message"]
    ]
    return out


def main():
    args = arguments()
    os.makedirs(args.screenshots, exist_ok=True)
    profile = tempfile.mkdtemp(prefix="corsgate-panel-chromium-")
    driver = browser(args, profile)
    panel = Panel(driver, args.screenshots)
    try:
        print(json.dumps(scenario(panel, args)))
    except Exception:
        panel.shot("failure")
        for entry in driver.get_log("browser"):
            print("console:", entry["message"], file=sys.stderr)
        raise
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
