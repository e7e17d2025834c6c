#!/usr/bin/env python3
"""WikiText (tokenised, `wiki.*.tokens`) as one sentence per line, a blank line between articles.

WikiText keeps a paragraph per line and a blank line around each heading, so read with Lingo's
`--documents blank-line` a "document" is a section and a "sentence" a whole paragraph, usually
longer than a 128-token example. Next-sentence prediction then almost never finds two sentences
to split, and nearly every pair becomes a random one. This script gives BERT's layout instead:
articles (split at level-1 headings ` = Title = `) as documents, paragraphs cut into sentences
after the tokenised ` . `, ` ? ` and ` ! `; headings are dropped.

    python3 tools/wikitext_sentences.py ../shared/data/wikitext2/wiki.train.tokens.gz out/train.txt.gz
"""

import gzip
import re
import sys

ARTICLE = re.compile(r"^ = [^=].* = $")
HEADING = re.compile(r"^ (= )+.*( =)+ $")
SENTENCE_END = re.compile(r"(?<= [.?!]) (?=\S)")


def main(src: str, dst: str) -> None:
    articles = sentences = 0
    opener = gzip.open if src.endswith(".gz") else open
    with opener(src, "rt", encoding="utf-8") as f, gzip.open(dst, "wt", encoding="utf-8") as out:
        started = False
        for line in f:
            line = line.rstrip("\n")
            if ARTICLE.match(line):
                if started:
                    out.write("\n")
                started, articles = True, articles + 1
                continue
            if not line.strip() or HEADING.match(line):
                continue
            for s in SENTENCE_END.split(line.strip()):
                if s.strip():
                    out.write(s.strip() + "\n")
                    sentences += 1
                    started = True
    print(f"{dst}: {articles} articles, {sentences} sentences")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
