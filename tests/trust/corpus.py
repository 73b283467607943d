"""The bad-input corpus: each case builds its broken or hostile inputs and gives the command line and culprit.

A case is ``(id, build)``: ``build(inputs, out)`` writes files under ``inputs`` and returns
``(argv, culprit)``, where ``culprit`` is text the one error line must contain (the file, key,
node, tensor or path at fault). ``out`` is the (empty) folder outputs would go to. Hostile files
try to write ``inputs/PWNED`` when anything executes them.
"""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from qtool.testing.models import SMALL_MODEL_SHAPE, small_model_proto

PWNED = "PWNED"


class Pwn:
    """Unpickling this writes the PWNED marker: a calibration file must never be unpickled."""

    def __init__(self, folder) -> None:
        self.folder = str(folder)

    def __reduce__(self):
        return (open, (f"{self.folder}/{PWNED}", "w"))


def model(inputs, proto=None, name: str = "m.onnx"):
    path = inputs / name
    onnx.save_model(proto if proto is not None else small_model_proto(), path)
    return path


def calib(inputs, name: str = "c.npz", **arrays):
    path = inputs / name
    arrays = arrays or {"input": np.random.default_rng(0).standard_normal((4, *SMALL_MODEL_SHAPE[1:]), np.float32)}
    np.savez(path, **arrays)
    return path


def quantize(inputs, out, *extra, model_path=None, calib_path=None) -> list[str]:
    model_path = model_path or model(inputs)
    calib_path = calib_path or calib(inputs)
    return ["quantize", str(model_path), "--platform", "onnxruntime", "--calib", str(calib_path),
            "-o", str(out / "q.onnx"), *map(str, extra)]


def with_config(text: str, suffix: str = ".toml"):
    def build(inputs, out):
        path = inputs / f"qconfig{suffix}"
        path.write_bytes(text.encode() if isinstance(text, str) else text)
        return quantize(inputs, out, "--config", path), "qconfig" + suffix
    return build


def with_model(make, culprit: str):
    def build(inputs, out):
        path = make(inputs)
        return quantize(inputs, out, model_path=path), culprit
    return build


def with_calib(make, culprit: str):
    def build(inputs, out):
        return quantize(inputs, out, calib_path=make(inputs)), culprit
    return build


# -- models ---------------------------------------------------------------------------------
def external(location: str):
    def make(inputs):
        folder = inputs / "ext"
        folder.mkdir()
        path = folder / "m.onnx"
        onnx.save_model(small_model_proto(), path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location="m.data", size_threshold=0)
        proto = onnx.load(path, load_external_data=False)
        for tensor in proto.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
        onnx.save_model(proto, path)
        (inputs / "outside.data").write_bytes(b"\0" * 4096)
        return path
    return make


def short_external(inputs):
    path = external("m.data")(inputs)
    with open(path.parent / "m.data", "r+b") as handle:
        handle.truncate(64)
    return path


def edited(change):
    def make(inputs):
        proto = small_model_proto()
        change(proto)
        return model(inputs, proto)
    return make


def raw_wrong_size(proto):
    weight = proto.graph.initializer[0]
    weight.ClearField("float_data")
    weight.raw_data = np.zeros(25, np.float32).tobytes()


def float_data_wrong_count(proto):
    weight = proto.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.float_data[:] = [1.0, 2.0]


def dangling_output(proto):
    proto.graph.output.append(helper.make_tensor_value_info("ghost", TensorProto.FLOAT, [1]))


def doubly_produced(proto):
    proto.graph.node.append(helper.make_node("Relu", ["conv1_out"], ["relu_out"], name="relu_again"))


def no_outputs(proto):
    del proto.graph.output[:]


def dangling_input(proto):
    proto.graph.node[-1].input[0] = "ghost"


def opset(version):
    def change(proto):
        del proto.opset_import[:]
        if version is not None:
            proto.opset_import.append(helper.make_opsetid("", version))
    return change


def fifo(inputs):
    return fifo_named(inputs, "m.onnx")


def fifo_named(inputs, name: str):
    os.mkfifo(inputs / name)  # read, it blocks until a writer comes: forever
    return inputs / name


def sparse_initializer(proto):
    values = numpy_helper.from_array(np.ones(1, np.float32), "sparse_w")
    proto.graph.sparse_initializer.append(helper.make_sparse_tensor(values, numpy_helper.from_array(
        np.zeros(1, np.int64), "idx"), [2]))


def unknown_op(proto):
    proto.graph.node.insert(1, helper.make_node("Frobnicate", ["conv1_out"], ["frob_out"], name="frob",
                                                domain="com.example"))
    proto.graph.node[2].input[0] = "frob_out"
    proto.opset_import.append(helper.make_opsetid("com.example", 1))


def empty_graph(proto):
    del proto.graph.node[:]
    del proto.graph.output[:]


def write_bytes(data: bytes, name: str = "m.onnx"):
    def make(inputs):
        path = inputs / name
        path.write_bytes(data)
        return path
    return make


def truncated(inputs):
    data = small_model_proto().SerializeToString()
    return write_bytes(data[: len(data) // 2])(inputs)


def model_folder(inputs):
    (inputs / "m.onnx").mkdir()
    return inputs / "m.onnx"


# -- calibration data -------------------------------------------------------------------------
def npz(**arrays):
    return lambda inputs: calib(inputs, "bad.npz", **arrays)


def pickled_npy(inputs):
    folder = inputs / "calib"
    folder.mkdir()
    array = np.empty(1, dtype=object)
    array[0] = Pwn(inputs)
    np.save(folder / "input.npy", array, allow_pickle=True)
    return folder


def pickled_npz(inputs):
    array = np.empty(1, dtype=object)
    array[0] = Pwn(inputs)
    np.savez(inputs / "evil.npz", input=array)
    return inputs / "evil.npz"


def raw_pickle(inputs):
    (inputs / "evil.npz").write_bytes(pickle.dumps(Pwn(inputs)))
    return inputs / "evil.npz"


def folder_with_link(target: str):
    def make(inputs):
        folder = inputs / "calib"
        folder.mkdir()
        np.savez(folder / "00.npz", input=np.zeros((2, *SMALL_MODEL_SHAPE[1:]), np.float32))
        (folder / "01.npz").symlink_to(target)
        return folder
    return make


def empty_folder(inputs):
    (inputs / "calib").mkdir()
    return inputs / "calib"


SHAPE = SMALL_MODEL_SHAPE[1:]
DEEP_JSON = '{"dispatch": ' * 5000 + "{}" + "}" * 5000
YAML_EXPLOIT = f"!!python/object/apply:os.system ['touch {PWNED}']\n"


def build_cases() -> list[tuple[str, object]]:
    r = np.random.default_rng(1)
    ok = r.standard_normal((4, *SHAPE), np.float32)
    cases = [
        # broken and hostile models
        ("model-missing", lambda i, o: (quantize(i, o, model_path=i / "nope.onnx"), "nope.onnx: no such model file")),
        ("model-is-folder", with_model(model_folder, "m.onnx: is a folder, not a model file")),
        ("model-empty-file", with_model(write_bytes(b""), "m.onnx")),
        ("model-garbage", with_model(write_bytes(b"\xff\xfe garbage \x00" * 50), "m.onnx: not a readable ONNX")),
        ("model-is-json", with_model(write_bytes(b'{"graph": []}'), "m.onnx")),
        ("model-truncated", with_model(truncated, "m.onnx")),
        ("external-missing", with_model(external("missing.data"), "'missing.data': no such file")),
        ("external-absolute", with_model(external("/etc/hostname"), "relative to the model's folder")),
        ("external-escaping", with_model(external("../outside.data"), "leaves the model's folder")),
        ("external-short", with_model(short_external, "the file has 64 bytes")),
        ("external-is-folder", with_model(external("."), "tensor 'conv1.weight' external data '.'")),
        ("initializer-raw-size", with_model(edited(raw_wrong_size), "initializer 'conv1.weight'")),
        ("initializer-float-count", with_model(edited(float_data_wrong_count), "initializer 'conv1.weight'")),
        ("output-without-producer", with_model(edited(dangling_output), "'ghost'")),
        ("tensor-two-producers", with_model(edited(doubly_produced), "'relu_out'")),
        ("model-no-outputs", with_model(edited(no_outputs), "m.onnx: the model has no graph outputs")),
        ("model-dangling-input", with_model(edited(dangling_input), "m.onnx: node 'fc' (Gemm) reads tensor 'ghost'")),
        ("model-opset-99", with_model(edited(opset(99)), "m.onnx: the model's opset 99")),
        ("model-no-opset", with_model(edited(opset(None)), "m.onnx: the model imports no opset")),
        ("model-is-fifo", with_model(fifo, "m.onnx: is a FIFO")),
        ("inspect-no-outputs", lambda i, o: (["inspect", str(edited(no_outputs)(i))], "m.onnx: the model has no")),
        ("sparse-initializer", with_model(edited(sparse_initializer), "sparse initializer")),
        ("unknown-op", with_model(edited(unknown_op), "Frobnicate")),
        ("empty-graph", with_model(edited(empty_graph), "no graph")),
        # calibration data
        ("calib-missing", lambda i, o: (quantize(i, o, calib_path=i / "nope.npz"), "nope.npz")),
        ("calib-complex-values", with_calib(npz(input=ok.astype(np.complex64)), "bad.npz")),
        ("calib-wrong-shape", with_calib(npz(input=r.standard_normal((4, 3, 9, 9), np.float32)), "bad.npz")),
        ("calib-wrong-rank", with_calib(npz(input=r.standard_normal((4, 3), np.float32)), "bad.npz")),
        ("calib-strings", with_calib(npz(input=np.array(["a", "b"])), "bad.npz")),
        ("calib-zero-samples", with_calib(npz(input=np.zeros((0, *SHAPE), np.float32)), "bad.npz")),
        ("calib-empty-npz", with_calib(write_bytes(b"PK\x05\x06" + b"\0" * 18, "e.npz"), "e.npz")),
        ("calib-garbage", with_calib(write_bytes(b"not numpy at all", "g.npz"), "g.npz")),
        ("calib-unknown-type", with_calib(write_bytes(b"1,2,3", "c.csv"), "c.csv")),
        ("calib-is-fifo", with_calib(lambda inputs: fifo_named(inputs, "f.npz"), "f.npz: is a FIFO")),
        ("calib-dangling-symlink", with_calib(folder_with_link("gone.npz"), "01.npz: a symbolic link to nothing")),
        ("calib-symlink-loop", with_calib(folder_with_link("01.npz"), "01.npz: a symbolic link loop")),
        ("calib-all-nan-skipped", lambda i, o: (quantize(i, o, "--calib-skip-nonfinite", calib_path=npz(
            input=np.full((4, *SHAPE), np.nan, np.float32))(i)), "bad.npz: every calibration sample (4) holds NaN")),
        ("calib-empty-folder", with_calib(empty_folder, "calib")),
        ("calib-pickled-npy", with_calib(pickled_npy, "input.npy")),
        ("calib-pickled-npz", with_calib(pickled_npz, "evil.npz")),
        ("calib-raw-pickle", with_calib(raw_pickle, "evil.npz")),
        # configuration files
        ("config-missing", lambda i, o: (quantize(i, o, "--config", i / "nope.toml"), "nope.toml")),
        ("config-unknown-type", with_config("a = 1", ".ini")),
        ("config-bad-toml", with_config("[weight\nbits = 8")),
        ("config-bad-yaml", with_config("weight: [1, 2\n", ".yaml")),
        ("config-bad-json", with_config('{"weight": }', ".json")),
        ("config-deep-json", with_config(DEEP_JSON, ".json")),
        ("config-deep-yaml", with_config("[" * 20000, ".yaml")),
        ("config-yaml-exploit", with_config(YAML_EXPLOIT, ".yaml")),
        ("config-top-level-list", with_config("[1, 2]", ".json")),
        ("config-not-utf8", with_config(b"[weight]\nbits = \xff\xfe\n")),
        ("config-json-duplicate-key", with_config('{"weight": {"bits": 8, "bits": 4}}', ".json")),
        ("config-yaml-duplicate-key", with_config("weight:\n  bits: 8\n  bits: 4\n", ".yaml")),
        ("config-json-null", with_config("null", ".json")),
        ("config-is-fifo", lambda i, o: (quantize(i, o, "--config", fifo_named(i, "c.toml")), "c.toml: is a FIFO")),
        ("config-activation-per-block", with_config('[activation]\ngranularity = "per_block"\nblock_size = 4\n')),
        ("config-unknown-key", with_config("[weight]\nbitz = 8\n")),
        ("config-two-typos", with_config("[weight]\nbitz = 8\n[activation]\nsymetric = true\n")),
        ("config-wrong-type", with_config('[weight]\nbits = "eight"\n')),
        ("config-bits-range", with_config("[weight]\nbits = 99\n")),
        ("config-bad-choice", with_config('[weight]\ngranularity = "per_chanel"\n')),
        ("config-unknown-preset", with_config('preset = "int8"\n')),
        ("config-unknown-observer", with_config('[calibration]\nobserver = "minmaks"\n')),
        ("config-conflict", with_config("[weight]\nexponent_bits = 4\n")),
        ("config-override-no-matcher", with_config("[[override]]\nkeep_float = true\n")),
        ("config-override-glob-nothing", with_config('[[override]]\nop_name = "head.*"\nkeep_float = true\n')),
        ("config-override-tensor-nothing", with_config('[[override]]\ntensor = "conv1_ou"\nkeep_float = true\n')),
        ("config-exclude-nothing", with_config('[dispatch]\nexclude = ["stem.conv"]\n')),
        ("config-unknown-pass", with_config('[[pass]]\nname = "Nope"\nafter = "Dispatch"\n')),
        ("config-pass-without-after", with_config('[[pass]]\nname = "Nope"\n')),
        # platforms, presets, options
        ("platform-typo", lambda i, o: (["explain", str(model(i)), "--platform", "onnxrntime"], "'onnxrntime'")),
        ("platform-case", lambda i, o: (["explain", str(model(i)), "--platform", "ONNXRuntime"], "'onnxruntime'")),
        ("preset-unknown", lambda i, o: (quantize(i, o, "--preset", "int8"), "unknown preset 'int8'")),
        ("export-option-unknown", lambda i, o: (quantize(i, o, "--export-option", "externl_data=true"),
                                                "externl_data")),
        ("opset-for-a-platform-without", lambda i, o: (["quantize", str(model(i)), "--platform", "tensorrt", "--calib",
                                                        str(calib(i)), "--opset", "13", "-o", str(o / "q")],
                                                       "takes no other")),
        ("opset-out-of-range", lambda i, o: (quantize(i, o, "--opset", "5"), "writes opsets 10 to 27")),
        ("by-blocks-nan", lambda i, o: (quantize(i, o, "--by-blocks", "nan"), "--by-blocks nan")),
        ("by-blocks-inf", lambda i, o: (quantize(i, o, "--by-blocks", "inf"), "--by-blocks inf")),
        ("min-snr-inf", lambda i, o: (quantize(i, o, "--min-snr", "inf"), "--min-snr inf")),
        ("min-snr-negative", lambda i, o: (quantize(i, o, "--min-snr", "-5"), "--min-snr -5")),
        ("export-option-malformed", lambda i, o: (quantize(i, o, "--export-option", "novalue"), "novalue")),
        ("export-option-twice", lambda i, o: (quantize(i, o, "--export-option", "external_data=true",
                                                      "--export-option", "external_data=false"),
                                              "external_data is already given")),
        # output paths
        ("output-is-input", lambda i, o: (quantize(i, o)[:-1] + [str(i / "m.onnx")], "would overwrite the input")),
        ("output-is-input-no-suffix", lambda i, o: (quantize(i, o)[:-1] + [str(i / "m")], "would overwrite")),
        ("output-is-folder", lambda i, o: (quantize(i, o)[:-1] + [str(o)], "is a folder")),
        ("output-empty", lambda i, o: (quantize(i, o)[:-1] + [""], "output '' (-o): an empty path")),
        ("output-trailing-slash", lambda i, o: (quantize(i, o)[:-1] + [f"{o}/trail/"], "trail/' (-o): ends with '/'")),
        ("output-char-device", lambda i, o: (quantize(i, o)[:-1] + ["/dev/null"], "/dev/null: is a character device")),
        ("output-under-file", lambda i, o: (quantize(i, o)[:-1] + [str(i / "m.onnx" / "q.onnx")], "is a file")),
        ("output-in-proc", lambda i, o: (quantize(i, o)[:-1] + ["/proc/qtool/q.onnx"], "/proc")),
        ("state-is-input", lambda i, o: (quantize(i, o, "--save-state", i / "m.onnx"), "state file")),
        ("state-under-file", lambda i, o: (quantize(i, o, "--save-state", i / "c.npz" / "s.json"), "is a file")),
        ("state-is-output-data", lambda i, o: (quantize(i, o, "--save-state", o / "q.onnx.data"),
                                               "q.onnx.data: the output writes this file beside the model")),
        ("report-is-input", lambda i, o: (quantize(i, o, "--report", i / "m.onnx"), "would overwrite the input")),
        ("report-is-calib", lambda i, o: (quantize(i, o, "--report", i / "c.npz"), "would overwrite the input")),
        ("report-is-output", lambda i, o: (quantize(i, o, "--report", o / "q.onnx"), "is the output model's path")),
        ("report-is-folder", lambda i, o: (quantize(i, o, "--report", o), "is a folder")),
        ("side-file-is-config", lambda i, o: (["quantize", str(model(i)), "--platform", "tensorrt", "--calib",
                                               str(calib(i)), "--config", str(write_bytes(b"{}", "q.ranges.json")(i)),
                                               "-o", str(i / "q")], "would overwrite the input")),
        ("load-state-missing", lambda i, o: (quantize(i, o, "--load-state", i / "nope.json"), "nope.json")),
        ("load-state-garbage", lambda i, o: (quantize(i, o, "--load-state", garbage_state(i)), "state.json")),
        # user code and plugins
        ("metric-file-missing", lambda i, o: (quantize(i, o, "--metric", f"{i}/nope.py:score", "--max-drop", "0.1"),
                                              "nope.py")),
        ("metric-file-is-folder", lambda i, o: (quantize(i, o, "--metric", f"{i}:score", "--max-drop", "0.1"),
                                                "is a folder, not a Python file")),
        ("metric-without-max-drop", lambda i, o: (quantize(i, o, "--metric", f"{i}/m.py:score"), "--max-drop")),
        ("platform-default-config-raises", lambda i, o: (quantize(i, o)[:3] + ["broken-defaults"] + quantize(i, o)[4:],
                                                         "'broken-defaults'")),
        ("platform-validate-raises", lambda i, o: (quantize(i, o)[:3] + ["broken-validate"] + quantize(i, o)[4:],
                                                   "'broken-validate'")),
        ("platform-export-disk-full", lambda i, o: (quantize(i, o)[:3] + ["disk-full"] + quantize(i, o)[4:],
                                                    f"failed in export to {o / 'q.onnx'}: OSError")),
        # other commands
        ("inspect-garbage", lambda i, o: (["inspect", str(write_bytes(b"\x00\x01junk")(i))], "m.onnx")),
        ("explain-unknown-pass", lambda i, o: (["explain", str(model(i)), "--platform", "onnxruntime", "--config",
                                                str(write_bytes(b'[[pass]]\nname = "Nope"\nafter = "Dispatch"\n',
                                                                "p.toml")(i))], "p.toml: pass[0].name")),
        ("analyse-html-is-calib", lambda i, o: (["analyse", str(model(i)), "--platform", "onnxruntime", "--calib",
                                                 str(calib(i)), "--html", str(i / "c.npz")],
                                                "would overwrite the input")),
        ("analyse-no-samples", lambda i, o: (["analyse", str(model(i)), "--platform", "onnxruntime", "--calib",
                                              str(calib(i)), "--samples", "0"], "--samples")),
        ("analyse-no-rows", lambda i, o: (["analyse", str(model(i)), "--platform", "onnxruntime", "--calib",
                                           str(calib(i)), "--top", "-1"], "--top")),
        ("analyse-calib-missing", lambda i, o: (["analyse", str(model(i)), "--platform", "onnxruntime", "--calib",
                                                 str(i / "nope.npz")], "nope.npz")),
    ]
    return cases


def garbage_state(inputs):
    path = inputs / "state.json"
    path.write_text(json.dumps({"format": "something else"}))
    return path
