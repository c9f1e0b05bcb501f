"""``smp-serve EXPORT_DIR``: a thin click layer over runtime.server."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from .common import cli_errors
from .triton_options import build_handoff, given, handoff_options

log = logging.getLogger("smp-serve")


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("export_dir", type=click.Path(path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; loopback by default. Use --api-key-file beyond it.")
@click.option("--port", type=int, default=8000, show_default=True, help="Port (0: any free port).")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
@click.option("--model-name", default="", help="Model name in the protocol [default: the directory's name].")
@click.option("--max-batch", type=int, default=32, show_default=True,
              help="Rows merged into one onnxruntime run (Triton: max_batch_size).")
@click.option("--max-delay-ms", type=float, default=5.0, show_default=True,
              help="How long a request waits for others to batch with (Triton: max queue delay).")
@click.option("--max-queue", type=int, default=256, show_default=True,
              help="Requests waiting or running before 503 + Retry-After.")
@click.option("--max-texts", type=int, default=64, show_default=True, help="Rows per request.")
@click.option("--max-seq-len", type=int, default=128, show_default=True, help="Tokens per row.")
@click.option("--seq-overflow", type=click.Choice(["truncate", "reject"]), default="truncate",
              show_default=True, help="Longer text: truncate it, or answer 413.")
@click.option("--max-body-bytes", type=int, default=2 * 1024 * 1024, show_default=True)
@click.option("--api-key-file", type=click.Path(path_type=Path), default=None,
              help="File holding a bearer token every request but the health probes must send.")
@click.option("--threads", type=int, default=None, help="onnxruntime intra-op threads [default: all cores].")
@click.option("--shutdown-timeout", type=float, default=30.0, show_default=True,
              help="Seconds in-flight requests get to finish on SIGTERM.")
@click.option("--header-timeout", type=float, default=10.0, show_default=True,
              help="Seconds a connection has to send a complete request head (also the keep-alive "
                   "idle timeout).")
@click.option("--max-connections", type=int, default=1024, show_default=True,
              help="Open connections; past it new ones get 503 and are closed.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--log-level", type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]), default="INFO",
              show_default=True)
@click.option("--write-model-repository", "repository", type=click.Path(path_type=Path), default=None,
              help="Write a Triton model repository for EXPORT_DIR into this folder and exit.")
@click.option("--overwrite", is_flag=True, help="With --write-model-repository: replace the model folder.")
@handoff_options
def main(export_dir: Path, host: str, port: int, device: str, model_name: str, max_batch: int,
         max_delay_ms: float, max_queue: int, max_texts: int, max_seq_len: int, seq_overflow: str,
         max_body_bytes: int, api_key_file: Path | None, threads: int | None, shutdown_timeout: float,
         header_timeout: float, max_connections: int, log_format: str, log_level: str,
         repository: Path | None, overwrite: bool, **handoff) -> None:
    """Serve EXPORT_DIR over the Open Inference Protocol (KServe v2 REST) with dynamic batching.

    Also POST /v1/classify and /v1/embed {"texts": [...]}, Prometheus metrics at /metrics.
    """
    from runtime.server.logs import configure_logging

    configure_logging(log_format, log_level)
    if repository is None and given(handoff):
        raise click.UsageError(f"{', '.join(given(handoff))} need --write-model-repository")
    with cli_errors():
        if repository is not None:
            triton, kserve = build_handoff(handoff, max_batch_size=max_batch, device=device, overwrite=overwrite,
                                           max_queue_delay_us=int(max_delay_ms * 1000))
            _write_repository(export_dir, repository, model_name, triton, kserve)
            return
        _serve(export_dir, host=host, port=port, device=device, model_name=model_name,
               max_batch=max_batch, max_delay_ms=max_delay_ms, max_queue=max_queue,
               max_texts=max_texts, max_seq_len=max_seq_len, seq_overflow=seq_overflow,
               max_body_bytes=max_body_bytes, api_key_file=api_key_file,
               intra_op_threads=threads, shutdown_timeout_s=shutdown_timeout,
               header_timeout_s=header_timeout, max_connections=max_connections)


def _write_repository(export_dir: Path, repository: Path, model_name: str, triton, kserve) -> None:
    from runtime.server.kserve import FILE_NAME
    from runtime.server.triton import write_model_repository

    target = write_model_repository(export_dir, repository, model_name or None, triton, kserve=kserve)
    click.echo(f"wrote {target / 'config.pbtxt'}")
    if kserve is not None:
        click.echo(f"wrote {target / FILE_NAME} (kubectl apply -f it once the repository is at {kserve.storage_uri})")


def _serve(export_dir: Path, *, api_key_file: Path | None, **settings: object) -> None:
    from runtime.server.config import ServeConfig, read_api_key
    from runtime.server.runner import serve

    api_key = read_api_key(api_key_file) if api_key_file is not None else None
    serve(ServeConfig(export_dir=export_dir, api_key=api_key, **settings))


if __name__ == "__main__":
    main()
