"""Recommendations on request: ``GET /recommendations/{domain}/{user_id}?k=N&explain=true``.

A service that renders a user's page needs the user's recommendations now, whether or not an
event just arrived (Kafka Streams calls this interactive queries). The worker that owns the
user's partition (murmur2 of the user id, as for events) answers from the user's state as last
written, with the version the user is served, seen items left out, in the ``Recommendation``
contract with ``trigger.kind = "request"``. Any other worker forwards the request to the owner
named by the consumer group's current assignment (each worker advertises its URL in the group,
:attr:`stream.settings.MetricsSettings.advertised_address`) and relays the answer. While the
group rebalances or the owner restores its partition the answer is a 503 with Retry-After:
never a stale or empty answer presented as real. A forwarded request is not forwarded again.

Errors are JSON ``{"reason", "detail"}`` with a status: 400 for bad input, 404 for an unknown
domain or a user without history, 503 while no owner can answer. The access log names the
domain, the status and the time, never the user.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, quote

from stream.settings import Settings

log = logging.getLogger(__name__)

PREFIX = "/recommendations/"
FORWARDED_HEADER = "X-Xdrec-Forwarded"
RETRY_AFTER_SECONDS = 2
FORWARD_TIMEOUT_SECONDS = 5.0
_TRUE, _FALSE = {"true", "1", "yes"}, {"false", "0", "no"}

# (status, extra headers, JSON body)
Answer = tuple[int, list[tuple[str, str]], bytes]


class QueryError(Exception):
    """A request that gets no recommendation: its status, a bounded reason and what to do."""

    def __init__(self, status: int, reason: str, detail: str, retry_after: bool = False) -> None:
        super().__init__(f"{status} {reason}: {detail}")
        self.status = status
        self.reason = reason
        self.detail = detail
        self.retry_after = retry_after

    def answer(self) -> Answer:
        headers = [("Retry-After", str(RETRY_AFTER_SECONDS))] if self.retry_after else []
        body = json.dumps({"reason": self.reason, "detail": self.detail}).encode()
        return self.status, headers, body


@dataclass(frozen=True, slots=True)
class RecommendationQuery:
    domain: str
    user_id: str
    k: int
    explain: bool


@dataclass(frozen=True, slots=True)
class Forward:
    """The user's partition is another worker's: ask it at ``url``."""

    url: str


def parse_query(path: str, query_string: str, settings: Settings) -> RecommendationQuery:
    """The query a path asks (``path`` already percent-decoded, as WSGI gives it); raises
    QueryError for anything but a well-formed request for a routed domain."""
    parts = path[len(PREFIX) :].split("/") if path.startswith(PREFIX) else []
    if len(parts) != 2 or not all(parts):
        raise QueryError(404, "not_found", "ask GET /recommendations/{domain}/{user_id}")
    domain, user_id = parts
    routes = settings.recommendations.routes or {}
    if domain not in routes:
        raise QueryError(
            404, "unknown_domain", f"recommendations are made for {sorted(routes)} only"
        )
    limit = settings.limits.max_id_chars
    if len(user_id) > limit or any(ord(c) < 0x20 or ord(c) == 0x7F for c in user_id):
        raise QueryError(
            400, "bad_user_id", f"a user id is 1 to {limit} characters without control characters"
        )
    arguments = parse_qs(query_string, keep_blank_values=True)
    unknown = set(arguments) - {"k", "explain"}
    if unknown:
        raise QueryError(
            400, "bad_parameter", f"unknown parameters {sorted(unknown)}: use k, explain"
        )
    top = settings.metrics.max_request_k
    k_text = arguments.get("k", [str(settings.recommendations.top_k)])[-1]
    if not k_text.isdigit() or not 1 <= int(k_text) <= top:
        raise QueryError(400, "bad_k", f"k must be an integer from 1 to {top}")
    explain_text = arguments.get("explain", ["false"])[-1].lower()
    if explain_text not in _TRUE | _FALSE:
        raise QueryError(400, "bad_explain", "explain must be true or false")
    return RecommendationQuery(domain, user_id, int(k_text), explain_text in _TRUE)


def new_request_id() -> str:
    return f"request-{uuid.uuid4().hex}"


class QueryHandler:
    """The WSGI side of the endpoint: parse, ask ``answer`` (the runtime), forward when it
    names another worker, and log without the user."""

    def __init__(
        self,
        settings: Settings,
        answer: Callable[[RecommendationQuery, bool], bytes | Forward],
    ) -> None:
        self.settings = settings
        self.answer = answer

    def __call__(self, environ: dict) -> Answer:
        started = time.perf_counter()
        # WSGI decodes the path as latin-1 bytes; user ids are UTF-8.
        path = environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8", "replace")
        forwarded = environ.get("HTTP_" + FORWARDED_HEADER.upper().replace("-", "_")) == "1"
        domain, outcome = "-", "answered"
        try:
            query = parse_query(path, environ.get("QUERY_STRING", ""), self.settings)
            domain = query.domain
            result = self.answer(query, forwarded)
            if isinstance(result, Forward):
                outcome = "forwarded"
                answer = self._forward(result.url, query, environ)
            else:
                answer = 200, [], result
        except QueryError as error:
            outcome = error.reason
            answer = error.answer()
        log.info(
            "request path=/recommendations/{domain}/{user_id} domain=%s status=%d outcome=%s "
            "forwarded_in=%s seconds=%.4f",
            domain,
            answer[0],
            outcome,
            forwarded,
            time.perf_counter() - started,
        )
        return answer

    def _forward(self, url: str, query: RecommendationQuery, environ: dict) -> Answer:
        """Ask the owner and relay its answer, status and all."""
        headers = {FORWARDED_HEADER: "1"}
        if environ.get("HTTP_AUTHORIZATION"):
            headers["Authorization"] = environ["HTTP_AUTHORIZATION"]
        try:
            return ask(url, query, headers)
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            raise QueryError(
                503,
                "owner_unreachable",
                f"the worker that owns this user did not answer ({error}); retry",
                retry_after=True,
            ) from error


def ask(
    url: str,
    query: RecommendationQuery,
    headers: dict[str, str],
    timeout: float = FORWARD_TIMEOUT_SECONDS,
) -> Answer:
    """GET ``query`` from the worker at ``url``: (status, Retry-After if any, body). Raises
    URLError (or OSError) when nothing answers."""
    target = (
        f"{url.rstrip('/')}{PREFIX}{quote(query.domain, safe='')}/{quote(query.user_id, safe='')}"
        f"?k={query.k}&explain={'true' if query.explain else 'false'}"
    )
    request = urllib.request.Request(target, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, _retry_after(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, _retry_after(error.headers), error.read()


def _retry_after(headers: object) -> list[tuple[str, str]]:
    retry = headers.get("Retry-After") if hasattr(headers, "get") else None  # type: ignore[union-attr]
    return [("Retry-After", str(retry))] if retry else []
