"""A KServe ``InferenceService`` for a Triton model repository written by ``triton.py``.

::

    apiVersion: serving.kserve.io/v1beta1
    kind: InferenceService
    spec.predictor.model:
      modelFormat: triton, runtime: kserve-tritonserver, protocolVersion: v2
      storageUri: <where the repository was uploaded: the folder holding MODEL/>
      resources: cpu = the cores Triton's instances share, memory

KServe's storage initializer copies ``storageUri`` to ``/mnt/models`` and starts Triton on
that repository, so a model that needs the ai.smp library names it as
``/mnt/models/MODEL/libsmp_sparse.so`` (``MOUNT``). The YAML is written by hand (strings
JSON-quoted, which YAML reads as the same strings): no YAML library in a deployment.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from ..errors import TritonRepositoryError

MOUNT = "/mnt/models"
RUNTIME = "kserve-tritonserver"
FILE_NAME = "inferenceservice.yaml"
_URI = re.compile(r"^[a-z][a-z0-9+.\-]*://\S+$")
#: Kubernetes' resource quantity (binary Ki..Ei, decimal k, M..E, or an exponent), positive.
_MEMORY = re.compile(r"^([0-9]+(\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[kMGTPE]|[eE][+-]?[0-9]+)?$")


@dataclass(frozen=True)
class KServeOptions:
    """``storage_uri``: where the repository will be (``s3://``, ``gs://``, ``pvc://``, ...);
    ``name``: the InferenceService name (default: the model's, made a DNS-1035 label);
    ``memory``: the predictor's memory request and limit."""

    storage_uri: str
    name: str | None = None
    memory: str = "2Gi"

    def __post_init__(self) -> None:
        if not _URI.match(self.storage_uri):
            raise TritonRepositoryError(f"{self.storage_uri!r} is not a storage URI (scheme://path, e.g. "
                                        "s3://bucket/models or pvc://claim/models)", field="--kserve-storage-uri")
        if not _MEMORY.match(self.memory):
            raise TritonRepositoryError(f"{self.memory!r} is not a Kubernetes quantity (e.g. 2Gi)",
                                        field="--kserve-memory")
        if self.name is not None and service_name(self.name) != self.name:
            raise TritonRepositoryError(f"{self.name!r} is not a DNS-1035 label (lower-case letters, digits "
                                        "and '-', starting with a letter, at most 63)", field="--kserve-name")


def service_name(model_name: str) -> str:
    """A DNS-1035 label from a model name: lower case, other characters become '-'."""
    name = re.sub(r"[^a-z0-9-]+", "-", model_name.lower()).strip("-")
    name = re.sub(r"^[^a-z]+", "", name)[:63].rstrip("-")
    return name or "smp-model"


def render_inference_service(model_name: str, options: KServeOptions, *, cores: int, gpu: bool = False) -> str:
    """The InferenceService YAML serving the repository that holds ``model_name``."""
    q = json.dumps
    limits = [f"          cpu: {q(str(cores))}", f"          memory: {q(options.memory)}"]
    lines = [f"# KServe: Triton serves the model repository at {options.storage_uri} (model {model_name!r};",
             f"# the ai.smp library, where the model needs it, is read from {MOUNT}/{model_name}/).",
             "# kubectl apply -f " + FILE_NAME,
             "apiVersion: serving.kserve.io/v1beta1",
             "kind: InferenceService",
             "metadata:",
             f"  name: {q(options.name or service_name(model_name))}",
             "spec:",
             "  predictor:",
             "    model:",
             "      modelFormat:",
             "        name: triton",
             f"      runtime: {RUNTIME}",
             "      protocolVersion: v2",
             f"      storageUri: {q(options.storage_uri)}",
             "      resources:",
             "        requests:", *limits,
             "        limits:", *limits]
    if gpu:
        lines.append('          nvidia.com/gpu: "1"')
    return "\n".join(lines) + "\n"
