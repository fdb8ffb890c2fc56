"""The builder tab: add steps from the notebooks of a folder, save and load, show the code."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ipywidgets as widgets

from clearnb.errors import ClearnbError, PipelineError
from clearnb.notebook.files import load_notebook
from clearnb.notebook.parameters import DeclaredParameter, NotebookParameters, parse_text
from clearnb.pipeline import references

if TYPE_CHECKING:
    from clearnb.pipeline.controller import PipelineController


def typed_input(declared: DeclaredParameter) -> widgets.Widget:
    """An input typed like the parameter's default (checkbox, whole number, number, text).

    A default the input cannot hold (None, an expression such as ``2 * 5``) is shown as the
    placeholder of an empty text input: what the input starts with is never an override.
    """
    default = declared.default
    kind = declared.type_name
    if declared.literal and default is not None:
        if kind == "bool" and isinstance(default, bool):
            return widgets.Checkbox(value=default, indent=False)
        if kind == "int" and isinstance(default, int) and not isinstance(default, bool):
            return widgets.IntText(value=default)
        if kind == "float" and isinstance(default, int | float) and not isinstance(default, bool):
            return widgets.FloatText(value=float(default))
        if isinstance(default, str):
            return widgets.Text(value=default)
        return widgets.Text(value=repr(default))
    return widgets.Text(value="", placeholder=f"{declared.source} (the notebook's default)")


class ParameterRow(widgets.HBox):  # type: ignore[misc]
    """One parameter: a typed input, or a ``${...}`` reference checked as it is typed."""

    def __init__(self, key: str, declared: DeclaredParameter, builder: StepBuilder) -> None:
        self.key = key
        self.declared = declared
        self.builder = builder
        self.value = typed_input(declared)
        self.value.layout = widgets.Layout(width="180px")
        self.initial = self.value.value
        """What the input showed before anyone touched it: the notebook's own default."""
        self.given = False
        """True once the form was filled with a step's own override (Edit selected)."""
        self.reference = widgets.Text(
            placeholder="or ${step.artifacts.name.url}", layout=widgets.Layout(width="260px")
        )
        self.check = widgets.HTML()
        self.reference.observe(lambda _: self.validate(), names="value")
        label = widgets.HTML(
            f"<code>{html.escape(key)}</code> <small>({html.escape(declared.type_name)})</small>",
            layout=widgets.Layout(width="230px"),
        )
        super().__init__([label, self.value, self.reference, self.check])

    def validate(self) -> bool:
        """Check the reference against the pipeline's steps; show the verdict."""
        text = self.reference.value.strip()
        if not text:
            self.check.value = ""
            return True
        try:
            found = references.find(text)
        except ClearnbError as exc:
            self.check.value = f"<span style='color:#b91c1c'>✗ {html.escape(str(exc))}</span>"
            return False
        steps = self.builder.pipeline.get_pipeline_dag()
        for ref in found:
            if ref.step == "pipeline":
                if ref.name not in self.builder.pipeline.get_parameters():
                    self.check.value = (
                        f"<span style='color:#b91c1c'>✗ no pipeline parameter "
                        f"{html.escape(ref.name)!s}</span>"
                    )
                    return False
            elif ref.step not in steps:
                known = ", ".join(steps) or "none yet"
                self.check.value = (
                    f"<span style='color:#b91c1c'>✗ no step {html.escape(ref.step)} "
                    f"(steps: {html.escape(known)})</span>"
                )
                return False
        self.check.value = "<span style='color:#15803d'>✓</span>" if found else ""
        return True

    def override(self) -> tuple[bool, Any]:
        """(changed, value): the reference if given, else the input if it was changed from
        what it first showed (or holds a step's own override); an untouched input is no
        override, so the notebook keeps its default whatever it is."""
        text = self.reference.value.strip()
        if text:
            return True, text
        value = self.value.value
        if not self.given and value == self.initial:
            return False, None
        if isinstance(self.value, widgets.Text) and not isinstance(self.declared.default, str):
            return True, parse_text(value)  # typed as the notebook's type when it is set
        return True, value

    def fill(self, value: Any) -> None:
        """Show a step's own override ``value`` (a reference goes to the reference box)."""
        if isinstance(value, str) and "${" in value:
            self.reference.value = value
        elif isinstance(self.value, widgets.Text) and not isinstance(value, str):
            self.value.value = repr(value)
        else:
            self.value.value = value
        self.given = True


class StepBuilder(widgets.VBox):  # type: ignore[misc]
    """Add, remove, save, load and show the code of a pipeline's steps."""

    def __init__(self, pipeline: PipelineController, on_change: Any) -> None:
        self.pipeline = pipeline
        self.on_change = on_change
        self.folder = widgets.Text(value=str(Path.cwd()), description="folder")
        self.notebook = widgets.Dropdown(description="notebook", options=[])
        self.name = widgets.Text(description="step name")
        self.parents = widgets.SelectMultiple(description="parents", options=[], rows=4)
        self.form = widgets.VBox()
        self.rows: list[ParameterRow] = []
        self.message = widgets.HTML()
        self.path = widgets.Text(value="pipeline.json", description="file")
        self.code = widgets.Textarea(layout=widgets.Layout(width="100%", height="180px"))
        add = widgets.Button(description="Add step", icon="plus", button_style="primary")
        auto = widgets.Layout(width="auto")
        remove = widgets.Button(description="Remove selected step", icon="trash", layout=auto)
        edit = widgets.Button(description="Edit selected step", icon="pencil", layout=auto)
        edit.on_click(lambda _: self.edit_selected())
        self.editing = ""
        save = widgets.Button(description="Save", icon="save")
        load = widgets.Button(description="Load", icon="folder-open")
        code = widgets.Button(description="Show code", icon="code")
        add.on_click(lambda _: self.add_step())
        remove.on_click(lambda _: self.remove_selected())
        save.on_click(lambda _: self._guard(lambda: self.pipeline.save(self.path.value)))
        load.on_click(lambda _: self.load())
        code.on_click(lambda _: self.show_code())
        self.folder.observe(lambda _: self.scan(), names="value")
        self.notebook.observe(lambda _: self.build_form(), names="value")
        self.selected = ""
        super().__init__(
            [
                widgets.HBox([self.folder, self.notebook]),
                widgets.HBox([self.name, self.parents]),
                self.form,
                widgets.HBox([add, edit, remove]),
                widgets.HBox([self.path, save, load, code]),
                self.message,
                self.code,
            ]
        )
        self.scan()
        self.refresh_steps()

    def _guard(self, action: Any) -> None:
        try:
            action()
            self.message.value = "<span style='color:#15803d'>done</span>"
        except Exception as exc:  # show every problem where the user looks
            self.message.value = (
                f"<pre style='color:#b91c1c;white-space:pre-wrap'>{html.escape(str(exc))}</pre>"
            )
        self.refresh_steps()
        self.on_change()

    def scan(self) -> None:
        """List the notebooks of the folder."""
        folder = Path(self.folder.value).expanduser()
        found = sorted(p.name for p in folder.glob("*.ipynb")) if folder.is_dir() else []
        self.notebook.options = found
        self.build_form()

    def refresh_steps(self) -> None:
        """Offer the pipeline's steps as parents."""
        self.parents.options = list(self.pipeline.get_pipeline_dag())

    def build_form(self) -> None:
        """One typed row per parameter the chosen notebook declares."""
        self.rows = []
        if not self.notebook.value:
            self.form.children = []
            return
        path = Path(self.folder.value).expanduser() / self.notebook.value
        try:
            declared = NotebookParameters.of(load_notebook(path))
        except ClearnbError as exc:
            self.form.children = [widgets.HTML(f"<i>{html.escape(str(exc))}</i>")]
            return
        if not self.name.value:
            self.name.value = path.stem
        for section, params in declared.sections.items():
            for name, param in params.items():
                self.rows.append(ParameterRow(f"{section}/{name}", param, self))
        self.form.children = self.rows or [widgets.HTML("<i>no parameters</i>")]

    def add_step(self) -> None:
        """Add the step described by the form to the pipeline."""

        def add() -> None:
            if not self.notebook.value:
                raise ClearnbError("choose a notebook first")
            if not all(row.validate() for row in self.rows):
                raise ClearnbError("fix the references marked ✗ first")
            overrides = {}
            for row in self.rows:
                changed, value = row.override()
                if changed:
                    overrides[row.key] = value
            path = Path(self.folder.value).expanduser() / self.notebook.value
            step = {
                "name": self.name.value.strip() or path.stem,
                "notebook": str(path),
                "parents": list(self.parents.value),
                "parameter_override": overrides,
            }
            if self.editing:
                self.pipeline.replace_step(self.editing, **step)
                self.editing = ""
            else:
                self._add_checked(step)
            self.name.value = ""

        self._guard(add)

    def _add_checked(self, step: dict[str, Any]) -> None:
        """Add a notebook step, refused at once (and not added) if it has problems."""
        if step["name"] in self.pipeline.get_pipeline_dag():
            raise ClearnbError(f"a step named {step['name']!r} exists already")
        self.pipeline.add_step(**step)
        problems = self.pipeline.check_step(step["name"])
        if problems:
            self.pipeline.remove_step(step["name"])
            raise PipelineError.collect(problems, "problem")

    def edit_selected(self) -> None:
        """Fill the form with the selected step; "Add step" then replaces it."""

        def edit() -> None:
            node = self.pipeline.get_pipeline_dag().get(self.selected)
            if node is None or not node.notebook:
                raise ClearnbError("select a notebook step in the DAG first")
            path = Path(node.notebook)
            self.folder.value = str(path.parent)
            self.notebook.value = path.name
            self.name.value = node.name
            self.parents.value = tuple(p for p in node.parents if p in self.parents.options)
            for row in self.rows:
                if row.key in node.parameters:
                    row.fill(node.parameters[row.key])
            self.editing = node.name

        self._guard(edit)

    def remove_selected(self) -> None:
        """Remove the step selected in the canvas."""

        def remove() -> None:
            if not self.selected:
                raise ClearnbError("select the step to remove: click it in the DAG first")
            self.pipeline.remove_step(self.selected)

        self._guard(remove)

    def load(self) -> None:
        """Replace the steps and parameters with those of the file."""

        def load() -> None:
            loaded = type(self.pipeline).from_file(self.path.value)
            self.pipeline.replace_definition(loaded)

        self._guard(load)

    def show_code(self) -> None:
        """Show the Python code that builds this pipeline."""
        self.code.value = self.pipeline.to_code()
