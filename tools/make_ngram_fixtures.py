"""Fixtures for lingo-ngram's reference tests: a small synthetic corpus (Zipf-distributed words,
so every order has n-grams seen once to four times) and the interpolated modified Kneser–Ney
trigram model KenLM's `lmplz` estimates from it.

lmplz is not in the `kenlm` wheel (which only queries); build it from the sdist:

    apt-get install cmake libboost-program-options-dev libboost-system-dev \
        libboost-thread-dev libboost-test-dev zlib1g-dev
    curl -LO https://files.pythonhosted.org/packages/source/k/kenlm/kenlm-0.3.0.tar.gz
    tar xzf kenlm-0.3.0.tar.gz && cd kenlm-0.3.0 && mkdir build && cd build
    cmake .. -DCMAKE_BUILD_TYPE=Release && make -j2 lmplz

    python3 tools/make_ngram_fixtures.py --lmplz kenlm-0.3.0/build/bin/lmplz
"""
import argparse
import pathlib
import random
import subprocess

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/lingo-ngram/tests/fixtures"


def corpus():
    rng = random.Random(7)
    words = [f"w{i}" for i in range(400)]
    weights = [1 / (i + 1) for i in range(400)]
    return "".join(
        " ".join(rng.choices(words, weights)[0] for _ in range(rng.randint(2, 9))) + "\n"
        for _ in range(300)
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lmplz", required=True)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    text = corpus()
    (OUT / "zipf.txt").write_text(text)
    arpa = subprocess.run(
        [args.lmplz, "-o", "3", "-S", "1G", "-T", "/tmp"],
        input=text, capture_output=True, text=True, check=True,
    ).stdout
    (OUT / "zipf.kenlm.3.arpa").write_text(arpa)
    print(f"wrote {OUT}/zipf.txt and zipf.kenlm.3.arpa ({len(arpa)} bytes)")


if __name__ == "__main__":
    main()
