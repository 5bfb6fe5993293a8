"""The built-in web chat page in headless Chromium (Debian's chromium + chromedriver, driven by
Selenium): type a message, watch the answer stream into the DOM, keep a screenshot."""
import shutil
import time

import pytest

from serve_util import API_KEY, ARTIFACTS


def test_web_chat_streams_an_answer(server):
    from selenium import webdriver  # pinned in ci/requirements-test.txt: a missing one fails
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if not chromium or not driver_bin:
        pytest.fail("chromium and chromedriver are needed (Debian packages chromium, chromium-driver: ci/setup.sh --test)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1000,700"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(driver_bin), options=opts)
    try:
        # the page sits behind the API key like every route but /health: the browser sends it as
        # an extra header (DevTools protocol); the page's own fetches use its API key field.
        d.get(server.base + "/health")
        d.execute_cdp_cmd("Network.enable", {})
        d.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Bearer {API_KEY}"}})
        d.get(server.base + "/")
        assert "Tessera" in d.title
        d.find_element(By.ID, "key").send_keys(API_KEY)
        d.find_element(By.ID, "system").send_keys("You are terse.")
        t = d.find_element(By.ID, "temperature")
        t.clear()
        t.send_keys("0")
        m = d.find_element(By.ID, "max_tokens")
        m.clear()
        m.send_keys("24")
        d.find_element(By.ID, "prompt").send_keys("What is the capital of France?")
        d.find_element(By.ID, "send").click()
        lengths = []
        deadline = time.time() + 120
        while time.time() < deadline:
            els = d.find_elements(By.CSS_SELECTOR, ".msg.assistant, .msg.error")
            if els:
                lengths.append(len(els[-1].text))
                if els[-1].get_attribute("data-done"):
                    break
            time.sleep(0.05)
        ARTIFACTS.mkdir(exist_ok=True)
        d.save_screenshot(str(ARTIFACTS / "web_chat.png"))
        ans = d.find_elements(By.CSS_SELECTOR, ".msg.assistant")
        assert ans, "no answer element: " + d.find_element(By.ID, "log").text
        assert ans[-1].get_attribute("data-done") == "1"
        assert ans[-1].text.strip(), "empty answer"
        # streamed: the answer was seen growing through more than one non-empty length
        assert len({n for n in lengths if n > 0}) >= 2, lengths
        assert d.find_elements(By.CSS_SELECTOR, ".msg.user")[0].text == "What is the capital of France?"
    finally:
        d.quit()
