"""The Triton / KServe handoff options shared by ``smp-export --format triton`` and
``smp-serve --write-model-repository``: one decorator, one builder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from runtime.server.kserve import KServeOptions
from runtime.server.triton import check_kserve
from runtime.server.triton_config import TritonOptions

_SPECS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--instances", dict(type=click.IntRange(min=1), help="Triton: model instances (instance_group count) "
                                                          "[default: 1].")),
    ("--cores", dict(type=click.IntRange(min=1),
                     help="Triton: CPU cores the instances share; each gets cores / instances intra-op threads, "
                          "which the ai.smp kernels use [default with one instance: every core Triton's machine "
                          "has].")),
    ("--library-root", dict(metavar="PATH",
                            help="Triton: the repository's path inside Triton's container, for op_library_filename "
                                 "of a kernel export [default: the repository's absolute path here; /mnt/models "
                                 "with KServe].")),
    ("--op-library", dict(type=click.Path(path_type=Path),
                          help="Triton: the ai.smp library to ship with a kernel export [default: the installed "
                               "one].")),
    ("--kserve-storage-uri", dict(metavar="URI",
                                  help="Also write MODEL/inferenceservice.yaml: a KServe InferenceService (Triton "
                                       "runtime) for the repository once uploaded to URI (s3://..., gs://..., "
                                       "pvc://...); needs --cores, and a repository holding this model only.")),
    ("--kserve-name", dict(help="KServe: the InferenceService name [default: the model's].")),
    ("--kserve-memory", dict(help="KServe: memory request and limit [default: 2Gi].")),
)
#: The keyword arguments the decorator adds (None: not given).
NAMES = tuple(flag[2:].replace("-", "_") for flag, _ in _SPECS)


def handoff_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the Triton / KServe options to a click command."""
    for flag, settings in reversed(_SPECS):
        command = click.option(flag, default=None, **settings)(command)
    return command


def given(values: dict[str, Any]) -> list[str]:
    """The handoff options given on the command line (as --names)."""
    return ["--" + name.replace("_", "-") for name in NAMES if values.get(name) is not None]


def build_handoff(values: dict[str, Any], **base: Any) -> tuple[TritonOptions, KServeOptions | None]:
    """TritonOptions (``base``: the command's own batching / device / overwrite settings) and
    the KServe options, if a storage URI was given; TritonRepositoryError on bad values."""
    if values.get("kserve_storage_uri") is None and (values.get("kserve_name") or values.get("kserve_memory")):
        raise click.UsageError("--kserve-name and --kserve-memory need --kserve-storage-uri")
    triton = TritonOptions(instance_count=values.get("instances") or 1, cores=values.get("cores"),
                           library_root=values.get("library_root"),
                           op_library=str(values["op_library"]) if values.get("op_library") else None, **base)
    kserve = None
    if values.get("kserve_storage_uri") is not None:
        kserve = KServeOptions(storage_uri=values["kserve_storage_uri"], name=values.get("kserve_name"),
                               memory=values.get("kserve_memory") or "2Gi")
    check_kserve(triton, kserve)
    return triton, kserve
