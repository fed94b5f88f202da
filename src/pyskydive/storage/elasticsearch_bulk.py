"""One ``_bulk`` request of the Elasticsearch store, sent until it is written.

:class:`BulkSender` owns the retry policy: a request the cluster does not answer (down,
timeout) or answers 401/403/408/429/5xx is sent again after a backoff, from
``retry_interval`` doubling up to 30 s; in an answer, the items refused with 429/5xx are
sent again alone, those refused for their content are reported (``on_rejected``, counted
by flow, revision or resource rather than by document) and dropped, and the rest is done.
A topology element the mapping refuses is sent again unindexed (the op's ``fallback``). An
item refused because our alias is missing (``require_alias``) asks for the layout to be set
up again. A request refused as too large (413: the cluster's ``http.max_content_length``, or
a proxy's body limit before it) is sent again in halves, in order, down to single items;
only an item too large on its own is refused. Only :meth:`BulkSender.abandon` (a close that
timed out) stops the retries.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from pyskydive.storage import elasticsearch_docs as _docs

__all__ = ["BulkSender", "one_line", "serializers"]

log = logging.getLogger(__name__)

_MAX_BACKOFF = 30.0
_FILTER = ["errors", "items.*.status", "items.*.error.type", "items.*.error.reason"]


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def serializers() -> dict[str, Any]:
    """The client's serializers: orjson for JSON, and NDJSON bodies that are already bytes
    passed as they are (the client's own copies them line by line: ~2 µs per update)."""
    from elasticsearch.serializer import NdjsonSerializer, OrjsonSerializer

    class _RawNdjson(NdjsonSerializer):
        def dumps(self, data: Any) -> bytes:
            if isinstance(data, bytes) and data.endswith(b"\n"):
                return data
            out: bytes = super().dumps(data)
            return out

    return {"application/json": OrjsonSerializer(), "application/x-ndjson": _RawNdjson()}


class BulkSender:
    """Sends bodies or ops with ``client.bulk`` (thread-safe: several senders share it)."""

    def __init__(
        self,
        client: Any,
        retry_interval: float,
        *,
        on_failure: Callable[[BaseException], None],
        on_success: Callable[[], None],
        on_rejected: Callable[[int, str], None],
        on_missing_alias: Callable[[], bool],
    ) -> None:
        import elasticsearch

        self.client = client
        self.retry_interval = retry_interval
        self.errors: tuple[type[Exception], ...] = (
            elasticsearch.ApiError,  # an HTTP answer
            elasticsearch.TransportError,  # no answer
        )
        self._api_error = elasticsearch.ApiError
        self._abandoned = threading.Event()
        self._on_failure = on_failure
        self._on_success = on_success
        self._on_rejected = on_rejected
        self._on_missing_alias = on_missing_alias

    def reject(self, n: int, reason: str) -> None:
        """Report ``n`` items refused before being sent."""
        self._on_rejected(n, reason)

    def abandon(self) -> None:
        self._abandoned.set()

    @property
    def abandoned(self) -> bool:
        return self._abandoned.is_set()

    def sleep(self, attempt: int) -> None:
        """The backoff before attempt ``attempt + 1`` (cut short by :meth:`abandon`)."""
        self._abandoned.wait(min(_MAX_BACKOFF, self.retry_interval * 2 ** min(attempt, 6)))

    def retryable(self, exc: BaseException) -> bool:
        if isinstance(exc, self._api_error):
            status = exc.meta.status
            return status in (401, 403, 408, 429) or status >= 500
        return isinstance(exc, self.errors)

    def deliver(
        self,
        body: bytes | None,
        ops: list[_docs.Op] | None,
        *,
        metric_index: str = "",
        refresh: bool = False,
    ) -> bool:
        """Send until every item is written or refused; False if abandoned first.
        ``body`` is a flow body (split into ops only if an answer refuses some)."""
        attempt = 0
        while True:
            if self.abandoned:
                return False
            if body is None:
                assert ops is not None
                body = b"".join(op.data for op in ops)
            try:
                answer = self.client.bulk(
                    operations=body,  # NDJSON, as it is
                    require_alias=True,
                    filter_path=_FILTER,
                    refresh=True if refresh else None,
                )
            except self.errors as exc:
                if isinstance(exc, self._api_error) and exc.meta.status == 413:
                    if ops is None:
                        ops = _docs.split_ops(body, metric_index)
                    if len(ops) > 1:
                        half = len(ops) // 2
                        return all(
                            self.deliver(None, part, metric_index=metric_index, refresh=refresh)
                            for part in (ops[:half], ops[half:])
                        )
                if not self.retryable(exc):
                    count = len(ops) if ops is not None else body.count(b"\n") // 2
                    self._on_rejected(count, one_line(exc))
                    return True
                self._on_failure(exc)
                self.sleep(attempt)
                attempt += 1
                continue
            self._on_success()
            outcome = _docs.classify(answer.body)
            if not (outcome.retry or outcome.rejected or outcome.fallback):
                return True
            if ops is None:
                ops = _docs.split_ops(body, metric_index)
            again = [ops[p] for p in outcome.retry]
            for pos, reason in outcome.fallback:
                op = ops[pos]
                if op.fallback is not None:
                    again.append(_docs.Op(op.fallback, op.item, key=op.key))
                else:
                    outcome.rejected.append((pos, reason))
            if outcome.rejected:
                items = {ops[p].key or str(p) for p, _ in outcome.rejected}
                self._on_rejected(len(items), outcome.rejected[0][1])
            if outcome.missing_alias and not self._on_missing_alias():
                self.sleep(attempt)
            if not again:
                return True
            if outcome.retry:
                self._on_failure(RuntimeError(f"{len(outcome.retry)} items refused for now"))
                self.sleep(attempt)
                attempt += 1
            ops, body = again, None
