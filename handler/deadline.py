"""Answers within a deadline: how fast this process reranks, and how much of the rest fits the time left.

The rate is measured per process (every rerank run updates it, the SnapStart priming request included),
so it adapts to the CPU the function landed on: an AVX2-only host reranks several times slower than a
VNNI one (docs/results.md §8, §15).
"""

from __future__ import annotations

import threading


class RerankRate:
    """Reranker tokens per second in this process: an exponentially weighted mean over runs."""

    def __init__(self, prior_tokens_per_s: float, weight: float = 0.3):
        self.tokens_per_s, self.weight = prior_tokens_per_s, weight
        self.observed = 0
        self._lock = threading.Lock()

    def observe(self, tokens: int, seconds: float) -> None:
        if tokens <= 0 or seconds <= 0:
            return
        rate = tokens / seconds
        with self._lock:
            first = self.observed == 0  # the prior is a guess: the first measurement replaces it
            self.tokens_per_s = rate if first else (1 - self.weight) * self.tokens_per_s + self.weight * rate
            self.observed += 1

    def seconds_for(self, tokens: int) -> float:
        return tokens / self.tokens_per_s

    def pairs_within(self, lengths: list[int], seconds: float) -> int:
        """How many of these pairs (in this order, by token count) fit `seconds` at the current rate."""
        budget, count = seconds * self.tokens_per_s, 0
        for length in lengths:
            budget -= length
            if budget < 0:
                break
            count += 1
        return count
