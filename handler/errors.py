"""What the pipeline raises for a request it will not (or no longer needs to) finish; the HTTP layer maps each."""

from __future__ import annotations


class InvalidRequest(ValueError):
    """A value the pipeline cannot serve (422 over HTTP), naming the field."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


class TooMuchWork(ValueError):
    """The request asks for more reranking than one request may (413, naming the field to lower)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


class ArtifactError(RuntimeError):
    """An artifact that is missing a part, corrupt, or disagrees with another; names the file (and field)."""

    def __init__(self, path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path, self.problem = str(path), problem


class IndexMismatchError(RuntimeError):
    """The stage-1 store was built for another encoder (sha256, prompts, dims): init fails, naming both."""


class Stage1Unavailable(RuntimeError):
    """The stage-1 store cannot answer now (a Qdrant cluster unreachable or too slow): 503 with
    Retry-After for /search; /rerank needs no stage 1 and keeps working."""


class Cancelled(RuntimeError):
    """The caller went away (its client disconnected): the work stops between stages and batches."""
