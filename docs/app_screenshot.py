"""Take docs/img/app.png, the README's screenshot of xai-app, with headless Debian chromium (Selenium).

    python docs/app_screenshot.py            # needs the `app` extra and `apt-get install chromium chromium-driver`

Starts the app on a free port, explains the bundled `chelsea` photo with Integrated Gradients and Grad-CAM (the
default metrics), runs an FGSM stress test at ε = 8/255, and photographs the explain section with its maps.
"""

from __future__ import annotations

import io
import socket
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "img" / "app.png"


def main() -> None:
    from PIL import Image
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    from xai_bench.app import ui

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    demo = ui.launch(ui.build_app(), port=port)
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1280,1500", "--hide-scrollbars"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
    try:
        driver.get(f"http://127.0.0.1:{port}/")

        def wait(elem_id: str, ok, timeout: float = 120) -> str:
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                try:
                    text = driver.find_element(By.ID, elem_id).text
                    if ok(text):
                        return text
                except Exception:  # the page is still loading
                    pass
                time.sleep(0.5)
            raise SystemExit(f"#{elem_id} did not get ready")

        wait("predictions", lambda t: "chelsea" in t)
        for label in driver.find_elements(By.CSS_SELECTOR, "#methods label"):
            if label.text.strip() in ("saliency", "integrated_gradients"):
                label.click()  # saliency off, IG on: IG + Grad-CAM
        driver.find_element(By.ID, "explain").click()
        wait("status", lambda t: t.startswith("Done"))
        time.sleep(1.5)
        driver.execute_script("document.getElementById('methods').scrollIntoView();")
        time.sleep(1.0)
        png = driver.get_screenshot_as_png()
    finally:
        driver.quit()
        demo.close()
    img = Image.open(io.BytesIO(png)).convert("RGB")
    img = img.resize((img.width * 3 // 4, img.height * 3 // 4), Image.LANCZOS)
    img.quantize(colors=192, method=Image.MEDIANCUT, dither=Image.NONE).save(OUT, optimize=True)
    print(f"{OUT}: {OUT.stat().st_size / 1024:.0f} KB", file=sys.stderr)


if __name__ == "__main__":
    main()
