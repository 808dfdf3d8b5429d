"""Reading ahead on a thread of its own: the ingestion's chunks, the EDA survey's column chunks."""

from __future__ import annotations

import queue
import threading
from typing import Generator, Iterator, TypeVar

T = TypeVar("T")


def read_ahead(chunks: Generator[T, None, None], depth: int = 1, name: str = "read-ahead") -> Iterator[T]:
    """``chunks``, read on a thread of their own up to ``depth`` chunks ahead of the consumer.

    Reading (inflating, decoding, splitting lines, the C codec's work: what releases the GIL)
    then overlaps the consumer's work instead of waiting for it. An error while reading is raised in the
    consumer's thread when it reaches that point; when the consumer stops early (close this
    generator), the reader stops at its next chunk.
    """
    handoff: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            for chunk in chunks:
                if not put(chunk):
                    return
        except BaseException as error:  # handed to the consumer, which raises it
            put(error)
        else:
            put(done)
        finally:
            chunks.close()

    reader = threading.Thread(target=read, name=name, daemon=True)
    reader.start()
    try:
        while True:
            item = handoff.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()
