"""The web page in a real browser: Playwright driving the system's Chromium, headless.

No browser is ever downloaded: the tests use Debian's `chromium` (or $KB_CHROMIUM).
Without one they are skipped locally, and fail under CI (CI is set), so CI cannot skip
them silently. Screenshots are kept in test-artifacts/ (or $KB_TEST_ARTIFACTS).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import urllib.parse
from pathlib import Path

import pytest
from playwright.sync_api import expect  # waits use expect(): the page's CSP forbids wait_for_function's eval

from .conftest import ROOT, running_server

QUESTION = "How big was the vote in favour of striking?"
ARTIFACTS = Path(os.environ.get("KB_TEST_ARTIFACTS") or ROOT / "test-artifacts")
# Without the background-networking flags Chromium keeps calling home on a closed network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def find_chromium() -> str | None:
    for candidate in (os.environ.get("KB_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                      shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture(scope="module")
def browser():
    chromium = find_chromium()
    if chromium is None:
        message = "no Chromium found (apt-get install -y chromium, or set KB_CHROMIUM)"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser tests: {message}")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    yield page
    context.close()
    # Failed requests the page expects (401, 400) log as console errors; anything else is a bug.
    unexpected = [p for p in problems if "status of 40" not in p]
    assert not unexpected, unexpected


def api_hit(server, question=QUESTION, k=5):
    return server.json("/ask?" + urllib.parse.urlencode({"q": question, "k": k}))[1]["results"]


def ask(page, question: str) -> None:
    page.fill("#q", question)
    page.press("#q", "Enter")
    page.wait_for_selector(".hit")


def test_ask_see_the_highlighted_sentence_and_open_the_citation(page, server):
    expected = api_hit(server)
    page.goto(server.url)
    expect(page.locator("#index-info")).to_contain_text("passages")
    ask(page, QUESTION)

    cards = page.locator(".hit")
    assert cards.count() == len(expected)
    first, hit = cards.nth(0), expected[0]
    sentence = hit["text"][hit["sentence_start"] - hit["char_start"] : hit["sentence_end"] - hit["char_start"]]
    assert first.locator(".rank").inner_text() == "1."
    assert first.locator(".score").inner_text() == f"{hit['score']:.3f}"
    citation = f"{hit['source']}:{hit['line_start']}-{hit['line_end']}"
    assert first.locator(".citation").inner_text() == citation
    assert first.locator("mark.sentence").inner_text() == sentence.strip()
    assert "98 per cent" in first.locator(".passage").inner_text()
    assert "result" in page.inner_text("#status")
    assert not page.locator("#token-form").is_visible()  # this server needs no token
    assert f"q={urllib.parse.quote_plus(QUESTION)}" in page.url  # the search is a link
    page.screenshot(path=str(ARTIFACTS / "web-results.png"), full_page=True)

    first.locator(".citation").click()
    dialog = page.locator("#source-view")
    dialog.locator(".line.in-passage").first.wait_for()
    assert page.inner_text("#source-title") == citation
    numbers = [int(n) for n in dialog.locator(".line.in-passage .no").all_inner_texts()]
    assert numbers[0] <= hit["line_start"] and hit["line_end"] <= numbers[-1]
    all_numbers = [int(n) for n in dialog.locator(".line .no").all_inner_texts()]
    # Context around the passage: the page asks for 12 lines either side.
    assert all_numbers[0] == max(1, hit["line_start"] - 12) and all_numbers[-1] == hit["line_end"] + 12
    assert "".join(dialog.locator("mark.sentence").all_inner_texts()).split() == sentence.split()
    page.screenshot(path=str(ARTIFACTS / "web-citation.png"))

    page.keyboard.press("Escape")
    expect(page.locator("#source-view")).to_be_hidden()
    assert page.evaluate("document.activeElement.className") == "citation"  # focus goes back


def test_usable_by_keyboard_alone(page, server):
    page.goto(server.url)
    assert page.evaluate("document.activeElement.id") == "q"  # the question box has focus on arrival
    page.keyboard.type("When is the first strike?")
    page.keyboard.press("Enter")
    page.wait_for_selector(".hit")
    for _ in range(15):  # Tab walks through the controls to the first citation
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.className") == "citation":
            break
    else:
        pytest.fail("Tab never reached a citation")
    page.keyboard.press("Enter")
    page.locator("#source-view .line.in-passage").first.wait_for()
    page.keyboard.press("Escape")
    expect(page.locator("#source-view")).to_be_hidden()
    page.keyboard.press("/")
    assert page.evaluate("document.activeElement.id") == "q"
    # Back returns to the previous search state, as links do.
    page.keyboard.type("Who is Jeremy Hunt?")
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile("Jeremy"))
    page.go_back()
    expect(page.locator("#q")).to_have_value("When is the first strike?")


def test_typing_while_the_page_loads_is_kept(page, server):
    """The question box has focus at once; a slow /info (a busy server) must not wipe
    what was typed meanwhile (it once did: the form was filled after /info answered)."""
    held = []
    page.route("**/info", lambda route: held.append(route))
    page.goto(server.url)
    # Chromium applies `autofocus` at its next rendering step, which can fall after the
    # load event goto waits for: wait for the focus (the claim under test), then type.
    expect(page.locator("#q")).to_be_focused()
    page.keyboard.type("When is the first strike?")
    assert held  # /info has not answered yet
    held[0].continue_()
    expect(page.locator("#index-info")).to_contain_text("passages")
    expect(page.locator("#q")).to_have_value("When is the first strike?")


def test_readable_at_phone_width(browser, server):
    context = browser.new_context(viewport={"width": 375, "height": 740}, device_scale_factor=2, is_mobile=True,
                                  has_touch=True)
    page = context.new_page()
    try:
        page.goto(server.url + "?" + urllib.parse.urlencode({"q": QUESTION, "k": 3}))  # a shared link runs
        page.wait_for_selector(".hit")
        assert page.locator(".hit").count() == 3
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page scrolls sideways by {overflow}px at phone width"
        box = page.locator("#q").bounding_box()
        assert box["width"] > 180  # the question box keeps a usable width
        page.screenshot(path=str(ARTIFACTS / "web-phone.png"), full_page=True)
        page.locator(".citation").first.click()
        page.locator("#source-view .line.in-passage").first.wait_for()
        assert page.locator("#source-view").bounding_box()["width"] <= 375
        page.screenshot(path=str(ARTIFACTS / "web-phone-citation.png"))
    finally:
        context.close()


def test_errors_are_shown_not_thrown(page, server):
    page.goto(server.url + "?" + urllib.parse.urlencode({"q": QUESTION, "k": 0}))
    page.wait_for_selector("#status.error")
    assert page.inner_text("#status") == "k must be between 1 and 100"
    assert page.locator(".hit").count() == 0


def test_a_token_server_asks_for_the_token(browser, article_index):
    with running_server(article_index, "--token", "tok-123") as server:
        context = browser.new_context()
        page = context.new_page()
        try:
            page.goto(server.url)
            page.wait_for_selector("#token-form:not([hidden])")
            page.fill("#token", "tok-123")
            page.press("#token", "Enter")
            expect(page.locator("#index-info")).to_contain_text("passages")
            ask(page, QUESTION)
            assert "98 per cent" in page.locator(".hit .passage").first.inner_text()
        finally:
            context.close()
        # A link carrying the token in its fragment (never sent to the server) works at once.
        context = browser.new_context()
        page = context.new_page()
        try:
            page.goto(server.url + "?" + urllib.parse.urlencode({"q": QUESTION}) + "#token=tok-123")
            page.wait_for_selector(".hit")
            assert "#token" not in page.url  # and is removed from the address bar
        finally:
            context.close()


def test_the_page_is_served_from_the_package_with_a_strict_policy(server):
    status, headers, body = server.request("/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in headers["content-security-policy"]
    html = body.decode()
    assert "http://" not in html and "https://" not in html  # nothing from a CDN
    for asset in ("/static/app.js", "/static/style.css"):
        status, _, content = server.request(asset)
        assert status == 200 and b"https://" not in content
    assert json.loads(server.request("/static/nope.js")[2])["exit_code"] == 2
