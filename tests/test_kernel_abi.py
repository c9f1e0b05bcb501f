"""The hand-declared onnxruntime C ABI: every OrtApi slot the library calls is exercised
here against the installed onnxruntime, and an onnxruntime too old is refused clearly."""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from runtime.kernels import ORT_MIN_API_VERSION, ORT_MIN_VERSION, custom_op_library_path, native_library
from tests.kernel_helpers import csr_arrays, random_weight, session, sparse_linear_model

# Slot -> OrtApi entry, as counted from onnxruntime_c_api.h (the table only grows at the end).
SLOTS = {0: "CreateStatus", 2: "GetErrorMessage", 26: "CreateCustomOpDomain", 27: "CustomOpDomain_Add",
         28: "AddCustomOpDomain", 51: "GetTensorMutableData", 55: "CastTypeInfoToTensorInfo",
         60: "GetTensorElementType", 61: "GetDimensionsCount", 62: "GetDimensions", 65: "GetTensorTypeAndShape",
         87: "KernelInfoGetAttribute_string", 88: "KernelContext_GetInputCount", 90: "KernelContext_GetInput",
         91: "KernelContext_GetOutput", 93: "ReleaseStatus", 98: "ReleaseTypeInfo",
         99: "ReleaseTensorTypeAndShapeInfo", 101: "ReleaseCustomOpDomain", 163: "KernelInfoGetAttributeArray_int64",
         234: "KernelInfo_GetInputTypeInfo", 235: "KernelInfo_GetOutputTypeInfo", 244: "KernelInfo_GetNodeName",
         249: "KernelInfoGetConstantInput_tensor", 274: "KernelContext_ParallelFor"}


def _slots() -> list[int]:
    lib = native_library()
    n = lib.smp_abi_slots(None, 0)
    out = (ctypes.c_int32 * n)()
    lib.smp_abi_slots(out, n)
    return list(out)


def _counts() -> dict[int, int]:
    lib = native_library()
    n = lib.smp_abi_call_counts(None, 0)
    out = (ctypes.c_int64 * n)()
    lib.smp_abi_call_counts(out, n)
    return dict(zip(_slots(), out))


def _c_library() -> ctypes.CDLL | None:
    """onnxruntime's C library shipped in the wheel (only to probe the ABI; the kernel
    library never links it)."""
    found = sorted(Path(onnxruntime.__file__).parent.glob("capi/libonnxruntime.so*"))
    return ctypes.CDLL(str(found[0])) if found else None


def _api_base(lib: ctypes.CDLL) -> int:
    lib.OrtGetApiBase.restype = ctypes.c_void_p
    return lib.OrtGetApiBase()


def test_declared_slots_are_the_counted_ones():
    assert _slots() == sorted(SLOTS)
    # The version the library asks for is the one the Triton / optimum docs and config.pbtxt state.
    assert native_library().smp_ort_api_version() == ORT_MIN_API_VERSION == 17 and ORT_MIN_VERSION == "1.17"


def test_every_declared_entry_is_exercised():
    rng = np.random.default_rng(0)
    w = random_weight(rng, 40, 24, 0.3)
    crow, col, values = csr_arrays(w)
    b = rng.standard_normal(40).astype(np.float32)
    x = rng.standard_normal((70, 24)).astype(np.float32)
    arrays = {"crow": crow, "col": col, "values": values}
    # Constant weights, attributes given (node name, attributes, constant inputs, compute, ParallelFor).
    np.testing.assert_allclose(session(sparse_linear_model((40, 24), arrays, bias=b), threads=2).run(
        None, {"X": x})[0], x @ w.T + b, rtol=1e-5, atol=1e-4)
    # block_shape absent (an attribute lookup that fails and is released), weights fed per call.
    model = sparse_linear_model((40, 24), arrays, attrs={"block_shape": None}, as_inputs=("crow",))
    np.testing.assert_allclose(session(model).run(None, {"X": x, "crow": crow})[0], x @ w.T, rtol=1e-5, atol=1e-4)
    # A malformed array: the kernel reports through CreateStatus.
    with pytest.raises(Exception, match="col_indices"):
        session(sparse_linear_model((40, 24), dict(arrays, col=col + 100)))
    lib = _c_library()
    if lib is None:
        pytest.skip("no libonnxruntime.so in the onnxruntime wheel: status/domain self-test not run")
    err = ctypes.create_string_buffer(256)
    assert native_library().smp_abi_selftest(_api_base(lib), err, len(err)) == 0, err.value
    missing = [f"{slot} {SLOTS[slot]}" for slot, count in _counts().items() if count == 0]
    assert not missing, f"OrtApi entries never called: {missing}"


def test_api_versions_of_the_installed_onnxruntime():
    lib = _c_library()
    if lib is None:
        pytest.skip("no libonnxruntime.so in the onnxruntime wheel")

    class ApiBase(ctypes.Structure):
        _fields_ = [("GetApi", ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint32)),
                    ("GetVersionString", ctypes.CFUNCTYPE(ctypes.c_char_p))]

    base = ApiBase.from_address(_api_base(lib))
    assert base.GetVersionString().decode() == onnxruntime.__version__
    assert base.GetApi(17)                  # the version the library asks for
    assert not base.GetApi(100000)          # a version from the future is refused


def test_too_old_onnxruntime_is_refused_with_a_clear_message():
    messages: list[str] = []
    create_status = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p)(
        lambda code, msg: messages.append(msg.decode()) or 0x1234)
    table = (ctypes.c_void_p * 4)(ctypes.cast(create_status, ctypes.c_void_p).value, None, None, None)
    get_api = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_uint32)(
        lambda version: ctypes.addressof(table) if version == 1 else None)
    text = ctypes.create_string_buffer(b"1.16.3")
    version = ctypes.CFUNCTYPE(ctypes.c_void_p)(lambda: ctypes.addressof(text))
    base = (ctypes.c_void_p * 2)(ctypes.cast(get_api, ctypes.c_void_p).value,
                                 ctypes.cast(version, ctypes.c_void_p).value)
    status = native_library().RegisterCustomOps(None, ctypes.addressof(base))
    assert status == 0x1234
    assert messages and "C API version 17" in messages[0] and "1.16.3" in messages[0]


def test_built_library_is_not_older_than_its_sources():
    sources = Path(__file__).resolve().parents[1] / "runtime" / "native"
    newest = max(p.stat().st_mtime for p in sources.rglob("*") if p.is_file() and p.suffix in (".cc", ".h", ".txt"))
    assert custom_op_library_path().stat().st_mtime >= newest - 1, \
        "runtime/native changed after the library was built: rerun `pip install -e .`"
