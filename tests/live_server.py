"""An app served by uvicorn in a thread on 127.0.0.1, with `charzoo serve`'s settings."""

import contextlib
import threading
import time

import uvicorn

from serving.app import server_config
from benchmarks.loadgen import free_port


@contextlib.contextmanager
def live_server(app, **settings):
    """Yields the base URL while `app` is served; `settings` go to `server_config`."""
    port = free_port()
    server = uvicorn.Server(server_config(app, port=port, log_level="critical", **settings))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
