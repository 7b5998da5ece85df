#!/usr/bin/env python3
"""Screenshot of the review page on one image: the picture in the training README.

    python scripts/review_screenshot.py --data data/camvid/480x360 --model models/default.onnx \
        --image 0016E5_07959 --out docs/review.png

Starts ``fvt-train review`` on a free port, opens the page in headless Chromium (Debian's
``chromium`` and ``chromium-driver``, as the review app's browser test uses), segments the
image and saves the window. Needs the training package installed (``fvt-train``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
import re
import shutil
import subprocess
import sys
import tempfile


def _serve(data: Path, model: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, '-m', 'fvt_training.cli', 'review', '--data', str(data), '--model',
         str(model), '--providers', 'cpu', '--port', '0'],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in process.stdout:
        found = re.search(r'serving (http://127\.0\.0\.1:\d+/)', line)
        if found:
            return process, found.group(1)
    raise SystemExit('review_screenshot: fvt-train review ended without serving')


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data', type=Path, required=True, help='prepared folder')
    parser.add_argument('--model', type=Path, required=True)
    parser.add_argument('--image', required=True, help='image id of the val split')
    parser.add_argument('--out', type=Path, required=True, help='PNG to write')
    parser.add_argument('--size', default='1366,900', help='window WIDTH,HEIGHT')
    args = parser.parse_args(argv)
    chromium, driver_path = shutil.which('chromium'), shutil.which('chromedriver')
    if not chromium or not driver_path:
        raise SystemExit('review_screenshot: needs chromium and chromedriver on PATH '
                         '(apt-get install -y chromium chromium-driver)')
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    process, url = _serve(args.data, args.model)
    try:
        with tempfile.TemporaryDirectory() as profile:
            options = webdriver.ChromeOptions()
            options.binary_location = chromium
            for flag in ('--headless', '--no-sandbox', '--disable-gpu',
                         '--disable-dev-shm-usage', '--disable-background-networking',
                         '--disable-component-update', '--disable-sync', '--no-first-run',
                         f'--window-size={args.size}', f'--user-data-dir={profile}'):
                options.add_argument(flag)
            driver = webdriver.Chrome(service=Service(driver_path), options=options)
            try:
                wait = WebDriverWait(driver, 60)
                driver.get(url)
                wait.until(lambda d: d.execute_script('return document.body.dataset.ready'))
                field = driver.find_element(By.ID, 'image-id')
                field.clear()
                field.send_keys(args.image)
                driver.find_element(By.ID, 'segment').click()
                wait.until(lambda d: d.execute_script(
                    "const img = document.getElementById('img-prediction');"
                    'return img.complete && img.naturalWidth > 0 && '
                    "document.querySelectorAll('#iou-table tbody tr').length > 0;"))
                args.out.parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(args.out))
            finally:
                driver.quit()
    finally:
        process.terminate()
        process.wait(timeout=10)
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
