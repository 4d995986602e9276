"""``edgekit agent``: the device side of remote benchmarking."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from .common import console


@click.group("agent")
def agent() -> None:
    """Run a benchmark agent on a device (runtime-only install, no torch).

    \b
    Example:
      edgekit agent token ~/.config/edgekit/agent.token
      edgekit agent serve --host 0.0.0.0 --port 8765 --token-file ~/.config/edgekit/agent.token
    """


@agent.command("token")
@click.argument("path", type=click.Path(path_type=Path))
def token_cmd(path: Path) -> None:
    """Write a new random token to PATH (mode 600); copy it to the machine that runs bench.

    \b
    Example:
      edgekit agent token agent.token
    """
    from ..agent.server import new_token

    new_token(path)
    console().print(f"wrote a new token to {path}")


@agent.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: all).")
@click.option("--port", default=8765, show_default=True)
@click.option("--token-file", type=click.Path(path_type=Path), required=True)
@click.option("--storage", type=click.Path(path_type=Path), default=Path("~/.cache/edgekit/agent").expanduser(),
              show_default=True, help="Where uploaded artifacts are kept (by sha256).")
@click.option("--max-upload-mb", default=512, show_default=True)
@click.option("--max-bench-seconds", default=300.0, show_default=True)
def serve_cmd(host, port, token_file, storage, max_upload_mb, max_bench_seconds) -> None:
    """Serve benchmark requests from 'edgekit bench --device'.

    \b
    Example:
      edgekit agent serve --host 0.0.0.0 --port 8765 --token-file agent.token
    """
    from ..agent.server import AgentConfig, make_server, read_token

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config = AgentConfig(storage=storage, token=read_token(token_file),
                         max_upload_bytes=max_upload_mb * 1024 * 1024, max_bench_seconds=max_bench_seconds)
    server = make_server(host, port, config)
    console().print(f"edgekit agent listening on http://{host}:{server.server_address[1]} (storage {storage})")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
