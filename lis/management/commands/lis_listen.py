"""``manage.py lis_listen [--host 127.0.0.1] [--port 2575]``: the MLLP listener for orders from the LIS.

python-hl7's asyncio MLLP server (hl7.mllp.start_hl7_server) reads each framed message; lis.services
answers it (a pending slide, or a cancel) and the ACK goes back on the same connection. Database work
runs on one thread beside the event loop (asgiref's sync_to_async), one message at a time.
"""
import asyncio
import signal

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import close_old_connections
from hl7.mllp import InvalidBlockError, start_hl7_server

from lis import services


def _receive(text: str) -> str:
    close_old_connections()  # a connection the database dropped while the listener idled
    return services.order_message_receive(text=text)


class Command(BaseCommand):
    help = "Listen for LIS orders (ORM^O01, OML^O21) over MLLP and answer each with an ACK."

    def add_arguments(self, parser):
        parser.add_argument("--host", default=settings.LIS_LISTEN_HOST)
        parser.add_argument("--port", type=int, default=settings.LIS_LISTEN_PORT)

    def handle(self, *args, host, port, **options):
        asyncio.run(self._serve(host, port))

    async def _connection(self, reader, writer):
        receive = sync_to_async(_receive, thread_sensitive=True)
        try:
            while True:
                try:
                    block = await reader.readblock()
                except (asyncio.IncompleteReadError, ConnectionError):
                    break  # the peer closed the connection
                except (InvalidBlockError, ValueError):
                    break  # not MLLP framing, or a block over the size limit: nothing can be answered
                answer = await receive(block.decode("utf-8", "replace"))
                writer.writeblock(answer.encode("utf-8"))
                await writer.drain()
        finally:
            writer.close()

    async def _serve(self, host, port):
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        server = await start_hl7_server(self._connection, host, port, encoding="utf-8")
        self.stdout.write(f"lis_listen: listening for MLLP on {host}:{port}", ending="\n")
        self.stdout.flush()
        async with server:
            await stop.wait()
        self.stdout.write("lis_listen: stopped")
