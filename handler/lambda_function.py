"""AWS Lambda entry point `handler.lambda_function.handler` (API Gateway REST/HTTP API, Function URLs).

Models, index and doc store load here, once per execution environment (during init, which Lambda
does not bill at the request's memory size). Under SnapStart or provisioned concurrency the init and a
priming request run before any caller waits (handler/ahead_of_time.py).
The ONNX sessions start building before the API layer is imported: onnxruntime builds them without
the GIL, so the imports below run meanwhile (handler/loading.py).
"""

from __future__ import annotations

import logging

from handler.ahead_of_time import prepare, settings_for_init
from handler.loading import start_loading
from handler.settings import Settings

settings = settings_for_init(Settings())
logging.basicConfig()  # a stderr handler outside Lambda; Lambda's runtime has installed its own
logging.getLogger().setLevel(settings.log_level.upper())  # basicConfig's level= is lost when it does nothing
models = start_loading(settings)

from handler.api import lambda_handler  # noqa: E402  (imported while the models build)
from handler.pipeline import Retriever  # noqa: E402

retriever = Retriever.from_settings(settings, models)
handler = lambda_handler(retriever, settings)
prepare(handler)
