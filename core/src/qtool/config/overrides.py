"""Override entries: one matcher (op type, op-name glob or tensor name) and what it changes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any

from .schema import MATCHERS


@dataclass(frozen=True)
class Override:
    """One ``[[override]]`` item. Scheme parts are partial tables, "float", or None (not set)."""

    matcher: str
    pattern: str
    activation: Mapping[str, Any] | str | None = None
    weight: Mapping[str, Any] | str | None = None
    bias_mode: str | None = None
    keep_float: bool = False
    label: str = field(default="override", compare=False)

    @classmethod
    def from_item(cls, item: Mapping[str, Any], label: str) -> Override:
        matcher = next(m for m in MATCHERS if m in item)
        return cls(matcher, item[matcher], item.get("activation"), item.get("weight"),
                   (item.get("bias") or {}).get("mode"), bool(item.get("keep_float", False)), label)

    def matches_op(self, op) -> bool:
        if self.matcher == "op_type":
            return op.op_type == self.pattern
        return self.matcher == "op_name" and fnmatchcase(op.name, self.pattern)

    def matches(self, op, tensor: str | None) -> bool:
        """True when this override applies to ``tensor`` at ``op`` (tensor matchers need the tensor)."""
        if self.matcher == "tensor":
            return tensor == self.pattern
        return self.matches_op(op)

    def scheme_part(self, role: str) -> Mapping[str, Any] | str | None:
        return self.activation if role == "activation" else self.weight

    def to_dict(self) -> dict[str, Any]:
        item: dict[str, Any] = {self.matcher: self.pattern}
        for role in ("activation", "weight"):
            part = self.scheme_part(role)
            if part is not None:
                item[role] = part if isinstance(part, str) else dict(part)
        if self.bias_mode is not None:
            item["bias"] = {"mode": self.bias_mode}
        if self.keep_float:
            item["keep_float"] = True
        return item

    def describe(self) -> str:
        changes = [f"{role} {part if isinstance(part, str) else dict(part)}"
                   for role in ("activation", "weight") if (part := self.scheme_part(role)) is not None]
        if self.bias_mode is not None:
            changes.append(f"bias mode {self.bias_mode}")
        if self.keep_float:
            changes.append("keep float")
        return f"{self.matcher} = {self.pattern!r}: {'; '.join(changes)}  ({self.label})"
