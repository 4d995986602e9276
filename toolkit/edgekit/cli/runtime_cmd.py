"""``edgekit package`` and ``edgekit run``: the deployable bundle and a quick check of it."""

from __future__ import annotations

from pathlib import Path

import click

from .common import console, json_option, print_json, table


@click.command("package")
@click.argument("source", type=click.Path(path_type=Path), required=False)
@click.option("--out", "out", type=click.Path(path_type=Path), help="Bundle file [MODEL-TARGET.ekb].")
@click.option("--sign-key", type=click.Path(path_type=Path), help="ed25519 private key (PEM) to sign the manifest.")
@click.option("--new-key", type=click.Path(path_type=Path), help="Write a new ed25519 key pair: PATH and PATH.pub.")
@click.option("--version", "model_version", help="Model version recorded in the manifest.")
@click.option("--name", "model_name", help="Model name recorded in the manifest (what the fleet logs it as).")
@json_option
def package_cmd(source, out, sign_key, new_key, model_version, model_name, as_json):
    """Pack an 'edgekit optimize' output directory into a deployable bundle (.ekb, a tar.gz).

    The bundle holds manifest.json (ordered variants with sha256, runtimes and providers, input
    and output specs), the variant files and golden inputs/outputs for the on-device self-test.

    \b
    Example:
      edgekit package edgekit-out/digits-cnn-raspberrypi5 --out digits.ekb
      edgekit package --new-key release.key
      edgekit package edgekit-out/minilm-host --sign-key release.key --version 1.2.0
      edgekit package edgekit-out/build-host --name mlp-digits --version 1
    """
    from ..bundle import generate_keys, make_bundle

    if new_key:
        if sign_key:
            raise click.UsageError("give --new-key (make a key and sign with it) or --sign-key (an existing key), "
                                   "not both")
        generate_keys(new_key, Path(f"{new_key}.pub"))
        console().print(f"wrote {new_key} (keep it secret) and {new_key}.pub (configure it on devices)")
        if source is None:
            return
        sign_key = new_key  # a key made for this bundle signs it: an unsigned one beside it was a surprise
    if source is None:
        raise click.UsageError("give the optimize output directory to package")
    out = out or Path(f"{source.name}.ekb")
    manifest = make_bundle(source, out, sign_key=sign_key, version=model_version, name=model_name)
    info = {"bundle": str(out), "size_bytes": out.stat().st_size, "signed": bool(sign_key),
            "variants": [v.id for v in manifest.variants]}
    if as_json:
        print_json(info)
    else:
        console().print(f"wrote {out} ({info['size_bytes'] / 1e6:.2f} MB{', signed' if sign_key else ''}): "
                        f"variants {' > '.join(info['variants'])}")


@click.command("run")
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--input", "input_file", type=click.Path(path_type=Path),
              help=".npy (single-input models) or .npz with one array per input; default: the golden inputs.")
@click.option("--public-key", type=click.Path(path_type=Path), help="Verify the bundle's signature with this key.")
@json_option
def run_cmd(bundle, input_file, public_key, as_json):
    """Load a bundle with the embedded runtime and predict once: a quick check from the shell.

    \b
    Example:
      edgekit run digits.ekb --input digit.npy
      edgekit run model.ekb --json
    """
    import numpy as np

    from ..runtime import load

    model = load(bundle, public_key=public_key)
    if input_file:
        if input_file.suffix == ".npy":
            if len(model.inputs) != 1:
                raise click.UsageError(f"{model.name} takes {len(model.inputs)} inputs: pass an .npz")
            inputs = {model.inputs[0]["name"]: np.load(input_file)}
        else:
            with np.load(input_file) as npz:
                inputs = {k: npz[k] for k in npz.files if k != "labels"}
    elif model._golden is not None:
        inputs = model._golden[0]
    else:
        raise click.UsageError("this bundle has no golden inputs: pass --input")
    outputs = model.predict(inputs)
    stats = model.stats()
    result = {"model": model.name, "active_variant": stats["active_variant"],
              "outputs": {k: {"shape": list(v.shape), "values": v.tolist() if v.size <= 64 else None}
                          for k, v in outputs.items()},
              "variants": stats["variants"], "latency_ms": stats["latency_ms"]["p50"]}
    for name, value in outputs.items():
        if value.ndim == 2 and value.shape[1] <= 1000:
            result["outputs"][name]["argmax"] = value.argmax(1).tolist()
    if as_json:
        print_json(result)
        return
    c = console()
    c.print(f"{model.name}: active variant [bold]{result['active_variant']}[/bold], {result['latency_ms']:.2f} ms")
    for name, value in result["outputs"].items():
        c.print(f"{name}: shape {value['shape']}" + (f", argmax {value['argmax'][:20]}" if "argmax" in value else ""))
    c.print(table("variants, in the order tried", ["variant", "format", "precision", "provider", "state"],
                  [[v["id"], v["format"], v["precision"], v["provider"] or "-",
                    "active" if v["id"] == result["active_variant"] else f"skipped: {v['skipped']}" if v["skipped"]
                    else "demoted" if v["demoted"] else "loaded" if v["loaded"] else "not loaded"]
                   for v in stats["variants"]]))
