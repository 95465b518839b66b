"""AWS Lambda entry point `handler.lambda_function.handler` (API Gateway REST/HTTP API, Function URLs).

Models, index and doc store load here, once per execution environment (during init, which Lambda
does not bill at the request's memory size and which SnapStart/provisioned concurrency can absorb).
"""

from __future__ import annotations

import logging

from mangum import Mangum

from handler.api import create_app
from handler.pipeline import Retriever
from handler.settings import Settings

settings = Settings()
logging.basicConfig(level=settings.log_level.upper())
retriever = Retriever.from_settings(settings)
app = create_app(retriever, settings)
handler = Mangum(app, lifespan="off")
