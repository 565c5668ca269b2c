"""A TCP proxy on loopback for fault tests: it forwards to a target port and can
delay every byte by a fixed time (each direction) or black-hole the traffic
(read and dropped, connections kept open), switchable while it runs.

    proxy = TcpProxy(redis_port).start()
    proxy.delay = 0.2       # 200 ms each way
    proxy.blackhole = True  # nothing passes, nothing is closed
    proxy.swallowed         # {connection number: bytes the client sent into the black hole}
    proxy.heal()            # closes every connection and ends the black hole, at once
    proxy.stop()
"""

import asyncio
import threading
import time


class TcpProxy:
    def __init__(self, target_port, host="127.0.0.1", port=None):
        self.target = (host, target_port)
        self.delay = 0.0
        self.blackhole = False
        self.port = port  # None: a free one (a proxy started again may take its old port)
        self.connections = 0  # accepted so far
        self.swallowed = {}   # connection number (1, 2, ...) -> bytearray the client sent into the black hole
        self._loop = None
        self._server = None
        self._thread = None
        self._writers = set()

    def start(self):
        ready = threading.Event()

        def run():
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._accept, "127.0.0.1", self.port or 0, reuse_address=True))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(5), "proxy did not start"
        return self

    def stop(self):
        if self._loop is None:
            return

        async def close():
            self._server.close()
            for w in list(self._writers):
                w.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop = None

    def close_all(self):
        """Closes every proxied connection (both sides)."""
        async def close():
            for w in list(self._writers):
                w.close()
        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)

    def heal(self):
        """Closes every proxied connection and ends the black hole in one step of the
        proxy's loop: nothing sent after the black hole began can reach the target on a
        connection whose earlier bytes were dropped (as TCP would never do)."""
        async def heal():
            for w in list(self._writers):
                w.close()
            self.blackhole = False
        asyncio.run_coroutine_threadsafe(heal(), self._loop).result(5)

    async def _accept(self, reader, writer):
        self.connections += 1
        sink = self.swallowed.setdefault(self.connections, bytearray())
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pump(reader, up_writer, sink), self._pump(up_reader, writer),
                             return_exceptions=True)
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.close()

    async def _pump(self, reader, writer, sink=None):
        # Chunks are stamped when read and written `delay` later, in order,
        # so the delay does not add up over a burst.
        queue = asyncio.Queue()

        async def forward():
            while True:
                stamp, data = await queue.get()
                if data is None:
                    break
                wait = stamp + self.delay - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        forwarder = asyncio.ensure_future(forward())
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if self.blackhole:
                    if sink is not None:
                        sink.extend(data)
                    continue
                queue.put_nowait((time.monotonic(), data))
        finally:
            queue.put_nowait((0, None))
            try:
                await forwarder
            except (ConnectionError, OSError):
                pass
            writer.close()
