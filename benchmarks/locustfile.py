"""Locust load test for `/rerank`: real Home Depot queries with their BM25 candidates from the catalogue.

    locust -f benchmarks/locustfile.py --host http://127.0.0.1:8000 --headless -u 8 -r 8 -t 60s \
        --csv bench-results/locust --p99-budget-ms 500 --max-fail-ratio 0.01

A headless run exits non-zero when the aggregated p99 or the error rate breaks its budget.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from locust import HttpUser, between, events, task

PAYLOADS: list[dict] = []


@events.init_command_line_parser.add_listener
def _add_arguments(parser):
    parser.add_argument("--data", default="../shared/data/homedepot/pairs.csv.gz", help="Home Depot judgments CSV.")
    parser.add_argument("--candidates", type=int, default=100, help="Documents per request (BM25 top-k).")
    parser.add_argument("--queries", type=int, default=200, help="Distinct validation queries to draw from.")
    parser.add_argument("--p99-budget-ms", type=float, default=500.0, help="Fail the run when p99 exceeds this.")
    parser.add_argument("--max-fail-ratio", type=float, default=0.01, help="Fail the run when more requests fail.")


@events.init.add_listener
def _load_payloads(environment, **_):
    from rankstill.benchmarks.latency import build_payloads

    options = environment.parsed_options
    if options is None:
        return
    for query, documents in build_payloads(Path(options.data), options.queries, options.candidates):
        PAYLOADS.append({"query": query, "documents": documents, "return_documents": False})


@events.quitting.add_listener
def _enforce_budgets(environment, **_):
    options, total = environment.parsed_options, environment.stats.total
    p99 = total.get_response_time_percentile(0.99) or 0.0
    problems = []
    if total.num_requests == 0:
        problems.append("no requests were made")
    if total.fail_ratio > options.max_fail_ratio:
        problems.append(f"fail ratio {total.fail_ratio:.3f} > {options.max_fail_ratio}")
    if p99 > options.p99_budget_ms:
        problems.append(f"p99 {p99:.0f} ms > {options.p99_budget_ms} ms")
    if problems:
        logging.error("budget failed: %s", "; ".join(problems))
        environment.process_exit_code = 1
    else:
        logging.info("budgets met: p99 %.0f ms, fail ratio %.3f over %d requests", p99, total.fail_ratio, total.num_requests)


class RerankUser(HttpUser):
    """A search backend: one rerank call per search, with a short think time."""

    wait_time = between(0.0, 0.05)

    @task
    def rerank(self):
        with self.client.post("/rerank", json=random.choice(PAYLOADS), name="/rerank", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {response.text[:200]}")
            elif len(response.json().get("results", [])) == 0:
                response.failure("empty results")
