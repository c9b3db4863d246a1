"""The published XSD and the translation of its messages into ones a user can act on."""

from __future__ import annotations

import difflib
import re
from functools import lru_cache
from pathlib import Path

from lxml import etree

from autocnnp.errors import ConfigProblem

SCHEMA_PATH = Path(__file__).with_name("xsd") / "autocnnp.xsd"
ROOT = "system_config"


@lru_cache(maxsize=1)
def schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(SCHEMA_PATH)))


def did_you_mean(name: str, choices: list[str] | tuple[str, ...]) -> str:
    """``"; did you mean 'x'?"`` for a near-miss, else ``"."``."""
    lowered = {c.lower(): c for c in choices}
    match = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    return f"; did you mean {lowered[match[0]]!r}?" if match else "."


def unknown(kind: str, name: str, choices: list[str] | tuple[str, ...],
            hints: list[str] | tuple[str, ...] | dict[str, str] = ()) -> str:
    """``unknown KIND 'name'; did you mean 'x'? Known: a, b`` (hints also feed the guess).

    ``hints`` given as a dict maps accepted aliases to their canonical names: a near-miss of
    an alias suggests the canonical name (``lerning_rate`` -> ``lr``, not ``learning_rate``).
    """
    canonical = hints if isinstance(hints, dict) else {}
    guess = did_you_mean(name, list(choices) + list(hints))
    for alias, target in canonical.items():
        if guess == f"; did you mean {alias!r}?":
            guess = f"; did you mean {target!r}?"
    return f"unknown {kind} {name!r}{guess} Known: {', '.join(choices)}"


@lru_cache(maxsize=None)
def _children(tag: str) -> tuple[tuple[str, bool], ...]:
    """(child element, required) pairs the XSD declares for elements named ``tag``."""
    xs = "{http://www.w3.org/2001/XMLSchema}"
    doc = etree.parse(str(SCHEMA_PATH))
    named = {t.get("name"): t for t in doc.getroot() if t.get("name")}
    for element in doc.getroot().iter(f"{xs}element"):
        if element.get("name") != tag:
            continue
        content = element.find(f"{xs}complexType")
        if content is None:
            content = named.get(element.get("type", ""))
        if content is None:
            return ()
        found = []
        for child in content.iter(f"{xs}element"):
            owner = child.getparent()
            while owner is not None and owner.tag != f"{xs}element":
                owner = owner.getparent()
            if owner is element or (owner is None and content is not element.find(f"{xs}complexType")):
                in_choice = child.getparent().tag == f"{xs}choice"
                found.append((child.get("name"), child.get("minOccurs") != "0" and not in_choice))
        return tuple(found)
    return ()


_EXPECTED = re.compile(r"Expected is (?:one of )?\( (.*?) \)")
_ELEMENT = re.compile(r"^Element '([^']+)'(?:, attribute '([^']+)')?: ")
_TYPES = {"xs:positiveInteger": "a positive integer (1, 2, ...)", "positiveInt": "a positive integer (1, 2, ...)",
          "xs:integer": "an integer", "xs:decimal": "a number", "xs:boolean": "true or false",
          "name": "a non-empty name"}


def _translate(entry: etree._LogEntry, tree: etree._ElementTree) -> tuple[str, str]:
    """(element label, message) for one XSD error."""
    message = entry.message
    match = _ELEMENT.match(message)
    element, attribute = (match.group(1), match.group(2)) if match else ("", None)
    rest = message[match.end():] if match else message
    node = None
    if entry.path:
        found = tree.xpath(entry.path)
        node = found[0] if found else None
    expected = _EXPECTED.search(rest)
    choices = [c.strip() for c in expected.group(1).split(",")] if expected else []

    if "This element is not expected" in rest:
        parent = node.getparent() if node is not None else None
        if parent is not None:
            first = next((c for c in parent if c is not node and c.tag == element), None)
            if first is not None and first.sourceline < node.sourceline:
                return element, f"duplicate <{element}> (first at line {first.sourceline}); remove one"
        where = f" inside <{parent.tag}>" if parent is not None else ""
        if not choices and parent is not None:
            choices = [name for name, _ in _children(str(parent.tag))]
        if choices:
            return element, (f"unknown element <{element}>{where}{did_you_mean(element, choices)} "
                             f"Allowed: {', '.join(choices)}")
        return element, f"unexpected element <{element}>{where}"
    if "Missing child element" in rest:
        required = [name for name, needed in _children(element) if needed]
        present = {c.tag for c in node} if node is not None else set()
        missing = [c for c in choices if c in required and c not in present] or choices
        names = ", ".join(f"<{c}>" for c in missing)
        return element, f"missing required element {names}"
    if attribute and "is not allowed" in rest:
        return element, f"unknown attribute {attribute!r}"
    if "is required but missing" in rest:
        attr = re.search(r"attribute '([^']+)'", rest)
        return element, f"missing required attribute {attr.group(1) if attr else ''!r}"
    enum = re.search(r"The value '([^']*)' is not an element of the set \{(.*)\}", rest)
    if enum:
        options = [o.strip().strip("'") for o in enum.group(2).split(",")]
        what = f"{attribute}=" if attribute else ""
        return element, (f"{what}{enum.group(1)!r} is not allowed{did_you_mean(enum.group(1), options)} "
                         f"Known: {', '.join(options)}")
    atomic = re.search(r"'([^']*)' is not a valid value of the (?:atomic|local atomic) type '([^']+)'", rest)
    if atomic:
        wanted = _TYPES.get(atomic.group(2), atomic.group(2))
        what = f"attribute {attribute!r}: " if attribute else ""
        return element, f"{what}{atomic.group(1)!r} is not valid; expected {wanted}"
    if "[facet 'minLength']" in rest:
        return element, "must not be empty"
    if "Character content other than whitespace is not allowed" in rest:
        return element, f"<{element}> holds elements, not text"
    if "Element content is not allowed" in rest:
        return element, f"<{element}> holds text, not elements"
    return element, rest.rstrip(".")


def check_schema(tree: etree._ElementTree, source: Path) -> list[ConfigProblem]:
    """Every schema problem in ``tree``, as located, readable problems."""
    root = tree.getroot()
    if root.tag != ROOT:
        return [ConfigProblem(source, root.sourceline, root.tag,
                              f"wrong root element <{root.tag}>{did_you_mean(str(root.tag), [ROOT])} "
                              f"A config starts with <{ROOT}>")]
    xsd = schema()
    if xsd.validate(tree):
        return []
    problems = []
    for entry in xsd.error_log:
        element, message = _translate(entry, tree)
        problems.append(ConfigProblem(source, entry.line, element, message))
    return problems
