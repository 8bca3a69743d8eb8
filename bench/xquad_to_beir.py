"""Turn XQuAD's English file (SQuAD format) into the BEIR layout kb's benches read.

    python bench/xquad_to_beir.py xquad.en.json OUT_DIR

xquad.en.json comes from https://github.com/google-deepmind/xquad (CC BY-SA 4.0). OUT_DIR
gets corpus.jsonl (one record per paragraph, `_id` TITLE#N with N the paragraph's place in
its article in XQuAD; the copy kb was measured on numbers paragraphs by their place in
SQuAD 1.1's dev set instead, which changes ids only), queries.jsonl (`_id` the question id), qrels/test.tsv (each question judges
its own paragraph) and answers.jsonl (the gold answer strings, for answer hit@k).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def convert(squad: dict, out: Path) -> dict[str, int]:
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    counts = {"paragraphs": 0, "questions": 0}
    with open(out / "corpus.jsonl", "w", encoding="utf-8") as corpus, \
         open(out / "queries.jsonl", "w", encoding="utf-8") as queries, \
         open(out / "answers.jsonl", "w", encoding="utf-8") as answers, \
         open(out / "qrels" / "test.tsv", "w", encoding="utf-8") as qrels:
        qrels.write("query-id\tcorpus-id\tscore\n")
        for article in squad["data"]:
            for n, paragraph in enumerate(article["paragraphs"]):
                doc_id = f"{article['title']}#{n}"
                corpus.write(json.dumps({"_id": doc_id, "title": article["title"].replace("_", " "),
                                         "text": paragraph["context"]}, ensure_ascii=False) + "\n")
                counts["paragraphs"] += 1
                for qa in paragraph["qas"]:
                    queries.write(json.dumps({"_id": qa["id"], "text": qa["question"]}, ensure_ascii=False) + "\n")
                    answers.write(json.dumps({"_id": qa["id"], "answers": [a["text"] for a in qa["answers"]]},
                                             ensure_ascii=False) + "\n")
                    qrels.write(f"{qa['id']}\t{doc_id}\t1\n")
                    counts["questions"] += 1
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("squad_json", help="xquad.en.json")
    parser.add_argument("out", help="folder to write the BEIR layout into")
    args = parser.parse_args()
    counts = convert(json.loads(Path(args.squad_json).read_text(encoding="utf-8")), Path(args.out))
    print(f"{counts['paragraphs']} paragraphs, {counts['questions']} questions -> {args.out}")


if __name__ == "__main__":
    main()
