"""`twostage serve`: the HTTP API under uvicorn, stopping in two steps on SIGTERM: first `drain_s`
seconds of answering new requests 503 + `Connection: close` (handler/draining.py), then uvicorn's own
graceful shutdown, which stops listening and lets in-flight requests finish."""

from __future__ import annotations

import threading

import uvicorn

from handler.api import create_app
from handler.draining import Draining
from handler.pipeline import Retriever
from handler.settings import Settings


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, draining: Draining, drain_s: float):
        super().__init__(config)
        self.draining, self.drain_s = draining, drain_s

    def handle_exit(self, sig, frame) -> None:
        """The first signal starts the drain and stops after it; a second one stops at once."""
        if self.draining.active or self.drain_s <= 0:
            return super().handle_exit(sig, frame)
        self.draining.start()
        timer = threading.Timer(self.drain_s, super().handle_exit, (sig, frame))
        timer.daemon = True
        timer.start()


def serve(settings: Settings) -> None:
    if settings.log_format == "json":
        from handler.observability import use_json_logs

        use_json_logs(settings.log_level)
    draining = Draining()
    app = create_app(Retriever.from_settings(settings), settings, draining)
    config = uvicorn.Config(
        app,
        host=settings.server.host,
        port=settings.server.port,
        log_level=settings.log_level.lower(),
        # JSON: our root handler writes uvicorn's lines too, and the app's request line replaces its access log
        log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
        access_log=settings.log_format != "json",
        timeout_graceful_shutdown=settings.server.graceful_shutdown_s,
    )
    DrainingServer(config, draining, settings.server.drain_s).run()
