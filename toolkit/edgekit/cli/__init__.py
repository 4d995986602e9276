"""The ``edgekit`` command: a thin layer over the library; each command parses, calls, prints."""

from __future__ import annotations

import os

import click

from .. import __version__
from .common import EdgekitGroup
from .agent_cmd import agent
from .bench_cmd import bench_cmd
from .calibrate_cmd import calibrate_cmd
from .inspect_cmd import inspect_model
from .loop_cmd import label, loop
from .monitor_cmd import monitor
from .release_cmd import release
from .optimize_cmd import convert_cmd, optimize_cmd, quantize_cmd
from .profile_cmd import profile_cmd
from .runtime_cmd import package_cmd, run_cmd
from .serve_cmd import predict_cmd, serve_cmd
from .sync_cmd import collector, sync
from .test_cmd import test_group
from .targets_cmd import targets


@click.group(cls=EdgekitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekit")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors (or set EDGEKIT_DEBUG=1).")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """edgekit: take a trained model to an edge device and keep it good there.

    \b
    Example:
      edgekit targets list
      edgekit inspect edgekit:digits-cnn
    """
    ctx.ensure_object(dict)["debug"] = debug
    if debug:
        os.environ["EDGEKIT_DEBUG"] = "1"  # native logs (onnxruntime, LiteRT) speak up too
    else:
        # LiteRT and the TF-derived converters log from C++ straight to stderr; keep the
        # terminal for edgekit's own output unless debugging.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("GLOG_minloglevel", "3")
        os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")


main.add_command(targets)
main.add_command(inspect_model)
main.add_command(optimize_cmd)
main.add_command(convert_cmd)
main.add_command(quantize_cmd)
main.add_command(bench_cmd)
main.add_command(agent)
main.add_command(profile_cmd)
main.add_command(calibrate_cmd)
main.add_command(package_cmd)
main.add_command(run_cmd)
main.add_command(serve_cmd)
main.add_command(predict_cmd)
main.add_command(test_group)
main.add_command(collector)
main.add_command(sync)
main.add_command(monitor)
main.add_command(loop)
main.add_command(label)
main.add_command(release)
