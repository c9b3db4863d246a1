"""Generate the config reference page from the XSD, so the two cannot drift apart.

``docs/config-reference.md`` is this module's output; a test regenerates it and compares.
"""

from __future__ import annotations

from lxml import etree

from autocnnp.engine.schema import SCHEMA_PATH

XS = "{http://www.w3.org/2001/XMLSchema}"
EXAMPLE = """\
<system_config>
  <task name="imaging_segmentation">
    <parallelism-degree>2</parallelism-degree>
    <CNN_archi><name>unet</name><param name="depth">3</param></CNN_archi>
    <data format="pairs">
      <train><path>data/train</path></train>
      <valid><path>data/valid</path></valid>
      <test><path>data/test</path></test>
      <classes>background grey_matter white_matter</classes>
    </data>
    <hyperparameters>
      <property name="lr">1e-3</property>
      <property name="optimizer">adam</property>
      <property name="minibatch_size">8</property>
      <property name="end_epoch">30</property>
    </hyperparameters>
    <lr_policy name="grescale"><property name="warmup_epochs">2</property></lr_policy>
  </task>
</system_config>"""


def _doc(node: etree._Element) -> str:
    text = node.findtext(f"{XS}annotation/{XS}documentation") or ""
    return " ".join(text.split())


def _enum(node: etree._Element) -> list[str]:
    return [e.get("value") for e in node.iter(f"{XS}enumeration")]


def reference_markdown() -> str:
    """The reference page as Markdown."""
    tree = etree.parse(str(SCHEMA_PATH))
    named_types = {t.get("name"): t for t in tree.getroot() if t.get("name") and
                   t.tag in (f"{XS}complexType", f"{XS}simpleType")}
    rows: list[str] = []

    def content_of(element: etree._Element) -> etree._Element | None:
        inline = element.find(f"{XS}complexType")
        if inline is not None:
            return inline
        return named_types.get(element.get("type", ""))

    def walk(element: etree._Element, path: str, required: bool) -> None:
        name = element.get("name")
        here = f"{path}/{name}" if path else name
        ctype = content_of(element)
        occurs = "required" if required else "optional"
        if element.get("maxOccurs") == "unbounded":
            occurs += ", repeatable"
        attrs = []
        if ctype is not None:
            for attr in ctype.iter(f"{XS}attribute"):
                owner = _parent_element(attr)
                if owner is not None and owner is not element:
                    continue
                values = _enum(attr)
                attrs.append(f"`{attr.get('name')}`" + (" (required)" if attr.get("use") == "required" else "")
                             + (f": {', '.join(values)}" if values else ""))
        value = element.get("type", "")
        value = {"positiveInt": "positive integer", "name": "text", "pathHolder": "`<path>`",
                 "namedText": "text with `name`", "propertyList": "`<property name=...>` list"}.get(value, value)
        doc = _doc(element)
        rows.append(f"| `{here}` | {occurs} | {value or 'elements'} | {'; '.join(attrs) or '-'} | {doc} |")
        if ctype is None:
            return
        for group in ctype:
            for child in group.iter(f"{XS}element"):
                if child.getparent() is not None and child.get("name") and _parent_element(child) is element:
                    walk(child, here, child.get("minOccurs") != "0" and group.tag != f"{XS}choice"
                         and child.getparent().tag != f"{XS}choice")

    def _parent_element(node: etree._Element) -> etree._Element | None:
        parent = node.getparent()
        while parent is not None and parent.tag != f"{XS}element":
            parent = parent.getparent()
        return parent

    for top in tree.getroot().findall(f"{XS}element"):
        walk(top, "", True)
    header = ("# Config reference\n\n"
              "Generated from `autocnnp/engine/xsd/autocnnp.xsd` by `autocnnp schema --reference`;"
              " do not edit by hand.\n\n"
              "Rules: relative paths resolve against the config file's folder; modules and actions"
              " not written take their defaults (`autocnnp components`); the thesis spellings"
              " `train_srategy_def`, `minibarch_size`, `optimiser` and `Tr_Checkpoint` are accepted"
              " with a warning; every problem is reported at once as `FILE:LINE: <element>: ...`"
              " with exit status 2; DOCTYPE/entities are refused.\n\n"
              "| element | occurs | value | attributes | meaning |\n|---|---|---|---|---|\n")
    return header + "\n".join(rows) + f"\n\n## Example\n\n```xml\n{EXAMPLE}\n```\n"
