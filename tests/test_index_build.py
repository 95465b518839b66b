import json
from pathlib import Path

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
    labels, _ = retriever.recall.stage1.index.search(retriever.recall.encoder.embed_queries([query])[0], 10)
    assert relevant in [c.doc_id for c in retriever.recall.stage1.fetch(labels)]


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


def sample_documents(count: int = 12) -> list[dict]:
    from index_build.settings import SAMPLE_CORPUS

    rows = [json.loads(line) for line in SAMPLE_CORPUS.read_text().splitlines()[:count]]
    return [{"id": r["id"], "title": r.get("title", ""), "text": r["text"]} for r in rows]


def write_formats(rows: list[dict], root: Path) -> dict[str, Path]:
    """The same documents as JSONL, CSV, Parquet, and directories of Markdown and HTML files."""
    import csv
    import html

    import pyarrow as pa
    import pyarrow.parquet as pq

    root.mkdir(parents=True, exist_ok=True)
    (root / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with open(root / "c.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, ["id", "title", "text"])
        writer.writeheader()
        writer.writerows(rows)
    pq.write_table(pa.Table.from_pylist(rows), root / "c.parquet")
    for kind in ("md", "html"):
        (root / kind).mkdir()
    for r in rows:
        (root / "md" / f"{r['id']}.md").write_text(f"# {r['title']}\n\n{r['text']}\n")
        page = f"<html><head><title>{html.escape(r['title'])}</title><style>p {{}}</style></head>"
        (root / "html" / f"{r['id']}.html").write_text(f"{page}<body><p>{html.escape(r['text'])}</p></body></html>")
    return {
        "jsonl": root / "c.jsonl",
        "csv": root / "c.csv",
        "parquet": root / "c.parquet",
        "md": root / "md",
        "html": root / "html",
    }


def test_every_corpus_format_indexes_the_same_documents(artifacts, tmp_path):
    from handler.docstore import DOCSTORE_NAME, DocStore
    from index_build.build import build_index
    from index_build.settings import IndexSettings

    rows = sample_documents()
    indexed = {}
    for kind, path in write_formats(rows, tmp_path / "corpora").items():
        docs = {d.id.removesuffix(f".{kind}"): d for d in read_corpus(path)}
        assert {i: (d.title, " ".join(d.text.split())) for i, d in docs.items()} == {
            r["id"]: (r["title"], " ".join(r["text"].split())) for r in rows
        }, kind
        manifest = build_index(IndexSettings(artifacts_dir=artifacts, corpus=path, index_path=tmp_path / kind))
        chunks = DocStore(tmp_path / kind / DOCSTORE_NAME, manifest.count).fetch(list(range(manifest.count)))
        indexed[kind] = sorted((c.doc_id.removesuffix(f".{kind}"), " ".join(c.text.split())) for c in chunks)
    assert all(chunks == indexed["jsonl"] for chunks in indexed.values())


def test_field_names_are_mappable(tmp_path):
    from index_build.corpus import Fields

    path = tmp_path / "c.csv"
    path.write_text("doc,body,heading,lang\nA1,some text,A title,en\n")
    (doc,) = read_corpus(path, Fields(id="doc", text="body", title="heading"))
    assert doc == Document("A1", "some text", "A title", {"lang": "en"})  # other columns: metadata
    with pytest.raises(CorpusError, match="c.csv:2"):
        list(read_corpus(path))  # default names: no `id`/`text` columns
