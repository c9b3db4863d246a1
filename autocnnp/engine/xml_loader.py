"""Load a config file safely with lxml, keeping source lines.

A config never executes anything by being parsed: DOCTYPE declarations (and so entities,
external or internal) are refused before parsing, the parser resolves no entities and reaches
no network, and oversized or pathological documents are refused with a clear message.
"""

from __future__ import annotations

import re
from pathlib import Path

from lxml import etree

from autocnnp.errors import ConfigError, ConfigProblem

MAX_BYTES = 1 << 20  # a training config is a few kilobytes
MAX_ELEMENTS = 20_000
MAX_DEPTH = 32

_DOCTYPE = re.compile(rb"<!(DOCTYPE|ENTITY)", re.IGNORECASE)


def _fail(path: Path, line: int | None, message: str, element: str = "") -> ConfigError:
    return ConfigError([ConfigProblem(path, line, element, message)])


def _line_of(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


def load_xml(path: Path) -> etree._ElementTree:
    """Parse ``path`` and return the tree; raise ConfigError (exit 2) with file:line."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise _fail(path, None, "config file not found") from None
    except OSError as exc:
        raise _fail(path, None, f"cannot read config: {exc.strerror}") from None
    if path.is_dir():
        raise _fail(path, None, "is a folder, not a config file")
    if size > MAX_BYTES:
        raise _fail(path, None, f"config is {size} bytes; refusing files over {MAX_BYTES} bytes "
                                "(a training config is a few kilobytes)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise _fail(path, None, f"cannot read config: {exc.strerror}") from None
    if not data.strip():
        raise _fail(path, 1, "config file is empty; a config starts with <system_config>")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise _fail(path, _line_of(data, nul),
                    f"not a text XML file (binary content at byte {nul})")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _fail(path, _line_of(data, exc.start),
                    f"not UTF-8 text (invalid byte at offset {exc.start}); save the config as UTF-8") from None
    match = _DOCTYPE.search(data)
    if match:
        raise _fail(path, _line_of(data, match.start()),
                    f"<!{match.group(1).decode().upper()}> declarations are not allowed in a config "
                    "(entities could expand without bound or read other files); remove it")

    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             dtd_validation=False, huge_tree=False, remove_comments=False,
                             collect_ids=False)
    try:
        tree = etree.fromstring(data, parser, base_url=str(path)).getroottree()
    except etree.XMLSyntaxError as exc:
        msg = re.sub(r", line \d+, column \d+$", "", exc.msg or str(exc))
        raise _fail(path, exc.lineno, f"malformed XML: {msg}") from None

    count = 0
    for element in tree.iter():
        count += 1
        if count > MAX_ELEMENTS:
            raise _fail(path, element.sourceline,
                        f"config has more than {MAX_ELEMENTS} elements; refusing it")
    for element in tree.iter():
        depth = sum(1 for _ in element.iterancestors())
        if depth > MAX_DEPTH:
            raise _fail(path, element.sourceline,
                        f"elements nested more than {MAX_DEPTH} deep; refusing it")
    return tree
