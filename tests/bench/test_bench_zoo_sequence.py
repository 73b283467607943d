"""The zoo's KV-cache decoder is fed as a generation loop runs it: a zero-length past first, then one token per step
whose past is the step before's present."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

pytest.importorskip("transformers", reason="the zoo's transformers models come with bench/requirements.txt")
import zoo_sequence  # noqa: E402  (it imports transformers' models only where they are built)


def test_llama_kv_feeds_follow_a_greedy_generation_loop(tmp_path):
    path, feed = zoo_sequence._llama_kv(tmp_path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    first, second = feed(0), feed(1)
    assert first["past_key_values.0.key"].shape[2] == 0 and first["input_ids"].shape[1] >= 3
    assert second["input_ids"].shape == (1, 1)
    result = dict(zip(outputs, session.run(outputs, first), strict=True))
    assert second["input_ids"][0, 0] == result["logits"][0, -1].argmax()
    np.testing.assert_array_equal(second["past_key_values.1.value"], result["present.1.value"])
    prompt = first["input_ids"].shape[1]
    assert second["position_ids"].tolist() == [[prompt]] and second["attention_mask"].shape == (1, prompt + 1)
    assert {feed(seed)["input_ids"].shape[1] for seed in range(0, 24, 4)} != {first["input_ids"].shape[1]}
