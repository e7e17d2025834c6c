"""Compares two ARPA files entry by entry: the same n-grams, and the largest difference of their
log10 probabilities and backoff weights.

    python3 tools/compare_arpa.py a.arpa b.arpa
"""
import sys


def read(path):
    entries, order = {}, 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("\\") and line.endswith("-grams:"):
                order = int(line[1:].split("-")[0])
                continue
            if not order or not line or line.startswith("\\"):
                continue
            parts = line.split("\t")
            bow = float(parts[2]) if len(parts) > 2 else 0.0
            entries[parts[1]] = (float(parts[0]), bow)
    return entries


def main():
    a, b = read(sys.argv[1]), read(sys.argv[2])
    only_a, only_b = a.keys() - b.keys(), b.keys() - a.keys()
    print(f"{len(a)} and {len(b)} n-grams; only in the first {len(only_a)}, only in the second {len(only_b)}")
    for g in list(only_a)[:5]:
        print("  only in the first:", g, a[g])
    for g in list(only_b)[:5]:
        print("  only in the second:", g, b[g])
    # <s> is never predicted: KenLM writes its probability as 0, SRILM and Lingo as -99.
    worst_p = max(((abs(a[g][0] - b[g][0]), g) for g in a.keys() & b.keys() if g != "<s>"), default=(0, None))
    worst_b = max(((abs(a[g][1] - b[g][1]), g) for g in a.keys() & b.keys()), default=(0, None))
    print(f"largest log10 probability difference {worst_p[0]:.2e} at {worst_p[1]!r}: {a.get(worst_p[1])} vs {b.get(worst_p[1])}")
    print(f"largest log10 backoff difference {worst_b[0]:.2e} at {worst_b[1]!r}: {a.get(worst_b[1])} vs {b.get(worst_b[1])}")


if __name__ == "__main__":
    main()
