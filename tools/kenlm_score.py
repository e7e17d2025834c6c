"""KenLM's score of a corpus under an ARPA file, to check Lingo's ARPA output against KenLM
(`pip install kenlm`, its query side):

    python3 tools/kenlm_score.py ptb5.arpa ../shared/data/ptb/ptb.test.txt.gz

prints the total log10 probability (words and </s>, <s> as context) and the perplexity, which
`lingo ngram eval` reports as `logprob` and `perplexity`.
"""
import gzip, kenlm, sys, math
m = kenlm.Model(sys.argv[1])
total = 0.0; n = 0
for line in gzip.open(sys.argv[2], 'rt'):
    words = line.split()
    if not words: continue
    total += m.score(' '.join(words), bos=True, eos=True)
    n += len(words) + 1
print("kenlm order", m.order, "logprob", round(total, 2), "ppl", round(10 ** (-total / n), 4))
