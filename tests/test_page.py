import dataclasses
from pathlib import Path

import httpx
import pytest

import zoo
from live_server import live_server
from serving.app import LIMITS, create_app
from training.export import export_model

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
    pytest.skip("needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)",
                allow_module_level=True)

from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def url(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    for name, preset in [("alpha", "lstm"), ("beta", "arch1")]:
        model = zoo.presets.build(preset, vocabulary_size=27, units=8)
        export_model(model, " abcdefghijklmnopqrstuvwxyz", {"preset": preset, "normalize": "text8",
                                                            "test_bpc": 4.25}, root, name, xla=False)
    with live_server(create_app(root, limits=dataclasses.replace(LIMITS, max_length=400))) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()


def status(browser):
    return browser.find_element(By.ID, "status").text


def fill(browser, element_id, value):
    field = browser.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(value)


def test_page_streams_a_sample(browser, url):
    browser.get(url + "/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: status(b) == "ready")
    select = Select(browser.find_element(By.ID, "model"))
    assert [o.get_attribute("value") for o in select.options] == ["alpha", "beta"]
    select.select_by_value("beta")
    assert "4.250" in browser.find_element(By.ID, "model-info").text

    fill(browser, "prime", "Once upon a time")
    fill(browser, "temperature", "0")
    fill(browser, "length", "120")
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda b: status(b).startswith("done"))
    shown = browser.find_element(By.ID, "text").get_attribute("textContent")
    expected = httpx.post(f"{url}/v1/models/beta:sample",
                          json={"prime": "Once upon a time", "temperature": 0, "length": 120}).json()
    assert shown == expected["samples"][0] and len(shown) == 120
    assert browser.find_element(By.ID, "prime-echo").text == "Once upon a time"
    # With a stop string, the stream ends before it.
    stop = shown[40:42]
    fill(browser, "stop-at", stop)
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda b: status(b).startswith("done"))
    assert browser.find_element(By.ID, "text").get_attribute("textContent") == shown[: shown.index(stop)]


def test_page_shows_request_errors(browser, url):
    browser.get(url + "/")
    WebDriverWait(browser, 30).until(lambda b: status(b) == "ready")
    fill(browser, "length", "100000")
    browser.find_element(By.ID, "generate").click()
    WebDriverWait(browser, 30).until(lambda b: "length" in status(b))
    assert browser.find_element(By.ID, "status").get_attribute("class") == "error"
    assert browser.find_element(By.ID, "generate").is_enabled()


def test_page_needs_no_external_assets(url):
    page = httpx.get(url + "/").text
    assert "<script src" not in page and "http://" not in page and "https://" not in page


def test_page_scores_a_text_as_a_heat_map(browser, url):
    browser.get(url + "/")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda b: status(b) == "ready")
    assert not browser.find_element(By.ID, "score").is_displayed()
    browser.find_element(By.ID, "mode-score").click()
    assert browser.find_element(By.ID, "score").is_displayed()
    assert not browser.find_element(By.ID, "generate").is_displayed()
    fill(browser, "prime", "The cat, 2 mice")
    browser.find_element(By.ID, "score").click()
    wait.until(lambda b: "bits per character" in status(b))
    expected = httpx.post(f"{url}/v1/models/alpha:score", json={"text": "The cat, 2 mice"}).json()
    spans = browser.find_elements(By.CSS_SELECTOR, "#heat span")
    assert "".join(s.get_attribute("textContent") for s in spans) == expected["text"] == "the cat two mice"
    assert [s.get_attribute("title") for s in spans] == [f"{b:.2f} bits" for b in expected["surprisal"]]
    assert all(s.value_of_css_property("background-color").startswith("rgba(255,") for s in spans)
    assert f"{expected['bpc']:.3f}" in status(browser)
    fill(browser, "prime", "")  # nothing to score: the server's 422, shown
    browser.find_element(By.ID, "score").click()
    wait.until(lambda b: "no characters" in status(b))
