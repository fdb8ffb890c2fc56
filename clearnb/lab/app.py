"""The Jupyter server extension: clearnb's routes on the server's own port and login."""

from __future__ import annotations

from typing import Any

from jupyter_server.extension.application import ExtensionApp

from clearnb.lab.handlers import LabState, routes

CONTENTS_EVENTS = "https://events.jupyter.org/jupyter_server/contents_service/v1"
"""The server's events of files created, renamed, copied and deleted."""


class ClearnbLab(ExtensionApp):
    """Adds ``/clearnb/api/...`` to a Jupyter server, for the store its environment names
    (``CLEARNB_HOME``, ``CLEARNB_STORE_URL``)."""

    name = "clearnb.lab"
    load_other_extensions = True

    def initialize_handlers(self) -> None:
        """Open the store and add the routes."""
        from clearnb.backend import Backend
        from clearnb.config import Config
        from clearnb.lab.launch import Launcher

        server = self.serverapp
        assert server is not None, "the extension is initialised by its server"
        backend = Backend.for_config(Config.from_env())
        self.lab_state = LabState(backend, Launcher(backend), str(server.root_dir))
        self.handlers.extend(routes(self.lab_state))
        if server.event_logger is not None:
            server.event_logger.add_listener(
                schema_id=CONTENTS_EVENTS, listener=self._contents_changed
            )

    async def _contents_changed(self, logger: Any, schema_id: str, data: dict[str, Any]) -> None:
        """A notebook renamed or moved through the server: its templates follow it."""
        del logger, schema_id
        if data.get("action") != "rename" or not data.get("source_path"):
            return
        import asyncio

        from clearnb.lab.launch import notebook_renamed

        state = self.lab_state
        try:
            await asyncio.get_running_loop().run_in_executor(
                None,
                notebook_renamed,
                state.backend,
                state.root_dir,
                data["source_path"],
                data["path"],
            )
        except Exception:  # the rename itself succeeded; only the templates did not follow
            self.log.warning("clearnb could not move the templates of %s", data, exc_info=True)

    async def stop_extension(self) -> None:
        """Stop following the store and end the runs started from here."""
        state: Any = getattr(self, "lab_state", None)
        if state is not None:
            await state.feed.close()
            await state.launcher.close()
