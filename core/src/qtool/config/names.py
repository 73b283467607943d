"""Names a configuration takes from the model (op-name globs, tensor names) checked against the model."""

from __future__ import annotations

from fnmatch import fnmatchcase

from .errors import ConfigError
from .quantconfig import PLATFORM_SOURCE

SHOWN_NAMES = 3


def check_names(config, graph, model: str = "the model") -> None:
    """ConfigError when an override's op_name glob or tensor, or an include/exclude glob, matches nothing.

    Checked on the model as loaded (the names a model viewer shows), with a did-you-mean over its real names.
    """
    op_names = list(graph.operations)
    tensors = list(graph.variables)
    problems = []
    for override in config.overrides:
        if override.matcher == "op_name" and not _any_match(override.pattern, op_names):
            problems.append(f"{override.label}: op_name = {override.pattern!r} matches no op of {model}"
                            f"{_glob_note(override.pattern)}{_hint(override.pattern, op_names)}")
        elif override.matcher == "tensor" and override.pattern not in graph.variables:
            problems.append(f"{override.label}: tensor = {override.pattern!r} is no tensor of {model}"
                            f"{_hint(override.pattern, tensors)}")
        elif override.matcher == "op_type" and not _known_op_type(override.pattern, graph):
            types = sorted({op.op_type for op in graph.operations.values()})
            problems.append(f"{override.label}: op_type = {override.pattern!r} is no op type ONNX or ONNX Runtime "
                            f"knows{_hint(override.pattern, types, ignore_case=True)}")
    problems += _unknown_op_types(config, graph)
    for key in ("include", "exclude"):
        source = config.origins.get(f"dispatch.{key}", "config")
        for pattern in getattr(config, key):
            if not _any_match(pattern, op_names):
                problems.append(f"{source}: dispatch.{key}: {pattern!r} matches no op of {model}"
                                f"{_glob_note(pattern)}{_hint(pattern, op_names)}")
    if problems:
        raise ConfigError(" | ".join(problems))


OP_TYPE_LISTS = {"dispatch.quantize_op_types": "quantize_op_types", "dispatch.passive_op_types": "passive_op_types",
                 "fusion.activations": "fusion_activations", "fusion.fused_activations": "fused_activations"}


def _unknown_op_types(config, graph) -> list[str]:
    """The op types of the configuration's op-type lists that neither the model, ONNX nor ONNX Runtime knows (a
    typo, 'Convv', quantized nothing and said only 'coverage low'); a platform's own defaults are its business,
    and qtool's built-in ones are known (asking ONNX's schema registry took 7 MiB of a small model's peak)."""
    problems = []
    for key, field in OP_TYPE_LISTS.items():
        if config.weight_only and key == "dispatch.quantize_op_types":  # set from weight_only.op_types
            key = "weight_only.op_types"
        source = config.origins.get(key)
        if source is None or source == PLATFORM_SOURCE:
            continue
        for name in sorted(getattr(config, field)):
            if not _known_op_type(name, graph):
                import onnx

                known = sorted({op.op_type for op in graph.operations.values()}
                               | {schema.name for schema in onnx.defs.get_all_schemas()})
                problems.append(f"{source}: {key}: {name!r} is no op type ONNX or ONNX Runtime knows"
                                f"{_hint(name, known, ignore_case=True)}")
    return problems


def _known_op_type(name: str, graph) -> bool:
    """An op type of the model, of ONNX or of ONNX Runtime (its contrib ops); one the model lacks is no error: a
    configuration may serve several models."""
    if any(op.op_type == name for op in graph.operations.values()):
        return True
    import onnx

    if onnx.defs.has(name):
        return True
    from ..ort_schemas import ort_op_types  # only a name ONNX does not know pays for ONNX Runtime's schema list

    return any(op_type == name for _, op_type in ort_op_types())


def _any_match(pattern: str, names: list[str]) -> bool:
    return any(fnmatchcase(name, pattern) for name in names)


REGEX_SIGNS = ("re:", "^", "$", ".*", ".+", "\\", "|", "(")


def _glob_note(pattern: str) -> str:
    """Where a pattern that matched nothing reads as a regular expression: that it is taken as a glob."""
    if not any(sign in pattern for sign in REGEX_SIGNS):
        return ""
    return " (a glob in fnmatch syntax, '*' for any text, not a regular expression)"


def _hint(pattern: str, names: list[str], ignore_case: bool = False) -> str:
    """A did-you-mean over ``names`` (glob characters ignored; letter case too where asked), else a few names to
    show what they look like."""
    import difflib  # only an error pays its import

    plain = pattern.replace("*", "").replace("?", "")
    same_case = [n for n in names if ignore_case and n.lower() == plain.lower()]
    close = same_case or difflib.get_close_matches(plain, names, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    contained = [n for n in names if plain and plain.strip("./_") in n]
    shown = contained[:SHOWN_NAMES] or names[:SHOWN_NAMES]
    return f" (its names look like {', '.join(map(repr, shown))})" if shown else ""
