"""Stage deduplicated: exact and MinHash dedup over hash buckets, decontamination.

The MinHash test measures pairwise precision and recall on a corpus with planted
near-duplicates of real documents (tests/data/planted.py): a predicted pair is two documents
in one predicted cluster (the survivor and what it replaced), a true pair two documents
derived from the same base.
"""

import json
import random
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lmbuild.build import graph as plan
from lmbuild.build.config import validate
from lmbuild.data import cleaned as clean, clusters, deduplicated as dedup
from lmbuild.data import minhash as mh
from lmbuild.data.embedded import iter_python_stdlib
from lmbuild.errors import UserError
from lmbuild.store.runner import StageContext

sys.path.insert(0, str(Path(__file__).resolve().parent))
import planted  # noqa: E402
from clean_runs import write_cleaned  # noqa: E402
import vendored  # noqa: E402

SETTINGS = validate({"data": {"dedup": {"memory_limit": "512MB"}}})["data"]["dedup"]


def settings(**kw) -> dict:
    return {**SETTINGS, **kw}


def real_code(n: int) -> list[str]:
    """n stdlib files of >= 500 characters, distinct after normalisation (the stdlib itself
    holds copies, such as empty and twin modules)."""
    texts: dict[str, str] = {}
    for _, text, _ in iter_python_stdlib():
        if len(text) >= 500:
            texts.setdefault(" ".join(text.lower().split()), text)
            if len(texts) == n:
                break
    return list(texts.values())


def run(tmp_path: Path, cleaned: Path, name="dedup", settings=SETTINGS, threads=2):
    out, work = tmp_path / name, tmp_path / f"{name}-work"
    out.mkdir()
    work.mkdir()
    counts = dedup.build(StageContext("deduplicated", "t", settings, {"cleaned": cleaned}, out, work, threads))
    return counts, out


def read(out: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted(out.glob("shard-*.parquet")))


def by_id(table: pa.Table) -> list[dict]:
    return sorted(table.to_pylist(), key=lambda r: r["id"])


# --- exact --------------------------------------------------------------------------------------


def test_exact_duplicates_by_normalised_text(tmp_path):
    stdlib = real_code(30)
    shards = [
        [("b:1", "Hello  World\n"), ("a:9", stdlib[0]), ("c:1", "unique text")],
        [("a:2", "hello world"), ("z:0", " HELLO\tworld "), ("b:7", stdlib[0].replace("\n", "\r\n"))],
        [(f"s:{i:02d}", t) for i, t in enumerate(stdlib[1:])] + [("a:1", "Hello World!")],  # "!" differs
    ]
    counts, out = run(tmp_path, write_cleaned(tmp_path / "cleaned", shards), settings=settings(buckets=3))
    table = read(out)
    ids = table["id"].to_pylist()
    assert ids == ["a:9", "c:1", "a:2"] + [f"s:{i:02d}" for i in range(29)] + ["a:1"]  # input order kept
    assert "a:2" in ids and not {"b:1", "z:0"} & set(ids)  # smallest id of the hello-world group
    assert "a:9" in ids and "b:7" not in ids  # CRLF copy of a real file
    assert counts["documents_in"] == 36 and counts["documents_out"] == 33 and counts["duplicates_removed"] == 3
    assert counts["dropped"] == {"exact_duplicate": 3}
    assert counts["clusters"] == {"count": 2, "documents": 5, "max_size": 3, "sizes": {"2": 1, "3": 1}}
    assert table.schema.names == clean.SCHEMA.names and table.schema.field("lang_score").type == pa.float32()
    survivor = table.filter(pa.compute.equal(table["id"], "a:2")).to_pylist()[0]
    assert survivor["text"] == "hello world" and survivor["lang"] == "en"  # the row is kept whole
    dropped = {r["id"]: (r["reason"], r["detail"]) for r in pq.read_table(out / "dropped.parquet").to_pylist()}
    assert dropped == {"b:1": ("exact_duplicate", "a:2"), "z:0": ("exact_duplicate", "a:2"), "b:7": ("exact_duplicate", "a:9")}


def test_exact_without_normalisation_drops_byte_identical_text_only(tmp_path):
    stdlib = real_code(2)
    shards = [[("a:1", "hello world"), ("a:2", "Hello  World"), ("a:3", stdlib[0])], [("b:1", "hello world"), ("b:2", stdlib[0]), ("b:3", stdlib[0].upper())]]
    counts, out = run(tmp_path, write_cleaned(tmp_path / "cleaned", shards), settings=settings(exact_normalise=False, buckets=2))
    assert read(out)["id"].to_pylist() == ["a:1", "a:2", "a:3", "b:3"]
    assert counts["dropped"] == {"exact_duplicate": 2}


def test_exact_deterministic_across_threads_shard_order_and_buckets(tmp_path):
    stdlib = real_code(60)
    docs = [(f"x:{i:03d}", t) for i, t in enumerate(stdlib)] + [(f"y:{i:03d}", t.upper()) for i, t in enumerate(stdlib[:20])]
    a = write_cleaned(tmp_path / "a", [docs[::2], docs[1::2]])
    b = write_cleaned(tmp_path / "b", [docs[1::2][::-1], docs[::2][::-1], []])
    ca, outa = run(tmp_path, a, "da", threads=1)
    cb, outb = run(tmp_path, b, "db", threads=2, settings=settings(buckets=4))
    assert ca["duplicates_removed"] == cb["duplicates_removed"] == 20
    assert ca["clusters"] == cb["clusters"]
    assert by_id(read(outa)) == by_id(read(outb))
    assert pq.read_table(outa / "dropped.parquet").equals(pq.read_table(outb / "dropped.parquet"))
    assert all(i.startswith("x:") for i in read(outa)["id"].to_pylist())
    # The same input twice gives byte-identical shards.
    _, outc = run(tmp_path, a, "dc", threads=2)
    assert all((outa / p.name).read_bytes() == p.read_bytes() for p in outc.glob("shard-*.parquet"))


def test_exact_buckets_partition_the_keys(tmp_path):
    """Every document's key lands in exactly one bucket file of the map job that owns its
    shard, in the bucket its hash names, and copies share a bucket."""
    stdlib = real_code(40)
    shards = [[(f"s{k}:{i:03d}", t) for i, t in enumerate(stdlib[k::5])] for k in range(5)]
    shards[4] += [("z:copy", stdlib[0].upper())]  # a copy of s0:000, in another map's slice
    cleaned = write_cleaned(tmp_path / "cleaned", shards)
    s, buckets = settings(buckets=3), 3
    seen = defaultdict(list)
    for part in range(buckets):
        out = tmp_path / f"map-{part}"
        out.mkdir()
        counts = dedup.partition(StageContext("deduplicated", "t", s, {"cleaned": cleaned}, out, tmp_path / "w", 2), part)
        owned = {d for k in range(part, 5, buckets) for d, _ in shards[k]}
        got = set()
        for c in range(buckets):
            for f in (out / "keys" / f"b={c}").glob("*.parquet"):
                t = pq.read_table(f, columns=["id", "h", "n"])  # the folder name is the bucket
                assert all(h % buckets == c for h in t["h"].to_pylist())
                for r in t.to_pylist():
                    seen[r["id"]].append((part, c, r["h"], r["n"]))
                    got.add(r["id"])
        assert got == owned and counts["documents"] == len(owned)
    assert all(len(v) == 1 for v in seen.values()) and len(seen) == 41
    assert seen["z:copy"][0][1:] == seen["s0:000"][0][1:] and seen["z:copy"][0][0] != seen["s0:000"][0][0]
    assert len({v[0][2:] for v in seen.values()}) == 40  # distinct texts, distinct hashes


# --- MinHash --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("planted")
    docs, group, how = planted.planted_corpus(seed=0, bases=planted.real_bases(n_acts=60, n_code=150))
    cleaned = write_cleaned(tmp / "cleaned", [docs[k::3] for k in range(3)])
    return tmp, cleaned, docs, group, how


def clusters_of(out: Path, docs) -> dict:
    labels = {d: d for d, _ in docs}
    for r in pq.read_table(out / "dropped.parquet").to_pylist():
        assert r["reason"] == "near_duplicate"
        labels[r["id"]] = r["detail"]
    return labels


def test_minhash_precision_recall_on_planted_near_duplicates(planted_run):
    tmp, cleaned, docs, group, how = planted_run
    counts, out = run(tmp, cleaned, "mh", settings=settings(method="minhash", buckets=2))
    precision, recall, n_pred, n_true = planted.pair_scores(clusters_of(out, docs), group)
    print(f"minhash planted: {len(docs)} docs, {n_true} true pairs, precision {precision:.3f}, recall {recall:.3f}")
    assert n_true > 150 and {e for h in how.values() for e in h} == set(planted.EDITS)
    assert precision >= 0.95 and recall >= 0.90
    # The manifest's cluster statistics describe the same clusters.
    sizes = defaultdict(int)
    for d, keep in clusters_of(out, docs).items():
        sizes[keep] += 1
    multi = [n for n in sizes.values() if n > 1]
    assert counts["clusters"]["count"] == len(multi) and counts["clusters"]["max_size"] == max(multi)
    assert counts["documents_out"] == len(sizes) and counts["dropped"] == {"near_duplicate": len(docs) - len(sizes)}
    # Survivors are the smallest id of their cluster.
    assert all(keep <= d for d, keep in clusters_of(out, docs).items())


def test_minhash_settings_matter(planted_run):
    """The measurement can fail: one band of 112 rows (threshold ~1.0) misses most pairs."""
    tmp, cleaned, docs, group, _ = planted_run
    _, out = run(tmp, cleaned, "mh-strict", settings=settings(method="minhash", minhash={"ngram": 5, "bands": 1, "rows": 112, "seed": 1}))
    _, recall, _, _ = planted.pair_scores(clusters_of(out, docs), group)
    assert recall < 0.5


def _ref_word_hash(word: bytes) -> int:
    m = (1 << 64) - 1
    h = sum(b * pow(0x100000001B3, k, 1 << 64) for k, b in enumerate(word)) + len(word)
    return int(mh.mix64(np.array([h & m], np.uint64))[0])


def test_minhash_signatures_match_a_plain_python_reference():
    texts = [t[:3000] for t in real_code(3)] + ["Short text.", "", "Über naïve CAFÉ -- 42 1999!"]
    hasher = mh.MinHasher()
    sig = hasher.signatures(pa.array(texts))
    punct = '!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~'
    mask = (1 << 64) - 1
    for t, row in zip(texts, sig):
        norm = t.lower().translate(str.maketrans(punct, " " * len(punct)))
        norm = __import__("re").sub(r"[0-9]+", "0", norm)
        words = [_ref_word_hash(w) for w in norm.encode().split()]  # ASCII whitespace, as the numpy code
        n = hasher.ngram
        grams = [words[i : i + n] for i in range(len(words) - n + 1)] or ([words] if words else [])
        shingles = []
        for g in grams:
            acc = sum(w * int(mh._GRAM_MULT[j]) + j for j, w in enumerate(g)) & mask
            shingles.append(int(mh.mix64(np.array([acc], np.uint64))[0]))
        for k in range(len(hasher.a)):
            a, b = int(hasher.a[k]), int(hasher.b[k])
            want = min(((a * x + b) & mask) >> 32 for x in shingles) if shingles else 2**32 - 1
            assert int(row[k]) == want


def test_word_hashes_at_document_bounds_and_deleted_bytes():
    """Words never cross documents, empty ones included, nor a deleted byte's gap (a plain Python reference)."""
    texts = ["", "a", "1 22 333x4", "ab", "cd", "", "!!", "x.y", "Über 99", "  lead", "trail  ", "12", "34", ""]
    for punctuation, numbers in (("space", True), ("delete", False), ("delete", True)):
        words, docs = mh.word_hashes(pa.array(texts), punctuation=punctuation, numbers=numbers)
        want, want_docs = [], []
        for d, t in enumerate(texts):
            t = t.lower()
            for c in '!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~':
                t = t.replace(c, " " if punctuation == "space" else "")
            if numbers:
                t = __import__("re").sub(r"[0-9]+", "0", t)
            for w in t.encode().split():
                want.append(_ref_word_hash(w))
                want_docs.append(d)
        assert words.tolist() == want and docs.tolist() == want_docs, (punctuation, numbers)


def test_minhash_estimates_jaccard():
    base = real_code(1)[0]
    rng = random.Random(1)
    vocab = base.split()
    for rate in (0.01, 0.05, 0.2):
        other = planted._edit_words(base, rate, rng, vocab)
        a, b = planted.shingles(base), planted.shingles(other)
        exact = len(a & b) / len(a | b)
        sig = mh.MinHasher().signatures(pa.array([base, other]))
        estimate = float(np.mean(sig[0] == sig[1]))
        assert abs(estimate - exact) < 0.12, (rate, exact, estimate)


def test_components_match_breadth_first_search():
    rng = np.random.default_rng(0)
    n = 500
    u, v = rng.integers(0, n, 300), rng.integers(0, n, 300)
    labels = clusters.components(u, v, n)
    adj = defaultdict(set)
    for a, b in zip(u.tolist(), v.tolist()):
        adj[a].add(b)
        adj[b].add(a)
    for start in range(n):
        seen, todo = {start}, [start]
        while todo:
            for nb in adj[todo.pop()] - seen:
                seen.add(nb)
                todo.append(nb)
        assert labels[start] == min(seen)


# --- decontamination ------------------------------------------------------------------------------


def test_decontamination_against_hellaswag_and_wikitext(tmp_path):
    hellaswag = vendored.path("hellaswag_val_60.jsonl")
    item = json.loads(hellaswag.read_text().splitlines()[23])
    ending = item["choices"][item["label"]]
    wikitext = vendored.unpack("wikitext2_valid_head.txt.gz", tmp_path / "wikitext2")
    wiki = wikitext.read_text().split("\n")
    para = next(p for p in wiki if len(p.split()) > 80 and "@" not in p and "<unk>" not in p)
    code = real_code(4)
    words = para.split()
    docs = [
        ("t:clean", code[0]),
        # A HellaSwag context and its ending, in another case and punctuation, inside real text.
        ("t:hella", code[1][:2000] + "\n" + (item["query"] + " " + ending).upper().replace(".", "!") + "\n" + code[1][2000:4000]),
        ("t:wiki", code[2][:1500] + "\n" + " ".join(words[10:30]) + "\n"),  # 20 words of WikiText
        ("t:twelve", code[3][:1500] + "\n" + " ".join(words[40:52]) + "\n"),  # 12 words: below 13
    ]
    s = settings(
        decontaminate={
            "ngram": 13,
            "eval": [
                {"path": str(hellaswag), "fields": ["query", "choices"]},
                {"path": str(wikitext.parent / "*.txt"), "fields": ["text"]},
            ],
        }
    )
    counts, out = run(tmp_path, write_cleaned(tmp_path / "cleaned", [docs]), settings=s)
    assert set(read(out)["id"].to_pylist()) == {"t:clean", "t:twelve"}
    assert counts["dropped"] == {"contaminated": 2}
    assert counts["contaminated_by_eval"] == {str(hellaswag): 1, str(wikitext.parent / "*.txt"): 1}


def test_eval_data_content_enters_the_key(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "eval.jsonl").write_text('{"text": "an evaluation item"}\n')
    cfg = {"data": {"dedup": {"decontaminate": {"eval": [{"path": "eval.jsonl"}]}}}}
    key = plan.Plan(validate(cfg)).artifacts["deduplicated"].key
    assert plan.Plan(validate(cfg)).artifacts["deduplicated"].key == key
    (tmp_path / "eval.jsonl").write_text('{"text": "an evaluation item, edited"}\n')
    assert plan.Plan(validate(cfg)).artifacts["deduplicated"].key != key
    assert plan.Plan(validate({})).artifacts["cleaned"].key == plan.Plan(validate(cfg)).artifacts["cleaned"].key
    with pytest.raises(UserError, match=r"data\.dedup\.decontaminate\.eval\[0\]\.path: no file matches 'nope\*'"):
        plan.Plan(validate({"data": {"dedup": {"decontaminate": {"eval": [{"path": "nope*"}]}}}}))


# --- errors ---------------------------------------------------------------------------------------


def test_bad_settings_and_input(tmp_path):
    cleaned = write_cleaned(tmp_path / "cleaned", [[("a:1", "text")]])
    with pytest.raises(UserError, match=r"^data\.dedup\.memory_limit: 'lots' rejected by DuckDB"):
        run(tmp_path, cleaned, settings=settings(memory_limit="lots"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no shard-\\*\\.parquet files"):
        run(tmp_path, tmp_path / "empty", name="d2")
    with pytest.raises(UserError, match=r"^config: data\.dedup\.method: 'fuzzy' is not one of \['exact', 'minhash'\]"):
        validate({"data": {"dedup": {"method": "fuzzy"}}})
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": \n')
    with pytest.raises(UserError, match=rf"^{bad}:2: not JSON"):
        run(tmp_path, cleaned, name="d3", settings=settings(decontaminate={"ngram": 13, "eval": [{"path": str(bad), "fields": ["text"]}]}))
    bad.write_text('{"query": "no text field"}\n')
    with pytest.raises(UserError, match=rf"^{bad}:1: no field 'text'"):
        run(tmp_path, cleaned, name="d4", settings=settings(decontaminate={"ngram": 13, "eval": [{"path": str(bad), "fields": ["text"]}]}))
    assert not (tmp_path / "d3" / "shard-00000.parquet").exists()
