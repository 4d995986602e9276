"""Run ``edgekit serve``: build the repository and the app from one config, under uvicorn.

With ``workers > 1`` uvicorn starts processes that each import ``app_from_env``; the config
travels to them as JSON in ``EDGEKIT_SERVE_CONFIG``.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from dataclasses import asdict, dataclass, field
from typing import Optional

from ..errors import EdgekitError
from .plane import Repository, ServedModel, ServeOptions

ENV = "EDGEKIT_SERVE_CONFIG"


@dataclass(frozen=True)
class ServerConfig:
    bundles: tuple[str, ...]
    options: ServeOptions = field(default_factory=ServeOptions)
    host: str = "127.0.0.1"
    port: int = 8000
    token: Optional[str] = None
    public_key: Optional[str] = None
    log_db: Optional[str] = None
    max_body_bytes: int = 64 * 1024 * 1024
    max_inflight: int = 1024
    workers: int = 1
    ui: bool = False
    access_log: bool = False
    lookup_db: Optional[str] = None
    lookup_table: str = "predictions"
    drain_s: float = 2.0  # after SIGTERM: not ready, still serving, for this long; then stop accepting

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "ServerConfig":
        data = json.loads(text)
        data["bundles"] = tuple(data["bundles"])
        data["options"] = ServeOptions(**data["options"])
        return cls(**data)


def build_app(config: ServerConfig):
    from .app import create_app
    from .http import HttpOptions

    config.options.validate()
    store = None
    if config.log_db:
        from ..sync.store import LogStore

        store = LogStore(config.log_db)
    lookup = None
    if config.lookup_db:
        from .predictions import Lookup

        lookup = Lookup(config.lookup_db, config.lookup_table)
    repository = Repository()
    for bundle in config.bundles:
        repository.add(ServedModel(bundle, config.options, public_key=config.public_key, log_store=store,
                                   lookup=lookup))
    ui = None
    if config.ui:
        from .ui import gradio_app

        ui = gradio_app(repository)
    return create_app(repository, HttpOptions(max_body_bytes=config.max_body_bytes, token=config.token,
                                                        max_inflight=config.max_inflight), ui=ui)


def app_from_env():
    """The uvicorn factory for worker processes."""
    text = os.environ.get(ENV)
    if not text:
        raise EdgekitError(f"{ENV} is not set", "start the server with: edgekit serve BUNDLE ...")
    return build_app(ServerConfig.from_json(text))


def serve(config: ServerConfig, app=None) -> None:
    """Run under uvicorn: ``app`` when it is already built (one process), else per worker."""
    import uvicorn

    if config.access_log:
        logging.getLogger("edgekit.serve.access").setLevel(logging.INFO)
        logging.basicConfig(level=logging.WARNING, format="%(message)s")
    common = dict(host=config.host, port=config.port, log_level="warning", access_log=False,
                  timeout_graceful_shutdown=30)  # SIGTERM: stop accepting, finish what is in flight
    if config.workers > 1:
        os.environ[ENV] = config.to_json()
        uvicorn.run("edgekit.serve.server:app_from_env", factory=True, workers=config.workers, **common)
    else:
        app = app or build_app(config)
        _draining_server(uvicorn.Config(app, **common), app.repository, config.drain_s).run()


def _draining_server(config, repository, drain_s: float):
    import uvicorn  # late: the CLI's --help must not import the server stack

    class DrainingServer(uvicorn.Server):
        """SIGTERM first reports not-ready and keeps serving for ``drain_s`` (a load balancer's
        probe moves traffic away; connections still arriving are answered, not reset), then
        stops accepting and finishes what it accepted, as uvicorn does."""

        def __init__(self, config, repository, drain_s: float):
            super().__init__(config)
            self.repository, self.drain_s = repository, drain_s

        def handle_exit(self, sig, frame) -> None:
            if sig != signal.SIGTERM or self.repository.draining or self.drain_s <= 0:
                return super().handle_exit(sig, frame)
            self.repository.draining = True
            logging.getLogger("edgekit.serve").warning("SIGTERM: not ready; draining for %.1f s", self.drain_s)
            timer = threading.Timer(self.drain_s, super().handle_exit, (sig, frame))
            timer.daemon = True
            timer.start()

    return DrainingServer(config, repository, drain_s)
