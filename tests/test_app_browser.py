"""End-to-end tests of ``xai-app`` in a real headless browser: Debian's ``chromium`` + ``chromium-driver`` driven by
Selenium (no browser download). The app runs in this process on a free port; EfficientNet-Lite0's offline weights
and the bundled photos make its predictions real. Skipped only when chromium or its driver is not installed
(CI installs them: ``apt-get install chromium chromium-driver``)."""

from __future__ import annotations

import pickle
import shutil
import socket
import time
from pathlib import Path

import pytest
from conftest import headless_chromium

pytest.importorskip("gradio")
pytest.importorskip("selenium")
pytest.importorskip("efficientnet_lite_pytorch")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = pytest.mark.skipif(not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()),
                                reason="browser tests need Debian's chromium and chromium-driver "
                                       "(apt-get install chromium chromium-driver)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def app_url():
    from xai_bench.app import ui

    port = _free_port()
    demo = ui.launch(ui.build_app(), port=port)
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def browser():
    driver = headless_chromium("1400,2400")
    yield driver
    driver.quit()


def text_of(driver, elem_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, elem_id).text


def wait_for(driver, elem_id: str, predicate, timeout: float = 60.0) -> str:
    """Poll ``#elem_id``'s text until ``predicate(text)``; fail with the page's status line otherwise."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    end = time.monotonic() + timeout
    text = ""
    while time.monotonic() < end:
        try:
            text = text_of(driver, elem_id)
        except (NoSuchElementException, StaleElementReferenceException):  # the page is still being drawn
            text = ""
        if predicate(text):
            return text
        time.sleep(0.3)
    raise AssertionError(f"#{elem_id} never matched; it says {text!r}; status: {text_of(driver, 'status')!r}")


def upload(driver, elem_id: str, path: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f"#{elem_id} input[type=file]").send_keys(str(path))


def click_label(driver, elem_id: str, text: str) -> None:
    from selenium.webdriver.common.by import By

    for label in driver.find_elements(By.CSS_SELECTOR, f"#{elem_id} label"):
        if label.text.strip() == text:
            label.click()
            return
    raise AssertionError(f"no option {text!r} in #{elem_id}")


def set_slider(driver, label: str, value: float) -> None:
    """Move a slider as a drag would: set its range input and fire the events the page listens to."""
    from selenium.webdriver.common.by import By

    slider = driver.find_element(By.CSS_SELECTOR, f"input[type=range][aria-label='range slider for {label}']")
    driver.execute_script(
        "arguments[0].value = arguments[1];"
        "for (const e of ['input', 'change']) arguments[0].dispatchEvent(new Event(e, {bubbles: true}));"
        "arguments[0].dispatchEvent(new PointerEvent('pointerup', {bubbles: true}));", slider, value)


@pytest.fixture(scope="module")
def page(browser, app_url):
    browser.get(app_url)
    wait_for(browser, "model_info", lambda t: "efficientnet_lite0" in t, timeout=90)
    return browser


def test_explain_two_methods_scores_and_epsilon_changes_the_prediction(page, tmp_path):
    import skimage.data
    from PIL import Image
    from selenium.webdriver.common.by import By

    photo = tmp_path / "my_coffee.png"
    Image.fromarray(skimage.data.coffee()).save(photo)
    upload(page, "image_upload", photo)
    wait_for(page, "predictions", lambda t: "my_coffee.png" in t and "espresso" in t)
    click_label(page, "methods", "gradcam")  # the defaults are saliency and gradcam: pick another pair
    click_label(page, "methods", "input_x_gradient")
    page.find_element(By.ID, "explain").click()
    status = wait_for(page, "status", lambda t: t.startswith(("Done: 2 method(s)", "Error")), timeout=120)
    assert status.startswith("Done: 2 method(s) on 2 image(s)"), status
    img = page.find_element(By.CSS_SELECTOR, "#maps img")
    assert page.execute_script("return arguments[0].complete && arguments[0].naturalWidth", img) > 500
    scores = text_of(page, "scores")
    for word in ("saliency", "input_x_gradient", "my_coffee.png", "chelsea", "sparseness", "deletion", "insertion"):
        assert word in scores, (word, scores)
    assert "attribution=[saliency,input_x_gradient]" in text_of(page, "explain_cmd")
    assert "maps.safetensors" in text_of(page, "downloads")

    # the ε slider: FGSM at 8/255 pushes EfficientNet-Lite0 off 'espresso' (it already does at 4/255)
    set_slider(page, "ε × 255", 8)  # the slider's release runs the stress test
    pred = wait_for(page, "stress_pred", lambda t: "prediction" in t, timeout=60)
    assert "clean: espresso" in pred and "fgsm ε = 8/255" in pred and "prediction CHANGED" in pred, pred
    assert "Spearman" in pred
    assert "python attack.py" in text_of(page, "stress_cmd")


def test_pickle_upload_is_refused_and_nothing_runs(page, tmp_path):
    from selenium.webdriver.common.by import By

    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    evil = tmp_path / "model.pt"
    evil.write_bytes(pickle.dumps(Evil()))
    click_label(page, "source", "upload")
    upload(page, "ckpt_upload", evil)
    time.sleep(1)
    page.find_element(By.ID, "load_model").click()
    info = wait_for(page, "model_info", lambda t: "pickle" in t)
    assert info.startswith("Error: model.pt") and "never loads one" in info and "save_file" in info
    assert not marker.exists()
    click_label(page, "source", "zoo")


def test_stop_cancels_a_long_method(page):
    from selenium.webdriver.common.by import By

    from xai_bench.app import ui

    # untick the previous test's pair; occlusion with a 16-px window every 8 px is 2 × 729 patches, ~90 batches of 16
    # forward passes (minutes on 2 cores); Stop takes effect at the next batch
    for name in ("saliency", "input_x_gradient", "occlusion"):
        click_label(page, "methods", name)
    page.find_element(By.XPATH, "//*[@id='settings']//*[normalize-space(text())='method settings']").click()
    time.sleep(0.5)
    set_slider(page, "Occlusion window (px)", 16)
    set_slider(page, "Occlusion stride (px)", 8)
    page.find_element(By.ID, "explain").click()
    end = time.monotonic() + 30
    while not any(s.get("running") for s in ui._SESSIONS.values()):
        assert time.monotonic() < end, "the explain run never started"
        time.sleep(0.2)
    time.sleep(1.0)
    page.find_element(By.ID, "stop").click()
    wait_for(page, "status", lambda t: "Stopping" in t or "Cancelled" in t, timeout=15)
    stopped = time.monotonic()
    while any(s.get("running") for s in ui._SESSIONS.values()):
        assert time.monotonic() < stopped + 20, "Stop did not end the computation"
        time.sleep(0.2)
    assert [s.get("outcome") for s in ui._SESSIONS.values()] == ["Cancelled"]  # a full run takes minutes


def test_corrupt_image_gives_a_clear_error(page, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    upload(page, "image_upload", bad)
    status = wait_for(page, "status", lambda t: "broken.png" in t)
    assert "Error: cannot decode image broken.png" in status, status
    assert "Traceback" not in page.page_source

