"""qtool's text platform: one readable line per quantized tensor, and a reader back into a graph."""

from .errors import TextFormatError
from .platform import TextPlatform
from .read import read_table
from .write import FORMAT_VERSION, table_text, write_table

__all__ = ["FORMAT_VERSION", "TextFormatError", "TextPlatform", "read_table", "table_text", "write_table"]
