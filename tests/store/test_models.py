"""The model tables of the store, on SQLite and on PostgreSQL: models, the models of
tasks, task configurations, and the migration that adds them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from clearnb.errors import ModelNotFoundError, TaskNotFoundError
from clearnb.store import (
    SCHEMA_VERSION,
    ModelRecord,
    Store,
    TaskModelRecord,
    TaskRecord,
    open_store,
    schema,
)
from tests.store.direct import direct_engine, execute


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with open_store(store_url) as opened:
        yield opened


def model(name: str = "net", **fields: object) -> ModelRecord:
    return ModelRecord(name=name, **fields)  # type: ignore[arg-type]


def test_a_model_is_stored_and_read_back_with_every_field(store: Store) -> None:
    task = store.create_task(TaskRecord(project="p", name="train"))
    written = store.create_model(
        model(
            project="p",
            task_id=task.id,
            framework="PyTorch",
            tags=["best", "v1"],
            system_tags=["package"],
            comment="first",
            design='{"layers": 3}',
            labels={"cat": 0, "dog": 1},
            metadata={"acc": {"key": "acc", "value": "0.9", "type": "float"}},
            uri="/somewhere/net.pt",
            hash="cd" * 32,
            size=2**33,
            codec="file",
            iteration=12,
            published=True,
        )
    )
    assert store.get_model(written.id) == written
    changed = store.update_model(written.id, name="renamed", published=False, iteration=None)
    assert (changed.name, changed.published, changed.iteration) == ("renamed", False, None)
    assert changed.last_update >= written.last_update
    assert store.get_model(written.id) == changed
    with pytest.raises(ValueError, match="Unknown model field"):
        store.update_model(written.id, colour="red")
    with pytest.raises(ValueError, match="cannot change"):
        store.update_model(written.id, id="other")


def test_an_unknown_model_is_a_clear_error(store: Store) -> None:
    with pytest.raises(ModelNotFoundError, match="'nope'") as caught:
        store.get_model("nope")
    assert caught.value.fields == {"model_id": "nope"}
    with pytest.raises(ModelNotFoundError):
        store.update_model("nope", name="x")


def test_models_are_found_by_project_name_tags_state_and_metadata(store: Store) -> None:
    old = store.create_model(model("a", project="p", tags=["x"], created=1.0))
    published = store.create_model(
        model("a", project="p", tags=["x", "y"], published=True, created=2.0)
    )
    archived = store.create_model(model("b", project="p", system_tags=["archived"], created=3.0))
    elsewhere = store.create_model(
        model(
            "a",
            project="q",
            created=4.0,
            metadata={"stage": {"key": "stage", "value": "prod", "type": "str"}},
        )
    )

    def ids(**filters: object) -> list[str]:
        return [m.id for m in store.find_models(**filters)]  # type: ignore[arg-type]

    assert ids() == [elsewhere.id, published.id, old.id], "newest first, archived left out"
    assert ids(include_archived=True) == [elsewhere.id, archived.id, published.id, old.id]
    assert ids(project="p", name="a") == [published.id, old.id]
    assert ids(only_published=True) == [published.id]
    assert ids(tags=["y"]) == [published.id]
    assert ids(tags=["x", "-y"]) == [old.id]
    assert ids(tags=["__$all", "x", "y"]) == [published.id]
    assert ids(tags=["__$not", "y"], project="p") == [old.id]
    assert ids(metadata={"stage": "prod"}) == [elsewhere.id]
    assert ids(metadata={"stage": "dev"}) == []
    assert ids(limit=2) == [elsewhere.id, published.id]
    assert ids(limit=0) == []


def test_metadata_is_merged_or_replaced_in_one_step(store: Store) -> None:
    stored = store.create_model(model(metadata={"a": {"key": "a", "value": "1", "type": "int"}}))
    merged = store.merge_model_metadata(stored.id, {"b": {"key": "b", "value": "x", "type": "str"}})
    assert sorted(merged.metadata) == ["a", "b"]
    replaced = store.merge_model_metadata(
        stored.id, {"c": {"key": "c", "value": "y", "type": "str"}}, replace=True
    )
    assert list(replaced.metadata) == ["c"]
    assert store.get_model(stored.id).metadata == replaced.metadata


def test_models_are_connected_to_tasks_by_kind_and_name(store: Store) -> None:
    task = store.create_task(TaskRecord(project="p", name="train"))
    first, second = store.create_model(model("one")), store.create_model(model("two"))
    store.set_task_model(TaskModelRecord(task.id, "input", "weights", first.id))
    store.set_task_model(TaskModelRecord(task.id, "output", "best", second.id))
    store.set_task_model(TaskModelRecord(task.id, "input", "weights", second.id))
    links = store.get_task_models(task.id)
    assert [(link.kind, link.name, link.model_id) for link in links] == [
        ("input", "weights", second.id),
        ("output", "best", second.id),
    ], "connecting a name again replaces its model in place"
    assert [link.name for link in store.get_task_models(task.id, kind="output")] == ["best"]
    with pytest.raises(TaskNotFoundError):
        store.set_task_model(TaskModelRecord("missing", "input", "weights", first.id))
    with pytest.raises(ModelNotFoundError):
        store.set_task_model(TaskModelRecord(task.id, "input", "weights", "missing"))
    with pytest.raises(ValueError, match="input, output"):
        store.set_task_model(TaskModelRecord(task.id, "sideways", "weights", first.id))


def test_deleting_a_task_keeps_its_models_and_deleting_a_model_drops_its_links(
    store: Store,
) -> None:
    task = store.create_task(TaskRecord(project="p", name="train"))
    other = store.create_task(TaskRecord(project="p", name="use"))
    made = store.create_model(model("made", task_id=task.id))
    store.set_task_model(TaskModelRecord(task.id, "output", "made", made.id))
    store.set_task_model(TaskModelRecord(other.id, "input", "made", made.id))
    store.delete_task(task.id)
    assert store.get_model(made.id).task_id == task.id, "a model outlives its task"
    assert store.get_task_models(task.id) == []
    assert len(store.get_task_models(other.id)) == 1
    store.delete_model(made.id)
    assert store.get_task_models(other.id) == []
    with pytest.raises(ModelNotFoundError):
        store.get_model(made.id)


def test_a_task_keeps_its_configuration_objects(store: Store) -> None:
    configuration = {"General": {"name": "General", "value": '{"a": 1}', "type": "dictionary"}}
    task = store.create_task(TaskRecord(project="p", name="t", configuration=configuration))
    assert store.get_task(task.id).configuration == configuration
    plain = store.create_task(TaskRecord(project="p", name="u"))
    assert store.get_task(plain.id).configuration == {}
    store.update_task(task.id, configuration={})
    assert store.get_task(task.id).configuration == {}


def test_a_version_2_store_is_upgraded_keeping_its_tasks(store_url: str) -> None:
    engine = direct_engine(store_url)
    try:
        metadata = sa.MetaData()
        version_table = schema._version_table(metadata)
        schema._v1_tables(metadata)
        schema._v2_tables(metadata)
        for column in schema._v2_task_columns():
            metadata.tables["tasks"].append_column(column)
        with engine.begin() as conn:
            metadata.create_all(conn)
            conn.execute(sa.insert(version_table).values(id=1, version=2))
    finally:
        engine.dispose()
    execute(
        store_url,
        "INSERT INTO tasks (id, project, name, status, task_type, parameters, tags, runtime, "
        "comment, created, last_update) VALUES ('old', 'p', 'kept', 'completed', 'notebook', "
        "'{}', '[]', '{}', '', 1.0, 1.0)",
    )
    assert SCHEMA_VERSION == 3
    with open_store(store_url) as store:
        assert store.schema_version() == 3
        kept = store.get_task("old")
        assert (kept.name, kept.configuration) == ("kept", {})
        made = store.create_model(model("new", task_id="old"))
        store.set_task_model(TaskModelRecord("old", "output", "new", made.id))
        assert store.get_task_models("old")[0].model_id == made.id
