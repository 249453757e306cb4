"""A griffe extension for the API reference. This project's docstrings end with an
`Example:` whose `>>>` lines sit at the section's own indentation (as Keras' docstrings do);
griffe's Google parser renders `>>>` lines as code only inside an `Examples:` section with
indented content. This rewrites the one into the other. Loaded by mkdocs.yml."""

import re

import griffe

# "Example:" on its own line, then the rest of the docstring (the example is its last section).
_EXAMPLE = re.compile(r"^([ \t]*)Examples?:[ \t]*\n(.*)\Z", re.M | re.S)


def _indent(match: re.Match) -> str:
    margin, body = match.group(1), match.group(2)
    lines = body.split("\n")
    first = next((line for line in lines if line.strip()), "")
    if first[len(margin) :][:1].isspace():  # already indented under its header
        return match.group(0)
    indented = [margin + "    " + line[len(margin) :] if line.strip() else line for line in lines]
    return f"{margin}Examples:\n" + "\n".join(indented)


class ExampleSections(griffe.Extension):
    def on_instance(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _EXAMPLE.sub(_indent, obj.docstring.value, count=1)
