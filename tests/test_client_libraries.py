"""The reranker clients users have, each installed into its own venv as users install it, against the
app under a real uvicorn on loopback: LlamaIndex's TEI reranker, LangChain's Infinity reranker and
LangChain's Cohere reranker. (Cohere's own v1 and v2 SDKs run from the dev venv: tests/test_clients.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from handler.api import create_app
from tests.conftest import uvicorn_on_loopback

pytestmark = pytest.mark.slow

QUERY = "Veltrazine dose for a child"
DOCUMENTS = [
    "Veltrazine for children aged 6 to 11: 5 mg once a day with food.",
    "The ThermoLine heat pump shows E240 when its outdoor sensor fails.",
    "Ferns prefer shade and damp soil.",
    "Adults take 10 mg of Veltrazine once daily.",
]
LIBRARIES = {
    "llamaindex-tei": ["llama-index-postprocessor-tei-rerank>=0.4,<1"],
    "langchain-infinity": ["langchain-community>=0.3,<1", "infinity_client>=0.0.70,<0.1"],
    "langchain-cohere": ["langchain-cohere>=0.4,<1"],
}
# Each prints the documents' indices in the order the library returns them (top 2) as JSON.
SCRIPTS = {
    "llamaindex-tei": """
        from llama_index.core.schema import NodeWithScore, TextNode
        from llama_index.postprocessor.tei_rerank import TextEmbeddingInference
        nodes = [NodeWithScore(node=TextNode(text=d)) for d in DOCUMENTS]
        kept = TextEmbeddingInference(base_url=URL, top_n=2).postprocess_nodes(nodes, query_str=QUERY)
        print(json.dumps([DOCUMENTS.index(n.node.get_content()) for n in kept]))
    """,
    "langchain-infinity": """
        from infinity_client import Client
        from langchain_community.document_compressors.infinity_rerank import InfinityRerank
        ranked = InfinityRerank(client=Client(base_url=URL), model="any", top_n=2).rerank(DOCUMENTS, QUERY)
        print(json.dumps([r["index"] for r in ranked]))
    """,
    "langchain-cohere": """
        from langchain_cohere import CohereRerank
        reranker = CohereRerank(base_url=URL, cohere_api_key="unused", model="any", top_n=2)
        print(json.dumps([r["index"] for r in reranker.rerank(DOCUMENTS, QUERY)]))
    """,
}


@pytest.fixture(scope="module")
def url(retriever, settings):
    with uvicorn_on_loopback(create_app(retriever, settings)) as base:
        yield base


@pytest.fixture(scope="module")
def venvs(tmp_path_factory) -> dict[str, Path]:
    made = {}
    for name, packages in LIBRARIES.items():
        venv = tmp_path_factory.mktemp(name)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *packages]
        subprocess.run(pip, check=True, capture_output=True, timeout=900)
        made[name] = venv
    return made


@pytest.mark.parametrize("library", list(LIBRARIES))
def test_the_library_reranks_through_the_server(library, venvs, url, retriever):
    script = f"import json\nURL, QUERY, DOCUMENTS = {url!r}, {QUERY!r}, {DOCUMENTS!r}\n" + textwrap.dedent(
        SCRIPTS[library]
    )
    out = subprocess.run(
        [str(venvs[library] / "bin" / "python"), "-c", script], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    expected = [r.index for r in retriever.rerank_documents(QUERY, DOCUMENTS)][:2]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == expected
