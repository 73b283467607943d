"""A table that does not fit the graph fails with one error naming the file, line, op and tensor."""

import re

import pytest
import qtool
from qtool import QuantScheme
from qtool.testing import quantize_by_hand
from qtool_text import TextFormatError, read_table, write_table


@pytest.fixture
def table(qtool_small_model, tmp_path):
    return write_table(quantize_by_hand(qtool.load(qtool_small_model), bias="int32"), tmp_path / "t.txt")


@pytest.fixture
def fresh(qtool_small_model):
    return quantize_by_hand(qtool.load(qtool_small_model), bias="int32", settled=False)


def _edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def _line_of(path, fragment):
    return next(i for i, line in enumerate(path.read_text().splitlines(), start=1) if fragment in line)


@pytest.mark.parametrize(("old", "new", "message"), [
    ("# qtool-text format 1", "# some table", r"line 1: expected the header '# qtool-text format 1'"),
    ("# qtool-text format 1", "# qtool-text format 2", "format 2 is not supported"),
])
def test_header(table, fresh, old, new, message):
    _edit(table, old, new)
    with pytest.raises(TextFormatError, match=f"t.txt: {message}"):
        read_table(table, fresh)


@pytest.mark.parametrize(("old", "new", "message"), [
    ("conv2  out:0", "convX  out:0", "op 'convX' is not in the graph"),
    ("conv2  out:0", "conv2  on:0 ", "place 'on:0' should be in:<i> or out:<i>"),
    ("conv2  out:0", "conv2  out:3", "op 'conv2' has no quantization config at out:3"),
    ("conv2  out:0  conv2_out", "conv2  out:0  relu_out ", "op 'conv2' out:0 is tensor 'conv2_out', not 'relu_out'"),
    ("conv2_out     activation", "conv2_out     weight    ", "tensor 'conv2_out' is a activation here"),
    ("SYMMETRICAL|PER_TENSOR|LINEAR   8     -128..127", "SYMMETRICAL|PER_TENSOR|LINEAR   8     -127..127",
     "the table's scheme SYMMETRICAL|PER_TENSOR|LINEAR 8 -127..127 - differs"),
    ("-128..127                -     ", "-128..127                -     x ", "expected 11 fields"),
])
def test_lines_that_do_not_fit(table, fresh, old, new, message):
    line = _line_of(table, old)
    _edit(table, old, new)
    with pytest.raises(TextFormatError, match=f"t.txt: line {line}: .*{re.escape(message)}"):
        read_table(table, fresh)


@pytest.mark.parametrize(("value", "message"), [("-1", "scales must be positive"),
                                              ("zero", "could not convert string to float")])
def test_bad_numbers(table, fresh, value, message):
    relu = next(line for line in table.read_text().splitlines() if line.startswith("relu "))
    _edit(table, relu, relu.replace(f"  {relu.split()[-2]}  ", f"  {value}  "))
    where = f"line {_line_of(table, 'relu ')}: op 'relu' tensor 'relu_out'"
    with pytest.raises(TextFormatError, match=f"{where}: {message}"):
        read_table(table, fresh)


def test_lines_sharing_parameters_must_agree(table, fresh):
    relu = next(line for line in table.read_text().splitlines() if line.startswith("relu "))
    reader = relu.replace("relu   out:0", "conv2  in:0 ").replace(f"  {relu.split()[-2]}  ", "  1.0  ")
    table.write_text(table.read_text() + reader + "\n")
    with pytest.raises(TextFormatError, match="op 'conv2' tensor 'relu_out': scale/zero point differ from those"):
        read_table(table, fresh)


def test_passive_bias_is_checked_not_overwritten(table, qtool_small_model):
    graph = quantize_by_hand(qtool.load(qtool_small_model), bias="int32")  # biases follow a rule
    text = table.read_text()
    bias = next(line for line in text.splitlines() if " conv1.bias " in line)
    table.write_text(text.replace(bias, bias.replace(bias.split()[-2], "1,1,1,1")))
    where = f"line {_line_of(table, ' conv1.bias ')}: op 'conv1' tensor 'conv1.bias'"
    with pytest.raises(TextFormatError, match=f"{where}: scale/zero point differ"):
        read_table(table, graph)


def test_scheme_mismatch_with_the_graph(table, qtool_small_model):
    other = quantize_by_hand(qtool.load(qtool_small_model), activation=QuantScheme.integer(16), settled=False)
    with pytest.raises(TextFormatError, match=r"tensor 'input': the table's scheme .* differs from the graph's .* 16"):
        read_table(table, other)


