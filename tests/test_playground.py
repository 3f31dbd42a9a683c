"""The playground page in a real headless browser (Debian's chromium and chromedriver,
driven by selenium): type a prompt, press Generate, the story appears and grows."""

from __future__ import annotations

import os
import shutil
import time

import pytest

pytest.importorskip("fastapi")
webdriver = pytest.importorskip("selenium.webdriver")


from tinystories import Generator  # noqa: E402
from tinystories.server import create_app, serve_in_background  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@pytest.fixture()
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        reason = "chromium and chromedriver are not installed (apt-get install chromium-driver)"
        if os.environ.get("TINYSTORIES_REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def test_prompt_generate_and_the_story_grows(browser, tok105):
    from selenium.webdriver.common.by import By

    generator = Generator(tok105["model"], tok105["tokenizer"])
    with serve_in_background(create_app(generator, name="tok105")) as url:
        browser.get(url + "/")
        assert "tinystories" in browser.title
        prompt = browser.find_element(By.ID, "prompt")
        prompt.clear()
        prompt.send_keys("Lily and her cat")
        temperature = browser.find_element(By.ID, "temperature")
        temperature.clear()
        temperature.send_keys("0")  # greedy: the same story every run
        max_tokens = browser.find_element(By.ID, "max_tokens")
        max_tokens.clear()
        max_tokens.send_keys("3000")
        browser.find_element(By.ID, "context_shift").click()  # a story past the context
        # count the page's updates of the story as they happen
        browser.execute_script(
            "window.updates = [];"
            "new MutationObserver(() => window.updates.push(document.getElementById('story')"
            ".textContent.length)).observe(document.getElementById('story'),"
            " {childList: true, characterData: true, subtree: true});"
        )
        browser.find_element(By.ID, "generate").click()
        story = browser.find_element(By.ID, "story")
        deadline = time.monotonic() + 60
        while not (browser.find_element(By.ID, "generate").is_enabled() and len(story.text) > 40):
            assert time.monotonic() < deadline, "the story did not finish"
            time.sleep(0.02)
        text = story.text
        # tok105 pieces are about a character: past its 256-token context
        assert text.startswith("Lily and her cat") and len(text) > 300
        assert "tokens/s" in browser.find_element(By.ID, "stats").text
        updates = browser.execute_script("return window.updates")
        # the server sends what a stream sampled in up to 10 ms as one chunk: 3,000 tokens
        # take over 100 ms on any machine, so the page takes them in many pieces
        assert len(updates) > 5 and updates == sorted(updates), "the story grew piece by piece"
