"""The op registry's contract and coverage of the ONNX light models."""

from pathlib import Path

import onnx
import pytest
import torch
from qtool.executor import ops
from qtool.executor.ops import (
    OpContext,
    UnsupportedOpError,
    get_op,
    is_supported,
    op_impl,
    register_op,
    supported_op_types,
)

LIGHT_MODELS = sorted((Path(onnx.__file__).parent / "backend/test/data/light").glob("*.onnx"))


def _identity(ctx, attrs, inputs):
    return list(inputs)


@pytest.fixture
def scratch_ops():
    """Op names registered by a test, removed again afterwards."""
    names: list[tuple[str, str]] = []
    yield names
    for domain, op_type in names:
        ops.registry._REGISTRY.pop((domain, op_type), None)


def test_unsupported_op_error_names_op_and_domain():
    with pytest.raises(UnsupportedOpError) as info:
        get_op("NoSuchOp", "com.example")
    assert isinstance(info.value, KeyError)
    assert "NoSuchOp" in str(info.value) and "com.example" in str(info.value)
    assert (info.value.op_type, info.value.domain) == ("NoSuchOp", "com.example")


def test_unsupported_default_domain_message():
    with pytest.raises(UnsupportedOpError, match="'NoSuchOp'.*'ai.onnx'"):
        get_op("NoSuchOp")


def test_register_duplicate_needs_replace(scratch_ops):
    scratch_ops.append(("test.domain", "Twice"))
    register_op("Twice", _identity, "test.domain")
    with pytest.raises(ValueError, match="Twice"):
        register_op("Twice", _identity, "test.domain")
    register_op("Twice", lambda ctx, attrs, inputs: [], "test.domain", replace=True)
    assert get_op("Twice", "test.domain") is not _identity


def test_op_impl_registers_every_name(scratch_ops):
    scratch_ops.extend([("test.domain", "First"), ("test.domain", "Second")])

    @op_impl("First", "Second", domain="test.domain")
    def fn(ctx, attrs, inputs):
        return [inputs[0] + 1]

    ctx = OpContext("First", "n", 1, 1, torch.device("cpu"))
    assert get_op("Second", "test.domain")(ctx, {}, [torch.zeros(1)])[0].item() == 1
    assert ("test.domain", "First") in supported_op_types()


def test_default_domain_aliases():
    assert is_supported("Conv") and is_supported("Conv", "ai.onnx")
    assert get_op("Conv", "ai.onnx") is get_op("Conv")
    assert not is_supported("Conv", "com.microsoft")


def test_supported_op_types_sorted():
    listed = supported_op_types()
    assert listed == sorted(listed) and ("", "Resize") in listed


def test_light_models_are_found():
    assert len(LIGHT_MODELS) == 9


@pytest.mark.parametrize("path", LIGHT_MODELS, ids=lambda p: p.stem)
def test_light_model_ops_supported(path):
    model = onnx.load(path, load_external_data=False)
    missing = {n.op_type for n in model.graph.node if not is_supported(n.op_type, n.domain)}
    assert not missing, f"{path.stem} uses unsupported ops {sorted(missing)}"


def test_builtin_names_are_the_registered_kernels():
    """kernel_names lists by name exactly the ops the op modules register (support checks it without torch)."""
    from qtool.executor.kernel_names import BUILTIN_OP_TYPES

    registered = {op_type for domain, op_type in supported_op_types()
                  if ops.registry.op_source(op_type, domain).startswith("qtool.executor.ops.")}
    assert registered == BUILTIN_OP_TYPES
    assert all(domain == "" for domain, op_type in supported_op_types() if op_type in BUILTIN_OP_TYPES)
