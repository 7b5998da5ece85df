"""``fvt-train review``: a local web app to look at a model's predictions on a prepared dataset.

:func:`fvt_training.review.app.create_app` builds the Flask app;
:func:`fvt_training.review.command.add_review_parser` registers the subcommand. Importing
this package stays light (no Flask, no ONNX Runtime) so that ``fvt-train --help`` is fast.
"""
