"""Serving a fake outside service (WeChat, ICBC) on a free loopback port, in a daemon thread."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, ClassVar, TypeVar

_S = TypeVar("_S", bound="LoopbackService")


class LoopbackService:
    """Start/stop and the base URL of a fake service; the subclass names its request handler,
    which reaches the service as ``self.server.fake``."""

    handler_class: ClassVar[type[BaseHTTPRequestHandler]]
    thread_name: ClassVar[str] = "fake-service"

    def __init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL of the running server."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        host, port = self._server.server_address[:2]
        assert isinstance(host, str)  # a TCP server, never a Unix socket
        return f"http://{host}:{port}"

    def start(self) -> str:
        """Serve on a free loopback port in a daemon thread; returns the base URL."""
        if self._server is None:
            server = ThreadingHTTPServer(("127.0.0.1", 0), self.handler_class)
            server.daemon_threads = True
            server.fake = self  # type: ignore[attr-defined]
            self._server = server
            # A short poll keeps stop() quick: tests start and stop one server each.
            self._thread = threading.Thread(
                target=server.serve_forever, args=(0.05,), name=self.thread_name, daemon=True
            )
            self._thread.start()
            self.started()
        return self.url

    def started(self) -> None:
        """Called once the server is up (a subclass may register itself)."""

    def stopping(self) -> None:
        """Called before the server goes down."""

    def stop(self) -> None:
        """Stop serving and close the port."""
        server, thread = self._server, self._thread
        if server is not None:
            self.stopping()
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join()

    def __enter__(self: _S) -> _S:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        self.stop()
