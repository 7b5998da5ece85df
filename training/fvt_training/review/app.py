"""The review web app: a Flask app factory, its JSON API and the page that uses it.

The model is loaded once, when the app is built, through the node's own loader; reviews
(inference, scores, pictures) are computed on first request and cached per (model, image).
Only ids listed in the prepared dataset's manifest are ever turned into file paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
import hashlib
import json
import os
from pathlib import Path
import time
from typing import Any

from flask import Flask, Response, abort, jsonify, request, url_for
from werkzeug.exceptions import HTTPException

from fvt_segmentation.core.inference import DEFAULT_PROVIDERS, load_segmenter
from fvt_segmentation.core.segmenter import Segmenter
from fvt_training.prepared import DataError, Manifest, load_pair, read_manifest
from fvt_training.review.reviews import (
    DEFAULT_CACHE_BYTES,
    PICTURES,
    ImageReview,
    ReviewCache,
    review_image,
)

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
STATE_KEY = 'fvt_review'


class ReviewSetupError(ValueError):
    """The data and the model cannot be reviewed together; the message says why."""


@dataclass
class ReviewState:
    """What one app serves: the dataset, the loaded model and the reviews computed so far."""

    manifest: Manifest
    segmenter: Segmenter
    default_split: str
    model_tag: str
    id_sets: dict[str, frozenset[str]]
    cache: ReviewCache

    def review(self, split: str, image_id: str) -> tuple[ImageReview, bool]:
        """Return the (possibly cached) review of one listed image and whether it was cached."""
        def compute() -> ImageReview:
            photo, label = load_pair(self.manifest, split, image_id)
            return review_image(self.segmenter, photo, label)

        return self.cache.get_or_compute((self.model_tag, split, image_id), compute)


def _model_tag(path: Path) -> str:
    """Return a short tag that changes whenever the model file does (cache key, URLs)."""
    stat = path.stat()
    identity = f'{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}'
    return hashlib.sha1(identity.encode('utf-8')).hexdigest()[:12]


def create_app(data_dir: str | os.PathLike[str], model_path: str | os.PathLike[str],
               split: str = 'val', providers: Sequence[str] = DEFAULT_PROVIDERS,
               cache_bytes: int = DEFAULT_CACHE_BYTES) -> Flask:
    """Build the review app for a prepared dataset folder and an ONNX model.

    ``split`` is the split the page opens on; ``providers`` is the ONNX Runtime preference
    order, as in the node's ``providers`` parameter. Raises :class:`DataError` (no or bad prepared
    folder, unknown split), :class:`fvt_segmentation.core.contract.ModelLoadError` (model missing
    or not following the contract) or :class:`ReviewSetupError` (model and data disagree).
    """
    manifest = read_manifest(data_dir)
    manifest.split(split)
    segmenter = load_segmenter(model_path, providers=providers)
    if segmenter.contract.categories != manifest.categories:
        raise ReviewSetupError(
            f'{model_path}: the model names categories {list(segmenter.contract.categories)} '
            f'but {data_dir} was prepared with {list(manifest.categories)}; labels could not '
            'be scored against its predictions')
    segmenter.warm_up()  # ONNX Runtime's first runs are slow; the first click should not be
    state = ReviewState(
        manifest=manifest, segmenter=segmenter, default_split=split,
        model_tag=_model_tag(segmenter.model_path),
        id_sets={name: frozenset(info.ids) for name, info in manifest.splits.items()},
        cache=ReviewCache(cache_bytes))

    app = Flask(__name__, static_folder='static', static_url_path='/static')
    app.extensions[STATE_KEY] = state
    _register_routes(app, state)
    return app


def _split_arg(state: ReviewState) -> str:
    split = request.args.get('split', state.default_split)
    if split not in state.id_sets:
        abort(400, f'unknown split {split!r}; this dataset has {sorted(state.id_sets)}')
    return split


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        abort(400, f'{name} must be an integer in {low}..{high}; got {raw!r}')
    return value


def _listed_id(state: ReviewState, split: str, image_id: str) -> str:
    if image_id not in state.id_sets[split]:
        abort(404, f'no image {image_id!r} in split {split!r} '
                   f'({len(state.id_sets[split])} images there; see /api/images)')
    return image_id


def _model_summary(state: ReviewState) -> dict[str, Any]:
    segmenter = state.segmenter
    return {'name': segmenter.name, 'file': segmenter.model_path.name,
            'provenance': dict(segmenter.contract.provenance),
            'active_provider': segmenter.active_provider}


def _register_routes(app: Flask, state: ReviewState) -> None:
    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> tuple[Response, int]:
        return jsonify(error=err.description, status=err.code), err.code or 500

    @app.errorhandler(DataError)
    def data_error(err: DataError) -> tuple[Response, int]:
        return jsonify(error=str(err), status=500), 500

    @app.get('/')
    def index() -> Response:
        return app.send_static_file('index.html')

    @app.get('/api/model')
    def model() -> Response:
        contract = state.segmenter.contract
        manifest = state.manifest
        return jsonify(
            **_model_summary(state),
            input_size=list(state.segmenter.input_size),
            contract={
                'version': contract.version,
                **json.loads(contract.categories_json()),
                'layout': contract.layout,
                'color_order': contract.color_order,
                'normalization': json.loads(contract.normalization.to_json()),
                'output': contract.output,
                'provenance': dict(contract.provenance),
            },
            dataset={'name': manifest.dataset, 'licence': manifest.licence,
                     'size': list(manifest.size), 'default_split': state.default_split,
                     'splits': {name: len(ids) for name, ids in state.id_sets.items()}})

    @app.get('/api/images')
    def images() -> Response:
        split = _split_arg(state)
        offset = _int_arg('offset', 0, 0, 10**9)
        limit = _int_arg('limit', DEFAULT_LIMIT, 1, MAX_LIMIT)
        ids = state.manifest.ids(split)
        return jsonify(split=split, splits=sorted(state.id_sets), total=len(ids),
                       offset=offset, limit=limit, ids=list(ids[offset:offset + limit]))

    @app.get('/api/segment/<image_id>')
    def segment(image_id: str) -> Response:
        start = time.perf_counter()
        split = _split_arg(state)
        image_id = _listed_id(state, split, image_id)
        review, cached = state.review(split, image_id)
        return jsonify(
            id=image_id, split=split, size=list(review.size),
            images={name: url_for('picture', image_id=image_id, name=name, split=split,
                                  model=state.model_tag) for name in PICTURES},
            metrics=review.metrics, model=_model_summary(state),
            inference_ms={**review.timings_ms, 'total': sum(review.timings_ms.values())},
            cached=cached, request_ms=(time.perf_counter() - start) * 1e3)

    @app.get('/api/image/<image_id>/<name>.png')
    def picture(image_id: str, name: str) -> Response:
        split = _split_arg(state)
        if name not in PICTURES:
            abort(404, f'no picture {name!r}; expected one of {list(PICTURES)}')
        image_id = _listed_id(state, split, image_id)
        review, _ = state.review(split, image_id)
        response = Response(review.pngs[name], mimetype='image/png')
        # The URL carries the model tag, so a cached picture is never another model's.
        response.cache_control.private = True
        response.cache_control.max_age = 3600
        return response
