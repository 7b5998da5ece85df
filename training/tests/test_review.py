"""The review app: every route and error through Flask's test client, the CLI, and the page
driven end to end in headless Chromium."""

from __future__ import annotations

import os
from pathlib import Path
import queue
import re
import shutil
import subprocess
import sys
import threading

import cv2
from helpers_review import HUMAN, VOID, build_review_model, make_review_data
import numpy as np
import pytest

from fvt_segmentation.core.contract import CATEGORIES, PALETTE, ModelLoadError
from fvt_training import cli
from fvt_training.data.prepared import DataError
from fvt_training.review.app import ReviewSetupError, create_app
from fvt_training.review.reviews import ImageReview, ReviewCache

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
CHROMEDRIVER = shutil.which('chromedriver')
MISSING_BROWSER = [name for name, path in (('chromium', CHROMIUM), ('chromedriver', CHROMEDRIVER))
                   if path is None]
NON_VOID = [c for c in CATEGORIES if c != 'void']


def cpu_app(*args, **kwargs):
    """The app on ONNX Runtime's CPU provider: the same everywhere, with or without a GPU."""
    return create_app(*args, providers=('cpu',), **kwargs)


@pytest.fixture(scope='module')
def review_data(tmp_path_factory: pytest.TempPathFactory):
    return make_review_data(tmp_path_factory.mktemp('review') / 'prepared')


@pytest.fixture(scope='module')
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_review_model(tmp_path_factory.mktemp('model') / 'mosaic.onnx',
                              provenance={'architecture': 'affine', 'dataset': 'mosaics'})


@pytest.fixture(scope='module')
def client(review_data, model_path):
    return cpu_app(review_data.folder, model_path).test_client()


def decode_png(data: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert bgr is not None, 'not a PNG'
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def get_json(client, url: str, status: int = 200) -> dict:
    response = client.get(url)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    return response.get_json()


# --- /api/model and the page ----------------------------------------------------------------

def test_model_route_reports_the_loaded_contract(client):
    body = get_json(client, '/api/model')
    assert [c['name'] for c in body['contract']['categories']] == list(CATEGORIES)
    assert [tuple(c['color']) for c in body['contract']['categories']] == list(PALETTE)
    assert body['contract']['ignore_index'] == 0
    assert body['contract']['normalization']['std'] == [0.25, 0.25, 0.25]
    assert body['input_size'] == [16, 32]
    assert body['provenance'] == {'architecture': 'affine', 'dataset': 'mosaics'}
    assert body['name'] == 'mosaic (affine)'
    assert body['active_provider'] == 'CPUExecutionProvider'
    assert body['dataset']['splits'] == {'val': 3, 'train': 2}
    assert body['dataset']['default_split'] == 'val'


def test_page_and_its_static_files_are_served(client):
    page = client.get('/')
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    for element in ('id="random"', 'id="segment"', 'id="img-prediction"', 'id="iou-table"',
                    'id="legend"', '/static/app.js', '/static/style.css'):
        assert element in html
    for name, kind in (('app.js', 'javascript'), ('style.css', 'css')):
        response = client.get(f'/static/{name}')
        assert response.status_code == 200
        assert kind in response.mimetype


# --- /api/images ------------------------------------------------------------------------------

def test_images_lists_the_default_split(client, review_data):
    body = get_json(client, '/api/images')
    assert body['split'] == 'val'
    assert body['ids'] == review_data.ids('val')
    assert body['total'] == 3
    assert body['splits'] == ['train', 'val']


def test_images_paginates(client):
    body = get_json(client, '/api/images?split=val&offset=1&limit=1')
    assert (body['ids'], body['total'], body['offset'], body['limit']) == (
        ['street_001'], 3, 1, 1)
    assert get_json(client, '/api/images?offset=3')['ids'] == []
    assert get_json(client, '/api/images?split=train')['ids'] == ['street_100', 'street_101']


@pytest.mark.parametrize('query, words', [
    ('split=test', ["'test'", "['train', 'val']"]),
    ('offset=-1', ['offset', "'-1'"]),
    ('offset=abc', ['offset', "'abc'"]),
    ('limit=0', ['limit', '1..1000']),
    ('limit=1001', ['limit', "'1001'"]),
    ('limit=2.5', ['limit', "'2.5'"]),
])
def test_images_rejects_bad_parameters(client, query, words):
    body = get_json(client, f'/api/images?{query}', status=400)
    assert body['status'] == 400
    for word in words:
        assert word in body['error']


# --- /api/segment and the pictures -------------------------------------------------------------

def test_segment_a_perfect_image(client, review_data):
    body = get_json(client, '/api/segment/street_000?split=val')
    assert body['id'] == 'street_000'
    assert body['height_width'] == [32, 64]
    metrics = body['metrics']
    assert metrics['miou'] == 1.0
    assert metrics['pixel_accuracy'] == 1.0
    present = set(np.unique(review_data.labels['val', 'street_000']).tolist())
    for index, name in enumerate(CATEGORIES[1:], start=1):
        assert metrics['iou'][name] == (1.0 if index in present else None)
    assert set(metrics['iou']) == set(NON_VOID)
    assert body['model']['name'] == 'mosaic (affine)'
    assert body['model']['provenance'] == {'architecture': 'affine', 'dataset': 'mosaics'}
    assert set(body['inference_ms']) == {'preprocess', 'inference', 'postprocess', 'total'}
    assert body['request_ms'] >= 0


def test_segment_scores_against_the_label(client, review_data):
    metrics = get_json(client, '/api/segment/street_001')['metrics']
    label = review_data.labels['val', 'street_001']
    predicted = review_data.predictions['val', 'street_001']
    scored = label != VOID
    assert metrics['pixel_accuracy'] == pytest.approx(
        np.mean(label[scored] == predicted[scored]))
    assert metrics['iou']['human'] == 0.0  # labelled, never predicted
    truth_counts = metrics['pixels_per_category']['truth']
    assert truth_counts['human'] == int((label == HUMAN).sum())
    assert truth_counts['void'] == int((label == VOID).sum())
    assert metrics['pixels_per_category']['predicted']['human'] == 0
    assert metrics['miou'] < 1.0


def test_segment_an_all_void_image_has_no_scores(client):
    metrics = get_json(client, '/api/segment/street_002')['metrics']
    assert metrics['miou'] is None
    assert metrics['pixel_accuracy'] is None
    assert all(v is None for v in metrics['iou'].values())


def test_pictures_show_photo_label_and_prediction(client, review_data):
    body = get_json(client, '/api/segment/street_100?split=train')
    palette = np.asarray(PALETTE, np.uint8)
    pictures = {}
    for name, url in body['images'].items():
        response = client.get(url)
        assert response.status_code == 200
        assert response.mimetype == 'image/png'
        pictures[name] = decode_png(response.data)
    key = 'train', 'street_100'
    np.testing.assert_array_equal(pictures['photo'], review_data.photos[key])
    np.testing.assert_array_equal(pictures['truth'], palette[review_data.labels[key]])
    np.testing.assert_array_equal(pictures['prediction'], palette[review_data.predictions[key]])
    half = (review_data.photos[key].astype(int) + palette[review_data.predictions[key]]) / 2
    assert np.abs(pictures['overlay'] - half).max() <= 1


def test_colours_come_from_the_model_contract(review_data, tmp_path):
    palette = tuple((10 * i, 255 - 10 * i, 3 * i) for i in range(len(CATEGORIES)))
    model = build_review_model(tmp_path / 'other_palette.onnx', palette=palette)
    client = cpu_app(review_data.folder, model).test_client()
    assert [tuple(c['color']) for c in get_json(client, '/api/model')['contract'][
        'categories']] == list(palette)
    body = get_json(client, '/api/segment/street_000')
    prediction = decode_png(client.get(body['images']['prediction']).data)
    key = 'val', 'street_000'
    np.testing.assert_array_equal(prediction,
                                  np.asarray(palette, np.uint8)[review_data.predictions[key]])


def test_reviews_are_cached_per_image(review_data, model_path):
    app = cpu_app(review_data.folder, model_path)
    client = app.test_client()
    first = get_json(client, '/api/segment/street_000')
    again = get_json(client, '/api/segment/street_000')
    other = get_json(client, '/api/segment/street_001')
    assert (first['cached'], again['cached'], other['cached']) == (False, True, False)
    assert again['metrics'] == first['metrics']
    assert again['inference_ms'] == first['inference_ms']
    assert get_json(client, '/api/segment/street_100?split=train')['cached'] is False
    assert len(app.extensions['fvt_review'].cache) == 3


def test_cache_drops_the_least_recently_used_review():
    def review(size: int) -> ImageReview:
        return ImageReview(pngs={'photo': bytes(size)}, metrics={}, timings_ms={},
                           height_width=(1, 1))

    cache = ReviewCache(max_bytes=250)
    computed = []

    def get(key: str) -> bool:
        def compute() -> ImageReview:
            computed.append(key)
            return review(100)
        return cache.get_or_compute(key, compute)[1]

    assert [get('a'), get('b'), get('a'), get('c')] == [False, False, True, False]
    assert len(cache) == 2  # 'b' was the least recently used
    assert [get('a'), get('b')] == [True, False]
    assert computed == ['a', 'b', 'c', 'b']


@pytest.mark.parametrize('url, status, words', [
    ('/api/segment/nothing', 404, ["'nothing'", "'val'"]),
    ('/api/segment/street_100', 404, ["'street_100'", "'val'"]),  # a train id asked in val
    ('/api/segment/street_000?split=test', 400, ["'test'"]),
    ('/api/segment/manifest.json', 404, ["'manifest.json'"]),
    ('/api/segment/..%2Fmanifest.json', 404, []),
    ('/api/segment/%2E%2E', 404, ["'..'"]),
    ('/api/image/street_000/secret.png', 404, ["'secret'", 'overlay']),
    ('/api/image/..%2F..%2Fmanifest/photo.png', 404, []),
    ('/api/image/nothing/photo.png', 404, ["'nothing'"]),
    ('/api/image/street_000/photo.png?split=nope', 400, ["'nope'"]),
    ('/api/nothing', 404, []),
])
def test_bad_requests_get_a_json_error(client, url, status, words):
    body = get_json(client, url, status=status)
    assert body['status'] == status
    assert body['error']
    for word in words:
        assert word in body['error']


def test_wrong_method_gets_a_json_error(client):
    response = client.post('/api/segment/street_000')
    assert response.status_code == 405
    assert response.is_json and response.get_json()['error']


def test_a_broken_file_fails_only_its_own_image(tmp_path, model_path):
    data = make_review_data(tmp_path / 'prepared')
    client = cpu_app(data.folder, model_path).test_client()
    (data.folder / 'val' / 'images' / 'street_001.png').write_bytes(b'not a png')
    (data.folder / 'val' / 'labels' / 'street_002.png').unlink()
    bad_label = data.labels['train', 'street_100'].copy()
    bad_label[0, 0] = len(CATEGORIES)
    assert cv2.imwrite(str(data.folder / 'train' / 'labels' / 'street_100.png'), bad_label)
    body = get_json(client, '/api/segment/street_001', status=500)
    assert 'street_001.png' in body['error']
    assert 'street_002.png' in get_json(client, '/api/segment/street_002', status=500)['error']
    body = get_json(client, '/api/segment/street_100?split=train', status=500)
    assert 'street_100.png' in body['error'] and 'found 8' in body['error']
    assert get_json(client, '/api/segment/street_000')['metrics']['miou'] == 1.0


# --- startup errors and the command line ---------------------------------------------------------

def test_startup_needs_a_prepared_folder(tmp_path, model_path):
    with pytest.raises(DataError, match='manifest.json'):
        cpu_app(tmp_path / 'missing', model_path)


def test_startup_needs_a_known_split(review_data, model_path):
    with pytest.raises(DataError, match=r"no split 'test'.*\['train', 'val'\]"):
        cpu_app(review_data.folder, model_path, split='test')


def test_startup_needs_the_model(review_data, tmp_path):
    with pytest.raises(ModelLoadError, match='no such model file'):
        cpu_app(review_data.folder, tmp_path / 'missing.onnx')


def test_startup_needs_the_same_categories(review_data, tmp_path):
    names = tuple(f'class{i}' for i in range(len(CATEGORIES)))
    model = build_review_model(tmp_path / 'other.onnx', categories=names)
    with pytest.raises(ReviewSetupError, match='class0'):
        cpu_app(review_data.folder, model)


@pytest.mark.parametrize('problem, value', [
    ('data', 'absent'), ('model', 'absent.onnx'), ('split', 'test'), ('providers', 'gpu')])
def test_cli_setup_problems_are_one_line_and_exit_non_zero(problem, value, review_data,
                                                           model_path, tmp_path, capsys):
    args = {'data': str(review_data.folder), 'model': str(model_path), 'split': 'val',
            'providers': 'cpu'}
    args[problem] = str(tmp_path / value) if problem in ('data', 'model') else value
    status = cli.main(['review', '--port', '0'] + [
        item for key, text in args.items() for item in (f'--{key}', text)])
    err = capsys.readouterr().err
    assert status == 2
    assert err.count('\n') == 1
    assert err.startswith('fvt-train review: error: ')
    assert value in err


def test_cli_rejects_a_bad_port(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(['review', '--data', 'x', '--model', 'y', '--port', '70000'])
    assert exit_info.value.code == 2
    assert "expected a port number 0..65535; got '70000'" in capsys.readouterr().err


# --- end to end: the real command, the real page, a real browser --------------------------------

class Server:
    """``fvt-train review`` run as a child process on a free port."""

    def __init__(self, data: Path, model: Path, log: Path) -> None:
        env = dict(os.environ)
        roots = [str(Path(__file__).resolve().parents[p]) for p in (1, 2)]
        env['PYTHONPATH'] = os.pathsep.join(roots + [env.get('PYTHONPATH', '')])
        self.log = log.open('w')
        self.process = subprocess.Popen(
            [sys.executable, '-m', 'fvt_training.cli', 'review', '--data', str(data),
             '--model', str(model), '--providers', 'cpu', '--port', '0'],
            stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            for line in self.process.stdout:
                lines.put(line)
            lines.put(None)  # the command ended

        threading.Thread(target=pump, daemon=True).start()
        found = None
        while found is None:
            try:
                line = lines.get(timeout=60)
            except queue.Empty:
                line = None
            if line is None:
                self.stop()
                pytest.fail(f'fvt-train review did not print its URL; see {log}')
            found = re.search(r'serving (http://127\.0\.0\.1:\d+/)', line)
        self.url = found.group(1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


@pytest.mark.skipif(bool(MISSING_BROWSER), reason=(
    f'REVIEW APP BROWSER TEST NOT RUN: {" and ".join(MISSING_BROWSER)} not found on PATH; '
    'install Debian chromium and chromium-driver (apt-get install -y chromium '
    'chromium-driver; ./run_tests.sh does it when run as root)'))
def test_page_end_to_end_in_headless_chromium(review_data, tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    # Nested provenance, as fvt-train export writes it: shown as lines, not as raw JSON.
    model_path = build_review_model(tmp_path / 'browser.onnx', provenance={
        'architecture': 'affine', 'backbone': None,
        'metrics': {'miou': 0.656753, 'iou': {'flat': 0.934677, 'sky': 0.9}}})
    server = Server(review_data.folder, model_path, tmp_path / 'server.log')
    try:
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage',
                     '--disable-background-networking', '--disable-component-update',
                     '--disable-sync', '--no-first-run', '--window-size=1366,768',
                     f'--user-data-dir={tmp_path / "chromium-profile"}'):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            wait = WebDriverWait(driver, 30)
            driver.get(server.url)
            wait.until(lambda d: d.execute_script('return document.body.dataset.ready'))
            driver.find_element(By.ID, 'random').click()
            chosen = driver.find_element(By.ID, 'image-id').get_attribute('value')
            assert chosen in review_data.ids('val')
            driver.find_element(By.ID, 'segment').click()
            wait.until(lambda d: d.execute_script(
                "const img = document.getElementById('img-prediction');"
                'return img.complete && img.naturalWidth > 0 && '
                "document.querySelectorAll('#iou-table tbody tr').length > 0;"))
            assert driver.execute_script(
                "return document.getElementById('img-prediction').naturalWidth") == 64
            rows = driver.find_elements(By.CSS_SELECTOR, '#iou-table tbody tr')
            assert [r.find_element(By.TAG_NAME, 'th').text for r in rows] == NON_VOID
            assert all(r.find_elements(By.TAG_NAME, 'td')[0].text for r in rows)
            assert driver.find_element(By.ID, 'miou').text
            assert 'error' not in driver.find_element(By.ID, 'status').get_attribute('class')
            facts = driver.find_element(By.ID, 'provenance').text
            assert 'iou: flat: 0.9347, sky: 0.9\nmiou: 0.6568' in facts
            assert 'backbone\n–' in facts and '{' not in facts
            driver.save_screenshot(str(tmp_path / 'review-page.png'))
        finally:
            driver.quit()
    finally:
        server.stop()
    assert (tmp_path / 'review-page.png').stat().st_size > 0
