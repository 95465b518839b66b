"""twostage: two-stage retrieval (bi-encoder recall, cross-encoder rerank, relevance floor).

`from twostage import TwoStage` is the Python API (twostage/library.py); `twostage` on the command line
is twostage/cli.py.
"""

from twostage.library import Reranked, Result, SearchAnswer, TwoStage

__all__ = ["Reranked", "Result", "SearchAnswer", "TwoStage"]
