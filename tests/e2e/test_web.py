"""The built-in web chat page in headless Chromium (Debian's chromium + chromedriver, driven by
Selenium) against the shared `tessera serve --api-key`: the page and its icon load without a key,
the key typed into the page is kept in sessionStorage and sent on its API calls, answers stream
in rendered as Markdown (HTML escaped), the log follows the stream, and a failed turn is marked.
Screenshots are kept in tests/e2e/artifacts/web_*.png."""
import shutil
import time
import urllib.error
import urllib.request

import pytest

from serve_util import API_KEY, ARTIFACTS


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver  # pinned in ci/requirements-test.txt: a missing one fails
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_bin = shutil.which("chromedriver")
    if not chromium or not driver_bin:
        pytest.fail("chromium and chromedriver are needed (Debian packages chromium, chromium-driver: ci/setup.sh --test)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1000,700"):
        opts.add_argument(a)
    d = webdriver.Chrome(service=Service(driver_bin), options=opts)
    yield d
    d.quit()


def by_id(d, i):
    from selenium.webdriver.common.by import By
    return d.find_element(By.ID, i)


def css(d, sel):
    from selenium.webdriver.common.by import By
    return d.find_elements(By.CSS_SELECTOR, sel)


def open_page(d, server):
    """The page in a fresh state: no key in sessionStorage, nothing in the log."""
    d.get(server.base + "/")
    d.execute_script("sessionStorage.clear()")
    d.refresh()
    assert "Tessera" in d.title


def wait_for(cond, what, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    pytest.fail("timed out waiting for " + what)


def fetch(server, path):
    """(status, content type, body bytes) of a GET without any key."""
    try:
        with urllib.request.urlopen(server.base + path, timeout=30) as r:
            return r.status, r.headers.get("Content-Type"), r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers.get("Content-Type"), e.read()


def send(d, prompt):
    by_id(d, "prompt").send_keys(prompt)
    by_id(d, "send").click()


def test_page_and_favicon_load_without_key(server, browser):
    st, ctype, body = fetch(server, "/")
    assert st == 200 and ctype.startswith("text/html") and b"<title>Tessera" in body
    st, ctype, body = fetch(server, "/favicon.ico")
    assert st == 200 and ctype == "image/svg+xml" and body.lstrip().startswith(b"<svg"), (st, ctype, body[:60])
    for path in ("/v1/models", "/metrics"):   # everything else still needs the key
        assert fetch(server, path)[0] == 401, path
    d = browser
    open_page(d, server)
    # without a key the page says what to do, instead of failing silently
    wait_for(lambda: "API key" in by_id(d, "notice").text, "the notice asking for a key", 30)
    # the icon the page links is the served one and decodes as an image
    assert d.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const img = new Image();
        img.onload = () => done(img.naturalWidth > 0);
        img.onerror = () => done(false);
        img.src = document.querySelector('link[rel=icon]').href;""")
    ARTIFACTS.mkdir(exist_ok=True)
    d.save_screenshot(str(ARTIFACTS / "web_no_key.png"))


def test_web_chat_streams_an_answer(server, browser):
    d = browser
    open_page(d, server)
    by_id(d, "key").send_keys(API_KEY)
    assert d.execute_script("return sessionStorage.getItem('tessera.apiKey')") == API_KEY
    wait_for(lambda: by_id(d, "model").text, "the model id fetched with the key", 30)
    assert by_id(d, "notice").text == ""
    by_id(d, "system").send_keys("You are terse.")
    t = by_id(d, "temperature")
    t.clear()
    t.send_keys("0")
    m = by_id(d, "max_tokens")
    m.clear()
    m.send_keys("24")
    send(d, "What is the capital of France?")
    lengths = []

    def finished():
        els = css(d, ".msg.assistant")
        if els:
            lengths.append(len(els[-1].text))
            return els[-1].get_attribute("data-done")
    wait_for(finished, "the streamed answer")
    ARTIFACTS.mkdir(exist_ok=True)
    d.save_screenshot(str(ARTIFACTS / "web_chat.png"))
    ans = css(d, ".msg.assistant")[-1]
    assert not ans.get_attribute("data-failed"), ans.text
    assert ans.text.strip(), "empty answer"
    assert ans.find_elements("css selector", "p, pre, ul, ol, h1, h2, h3"), "the answer is not rendered: " + ans.get_attribute("innerHTML")
    # streamed: the answer was seen growing through more than one non-empty length
    assert len({n for n in lengths if n > 0}) >= 2, lengths
    assert css(d, ".msg.user")[0].text == "What is the capital of France?"
    # the key lives in this tab's sessionStorage: a reload keeps it
    d.refresh()
    assert by_id(d, "key").get_attribute("value") == API_KEY
    wait_for(lambda: by_id(d, "model").text, "the model id after a reload", 30)


MARKDOWN = """## Result

Here is **bold**, *italic* and `a<b>` inline.

```python
print("<script>alert(1)</script>")
```

- one
- two [site](https://example.com/a?b=1&c=2) and [bad](javascript:alert(1))

1. first
2. second

<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 1">"""


def test_markdown_rendered_and_escaped(server, browser):
    d = browser
    open_page(d, server)
    d.execute_script("const el = tessera.add('assistant', ''); el.id = 'md'; tessera.show(el, arguments[0]);", MARKDOWN)
    md = by_id(d, "md")
    assert [e.text for e in md.find_elements("css selector", "h2")] == ["Result"]
    assert [e.text for e in md.find_elements("css selector", "strong")] == ["bold"]
    assert [e.text for e in md.find_elements("css selector", "em")] == ["italic"]
    assert [e.text for e in md.find_elements("css selector", "p code")] == ["a<b>"]
    code = md.find_elements("css selector", "pre > code")
    assert len(code) == 1 and code[0].text == 'print("<script>alert(1)</script>")'
    assert [e.text for e in md.find_elements("css selector", "ul > li")][0] == "one"
    assert [e.text for e in md.find_elements("css selector", "ol > li")] == ["first", "second"]
    links = md.find_elements("css selector", "a")
    assert [a.get_attribute("href") for a in links] == ["https://example.com/a?b=1&c=2"]
    assert "[bad](javascript:alert(1))" in md.text
    # the model's HTML is text, never markup
    assert not md.find_elements("css selector", "script, img")
    assert "<script>window.__pwned = 1</script>" in md.text
    assert d.execute_script("return window.__pwned") is None
    # an answer still streaming, inside an unclosed fence, is already a code block
    assert "<pre><code" in d.execute_script("return tessera.renderMarkdown('```c\\nint x')")
    ARTIFACTS.mkdir(exist_ok=True)
    d.save_screenshot(str(ARTIFACTS / "web_markdown.png"))


def test_log_follows_the_stream_unless_scrolled_up(server, browser):
    d = browser
    open_page(d, server)
    gap = "const l = document.getElementById('log'); return l.scrollHeight - l.scrollTop - l.clientHeight;"
    d.execute_script("window.el = tessera.add('assistant', ''); window.t = '';"
                     "for (let i = 0; i < 80; i++) { t += 'line ' + i + '\\n\\n'; tessera.show(el, t); }")
    assert d.execute_script("return document.getElementById('log').scrollHeight") > 2000
    assert d.execute_script(gap) < 5, "the log did not follow the growing answer"
    d.execute_script("document.getElementById('log').scrollTop = 0")
    d.execute_script("for (let i = 0; i < 20; i++) { t += 'more ' + i + '\\n\\n'; tessera.show(el, t); }")
    assert d.execute_script("return document.getElementById('log').scrollTop") == 0, "scrolled up, yet pulled down"


def test_failed_turn_is_marked(server, browser):
    d = browser
    open_page(d, server)
    by_id(d, "key").send_keys("not-the-key")
    wait_for(lambda: "401" in by_id(d, "notice").text, "the notice saying the key was refused", 30)
    send(d, "Hello?")
    wait_for(lambda: css(d, ".msg.assistant[data-done]"), "the failed turn", 30)
    ARTIFACTS.mkdir(exist_ok=True)
    d.save_screenshot(str(ARTIFACTS / "web_failed.png"))
    bubble = css(d, ".msg.assistant")[-1]
    assert "failed" in bubble.get_attribute("class").split()
    err = bubble.find_element("css selector", ".err").text
    assert "401" in err and "API key" in err, err
    assert by_id(d, "prompt").get_attribute("value") == "Hello?", "the failed prompt is not offered again"
    # with the right key the same page recovers and answers the prompt offered again
    k = by_id(d, "key")
    k.clear()
    k.send_keys(API_KEY)
    m = by_id(d, "max_tokens")
    m.clear()
    m.send_keys("4")
    by_id(d, "send").click()
    wait_for(lambda: len(css(d, ".msg.assistant[data-done]")) == 2, "the retried turn")
    assert not css(d, ".msg.assistant")[-1].get_attribute("data-failed")
    # any other refusal (here a 400 for max_tokens 0) shows the server's message in the bubble
    m.clear()
    m.send_keys("0")
    send(d, "Again?")
    wait_for(lambda: len(css(d, ".msg.assistant[data-done]")) == 3, "the refused turn", 30)
    bubble = css(d, ".msg.assistant")[-1]
    assert "failed" in bubble.get_attribute("class").split()
    err = bubble.find_element("css selector", ".err").text
    assert "400" in err and "max_tokens" in err, err
    # a turn that breaks mid-stream keeps what arrived, rendered, and says it failed
    d.execute_script("const el = tessera.add('assistant', ''); el.id = 'half';"
                     "tessera.show(el, 'partial **answer**'); tessera.fail(el, 'partial **answer**', 'boom');")
    half = by_id(d, "half")
    assert "failed" in half.get_attribute("class").split() and half.get_attribute("data-done") == "1"
    assert half.find_element("css selector", "strong").text == "answer"
    assert half.find_element("css selector", ".err").text == "Failed: boom"
