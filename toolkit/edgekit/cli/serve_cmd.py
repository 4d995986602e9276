"""``edgekit serve``: bundles as a network service."""

from __future__ import annotations

from pathlib import Path

import click

from .common import FiniteFloat, console, json_option, print_json


@click.command("serve")
@click.argument("bundles", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: all).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--max-batch", default=16, show_default=True, type=click.IntRange(min=1),
              help="Rows per forward pass at most (dynamic batching).")
@click.option("--max-delay-ms", default=2.0, show_default=True, type=FiniteFloat(min=0),
              help="How long a partial batch waits for more.")
@click.option("--max-queue", default=256, show_default=True, type=click.IntRange(min=1),
              help="Rows queued per model; beyond it: 503.")
@click.option("--max-wait-ms", default="auto", show_default=True,
              help="Latency budget: shed (503) a request whose expected queue wait is longer. auto: twice the "
                   "quickest forward pass served, at least 25 ms; 0: off (only --max-queue sheds).")
@click.option("--no-batching", is_flag=True, help="Run every request on its own.")
@click.option("--batch-workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Forward passes in flight per model.")
@click.option("--cache-size", default=1024, show_default=True, type=click.IntRange(min=0),
              help="Responses cached per model (0: off).")
@click.option("--timeout-ms", default=10_000.0, show_default=True, type=FiniteFloat(min=0, min_open=True),
              help="Per request, queueing included (504).")
@click.option("--threads", type=click.IntRange(min=1), help="Intra-op threads per session (default: the runtime's).")
@click.option("--token-file", type=click.Path(path_type=Path), help="Require this bearer token (probes excepted).")
@click.option("--public-key", type=click.Path(path_type=Path), help="Serve only bundles signed for this key.")
@click.option("--log-db", type=click.Path(path_type=Path), help="Log every prediction to this device log store.")
@click.option("--max-body-mb", default=64, show_default=True, type=click.IntRange(min=1), help="Largest request body.")
@click.option("--max-inflight", default=1024, show_default=True, type=click.IntRange(min=1),
              help="Requests handled at once; beyond it: 503 before the body is read.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(min=1),
              help="Server processes (each loads every bundle).")
@click.option("--ui", is_flag=True, help="Mount a browser UI at /ui (needs the 'ui' extra: gradio).")
@click.option("--lookup-db", help="Answer known keys from a predictions table (see 'edgekit predict').")
@click.option("--lookup-table", default="predictions", show_default=True)
@click.option("--access-log", is_flag=True, help="One JSON line per request on stderr.")
@click.option("--drain-seconds", default=2.0, show_default=True, type=FiniteFloat(min=0),
              help="On SIGTERM: report not ready and keep serving this long (a load balancer moves traffic), "
                   "then stop accepting and finish what was accepted.")
def serve_cmd(bundles, host, port, max_batch, max_delay_ms, max_queue, max_wait_ms, no_batching, batch_workers, cache_size,
              timeout_ms, threads, token_file, public_key, log_db, max_body_mb, max_inflight, workers, ui, lookup_db,
              lookup_table, access_log, drain_seconds):
    """Serve bundles over the Open Inference Protocol (KServe V2), with dynamic batching, a
    response cache, Prometheus /metrics, and a raw-input route for bundles that carry their
    processing (pictures, text). Several bundles (models and versions) in one server.

    \b
    Example:
      edgekit serve digits.ekb minilm.ekb --port 8000
      edgekit serve digits.ekb --ui --token-file serve.token --log-db /var/lib/edgekit/log.db
      curl -s localhost:8000/v2/models/digits-cnn
      curl -s -H 'Content-Type: text/plain' --data 'a sentence' localhost:8000/v1/models/minilm/predict
    """
    from ..serve.plane import ServeOptions
    from ..serve.server import ServerConfig, serve
    from ..tokens import read_token

    max_wait_ms = _budget(max_wait_ms)

    config = ServerConfig(
        bundles=tuple(str(b) for b in bundles),
        options=ServeOptions(max_batch=max_batch, max_delay_ms=max_delay_ms, max_queue=max_queue,
                             cache_size=cache_size, timeout_ms=timeout_ms, threads=threads, workers=batch_workers,
                             batching=not no_batching, max_wait_ms=max_wait_ms),
        host=host, port=port, token=read_token(token_file).decode() if token_file else None,
        public_key=str(public_key) if public_key else None, log_db=str(log_db) if log_db else None,
        max_body_bytes=max_body_mb * 1024 * 1024, max_inflight=max_inflight, workers=workers, ui=ui, access_log=access_log,
        lookup_db=lookup_db, lookup_table=lookup_table, drain_s=drain_seconds)
    if workers == 1:
        from ..serve.server import build_app

        app = build_app(config)  # errors (a bad bundle, a taken port) surface here, as one line
        console().print(f"edgekit serve on http://{host}:{port}: "
                        + ", ".join(f"{m.name} {m.version}" for m in app.repository.all())
                        + (f"; UI at http://{host}:{port}/ui" if ui else ""))
        serve(config, app)
        return
    serve(config)


@click.command("predict")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--input", "source", type=click.Path(path_type=Path), required=True,
              help=".npz (one array per input), Parquet or CSV (a column per input, a 'text' or 'image' column, "
                   "or numeric feature columns), a folder of pictures (keyed by path) or a .txt of sentences "
                   "(row-N) for a bundle with its processing.")
@click.option("--db", required=True, help="sqlite:///preds.db or postgresql://user@host/db")
@click.option("--table", default="predictions", show_default=True)
@click.option("--key-column", default="key", show_default=True, help="The row key (else row-N).")
@click.option("--batch-size", default=64, show_default=True)
@click.option("--chunk", default=1024, show_default=True, help="Rows read and committed at a time.")
@click.option("--threads", type=int, help="Intra-op threads for the session.")
@click.option("--engine", type=click.Choice(["local", "spark"]), default="local", show_default=True,
              help="local: this process; spark: Spark executors score the Parquet/CSV table (mapInPandas), "
                   "this process writes the rows.")
@click.option("--spark-master", default="local[*]", show_default=True, help="With --engine spark: the master URL.")
@json_option
def predict_cmd(bundle, source, db, table, key_column, batch_size, chunk, threads, engine, spark_master, as_json):
    """Batch prediction into a database (model-in-DB): one row per key with the model name and
    version, label and score (for classifiers) and the outputs. Interrupted runs resume without
    duplicates; 'edgekit serve --lookup-db' then answers known keys from the table.

    \b
    Example:
      edgekit predict digits.ekb --input digits.npz --db sqlite:///preds.db
      edgekit predict minilm.ekb --input sentences.parquet --db postgresql://edgekit@db/edgekit --table embeddings
      edgekit predict digits.ekb --input photos/ --db sqlite:///preds.db
      edgekit predict digits.ekb --input digits.parquet --db sqlite:///preds.db --engine spark
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..serve.predictions import predict_to_db

    with Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True, disable=as_json) as bar:
        task = bar.add_task("rows", total=None)
        tick = lambda done, total: bar.update(task, completed=done, total=total)  # noqa: E731
        if engine == "spark":
            from ..serve.predict_spark import predict_with_spark

            info = predict_with_spark(bundle, source, db, table, key_column, batch_size, chunk, progress=tick,
                                      threads=threads, master=spark_master)
        else:
            info = predict_to_db(bundle, source, db, table, key_column, batch_size, chunk, progress=tick,
                                 threads=threads)
    if as_json:
        print_json(info)
    else:
        console().print(f"{info['model']} {info['version']}: {info['written']} rows written to {info['table']}, "
                        f"{info['skipped_existing']} already there, in {info['seconds']:.1f} s")


def _budget(text: str):
    """--max-wait-ms: "auto", 0 (off: None) or milliseconds."""
    if text == "auto":
        return "auto"
    try:
        value = float(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a number of milliseconds; give e.g. 50, auto or 0",
                                 param_hint="--max-wait-ms") from None
    if not value >= 0 or value == float("inf"):
        raise click.BadParameter(f"{text} is not a budget; give milliseconds above 0, auto, or 0 for off",
                                 param_hint="--max-wait-ms")
    return value or None
