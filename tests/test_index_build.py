import json

import pytest
from tokenizers import Tokenizer

from handler.docstore import DOCSTORE_NAME, DocStore
from handler.manifest import IndexManifest, ModelManifest, read_manifest
from index_build.corpus import Chunker, CorpusError, Document, read_corpus


@pytest.fixture(scope="module")
def tokenizer(artifacts):
    tok = Tokenizer.from_file(str(artifacts / "models" / "bi" / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return tok


def test_short_passage_is_one_chunk(tokenizer):
    assert Chunker(tokenizer, 256, 32).pieces(Document("a", "A short passage.")) == ["A short passage."]


def test_long_passage_is_cut_into_overlapping_windows_that_fit(tokenizer):
    text = " ".join(f"token{i}" for i in range(400))
    pieces = Chunker(tokenizer, 64, 16).pieces(Document("d", text, title="A title"))
    assert len(pieces) > 3
    for piece in pieces:
        assert len(tokenizer.encode("A title " + piece).ids) <= 64
    assert pieces[0].split()[-1] in pieces[1]  # overlap: the next window repeats the end of this one
    assert pieces[-1].endswith("token399")


def test_index_manifest_binds_the_encoder(artifacts):
    index = read_manifest(artifacts / "index", IndexManifest)
    bi = read_manifest(artifacts / "models" / "bi", ModelManifest)
    assert index.encoder_sha256 == bi.sha256
    assert index.documents == 220 and index.count > index.documents  # the warranty pages are chunked
    store = DocStore(artifacts / "index" / DOCSTORE_NAME, index.count)
    assert store.fetch([0])[0].doc_id == "veltrazine-adult-dose"


@pytest.mark.parametrize(
    "query, relevant",
    [
        ("How much Veltrazine should a 7-year-old child take?", "veltrazine-child-dose"),
        ("what does error E240 mean on the ThermoLine X2", "thermoline-x2-e240"),
        ("is marble pothos poisonous to my cat", "marble-pothos-safety"),
    ],
)
def test_known_query_finds_its_passage_in_stage1_top10(retriever, query, relevant):
    labels, _ = retriever.index.search(retriever.encoder.embed([query])[0], 10)
    assert relevant in [c.doc_id for c in retriever.docs.fetch(labels)]


def test_corpus_errors_name_the_line(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"id": "1", "text": "ok"}) + "\n" + json.dumps({"title": "no id"}) + "\n")
    with pytest.raises(CorpusError, match=r"c.jsonl:2"):
        list(read_corpus(path))
    path.write_text("{not json\n")
    with pytest.raises(CorpusError, match=r"c.jsonl:1"):
        list(read_corpus(path))


def test_beir_ids_and_metadata_are_read(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"_id": 7, "title": "T", "text": "x", "metadata": {"k": 1}}) + "\n")
    assert list(read_corpus(path)) == [Document("7", "x", "T", {"k": 1})]
