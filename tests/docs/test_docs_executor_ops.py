"""docs/executor-ops.md lists exactly the ops of the core op library."""

import re
from pathlib import Path

from qtool.executor.op_docs import BEGIN, END, op_table
from qtool.executor.ops.registry import op_source, supported_op_types

PAGE = Path(__file__).resolve().parents[2] / "docs" / "executor-ops.md"


def test_generated_table_is_up_to_date():
    text = PAGE.read_text()
    generated = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert generated == op_table(), "run: python -m qtool.executor.op_docs docs/executor-ops.md"


def test_table_names_every_core_op_once():
    text = PAGE.read_text().split(BEGIN, 1)[1].split(END, 1)[0]
    listed = re.findall(r"`([\w.:]+)`", text)
    core = [op for domain, op in supported_op_types() if op_source(op, domain).startswith("qtool.executor.ops.")]
    assert sorted(listed) == sorted(core) and len(core) >= 140
    assert {"LSTM", "GRU", "RNN", "ConvInteger", "MatMulInteger", "SplitToSequence", "CastLike"} <= set(listed)
