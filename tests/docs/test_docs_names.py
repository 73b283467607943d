"""The docs' configuration examples name ops that exist in the model they show (the demo's digits CNN)."""

import re
import sys
from pathlib import Path

import pytest
import qtool
from qtool.config import resolve_config
from qtool.config.errors import ConfigError
from qtool.config.names import check_names

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples"))
import digits_model  # noqa: E402

NAMING = re.compile(r"op_name|tensor\s*=|exclude|include")
EXAMPLES = [(doc, body) for doc in ("configuration.md", "getting-started.md", "design.md")
            for lang, body in re.findall(r"```(toml|yaml)\n(.*?)```", (ROOT / "docs" / doc).read_text(), flags=re.S)
            if lang == "toml" and NAMING.search(body)]


@pytest.fixture(scope="module")
def digits_graph(tmp_path_factory):
    """The demo's model as exported (untrained: the names are what matter)."""
    path = digits_model.export(digits_model.DigitsNet().eval(), tmp_path_factory.mktemp("digits") / "digits.onnx")
    return qtool.load(path)


def test_the_naming_examples_are_found():
    assert [doc for doc, _ in EXAMPLES] == ["configuration.md", "configuration.md", "getting-started.md", "design.md"]


@pytest.mark.parametrize("doc, body", EXAMPLES, ids=[doc for doc, _ in EXAMPLES])
def test_every_name_in_a_docs_example_matches_the_demo_model(doc, body, digits_graph, tmp_path):
    path = tmp_path / "example.toml"
    path.write_text(body)
    check_names(resolve_config({}, path), digits_graph, "the digits CNN")


def test_a_glob_that_matches_nothing_is_an_error_naming_a_real_op(digits_graph, tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[[override]]\nop_name = "head.*"\nkeep_float = true\n[dispatch]\nexclude = ["/head/head.1/Gem"]\n')
    with pytest.raises(ConfigError, match=r"override\[0\]: op_name = 'head.\*' matches no op of the digits CNN .*"
                       r"'/head/head.0/Flatten'.* \| .*dispatch.exclude: '/head/head.1/Gem' matches no op of the "
                       r"digits CNN; did you mean '/head/head.1/Gemm'\?"):
        check_names(resolve_config({}, path), digits_graph, "the digits CNN")


def test_a_regular_expression_that_matches_nothing_is_said_to_be_read_as_a_glob(digits_graph, tmp_path):
    """A user wrote op_name = "^/head/.*$" (or "re:...") and read only 'matches no op'."""
    path = tmp_path / "c.toml"
    for pattern in ("^/head/.*$", "re:/head/.*", "/head/(head.1)/Gemm"):
        path.write_text(f'[[override]]\nop_name = "{pattern}"\nkeep_float = true\n'
                        f'[dispatch]\nexclude = ["{pattern}"]\n')
        with pytest.raises(ConfigError) as refused:
            check_names(resolve_config({}, path), digits_graph, "the digits CNN")
        assert str(refused.value).count("(a glob in fnmatch syntax, '*' for any text, not a regular expression)") == 2
    path.write_text('[[override]]\nop_name = "/heads/*"\nkeep_float = true\n')  # a plain glob: no such note
    with pytest.raises(ConfigError) as refused:
        check_names(resolve_config({}, path), digits_graph, "the digits CNN")
    assert "regular expression" not in str(refused.value)


def test_an_op_type_no_runtime_knows_is_an_error_and_one_the_model_lacks_is_not(digits_graph, tmp_path):
    """op_type = "conv" applied to nothing without a word; "LSTM" (absent here) serves a config of several models."""
    path = tmp_path / "c.toml"
    path.write_text('[[override]]\nop_type = "conv"\nweight = { bits = 4 }\n')
    with pytest.raises(ConfigError, match=r"override\[0\]: op_type = 'conv' is no op type ONNX or ONNX Runtime "
                                          r"knows; did you mean 'Conv'\?"):
        check_names(resolve_config({}, path), digits_graph, "the digits CNN")
    path.write_text('[[override]]\nop_type = "LSTM"\nkeep_float = true\n[[override]]\nop_type = "Attention"\n'
                    'keep_float = true\n')  # ONNX's, and ONNX Runtime's contrib op
    check_names(resolve_config({}, path), digits_graph, "the digits CNN")


def test_an_op_type_list_naming_an_unknown_type_is_an_error(digits_graph, tmp_path):
    """quantize_op_types = ["Convv", "Gem"] quantized nothing and said only 'coverage low'; fusion.activations
    = ["Reluu"] was taken without a word (a user-style probe). A platform's own lists are not checked here."""
    path = tmp_path / "c.toml"
    path.write_text('[dispatch]\nquantize_op_types = ["Convv", "Gemm"]\n[fusion]\nactivations = ["Reluu"]\n')
    with pytest.raises(ConfigError, match=rf"{re.escape(str(path))}: dispatch.quantize_op_types: 'Convv' is no op "
                                          r"type ONNX or ONNX Runtime knows; did you mean 'Conv'\? \| .*"
                                          r"fusion.activations: 'Reluu' is no op type .*; did you mean 'Relu'\?"):
        check_names(resolve_config({}, path), digits_graph, "the digits CNN")
    path.write_text('[dispatch]\nquantize_op_types = ["Conv", "LSTM", "Attention"]\n')  # ONNX's and ORT's
    check_names(resolve_config({}, path), digits_graph, "the digits CNN")
    check_names(resolve_config({"dispatch": {"quantize_op_types": ["AcmeConv"]}}, None), digits_graph)  # a platform's
